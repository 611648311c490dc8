#!/bin/bash
# W8 (benchmarks/openbench.c, 20,000 write-opens + closes of a bound file) for two checkouts,
# alternated round by round (ABBA), each with its own HVFS_STATE_DIR and manager: the wall µs
# per open openbench reports, and the manager's CPU per open (utime+stime of the whole
# process, exited threads included, in ticks of 10 ms; the VM's start is in it for both).
#
#   benchmarks/w8_ab.sh BEFORE_CHECKOUT AFTER_CHECKOUT ROUNDS DRIVER... > out.txt
#
# Each checkout needs its .venv (scripts/setup). Prints "round driver before|after µs cpu_ns".
# W8_OPTIONS: more options of hvfs run for both (W8_OPTIONS=--strict: a strict VM's W8).
# Not a test: nothing is asserted.
set -eu
before=$1 after=$2 rounds=$3; shift 3
work=$(mktemp -d /tmp/w8ab.XXXXXX)
cc -O2 -o "$work/openbench" "$(dirname "$0")/openbench.c"
echo x > "$work/file"
cpu() { echo $(( $(awk '{print $14 + $15}' "/proc/$1/stat") * 10000000 )); }
for r in $(seq "$rounds"); do
  for d in "$@"; do
    if [ $((r % 2)) = 1 ]; then order="before after"; else order="after before"; fi
    for b in $order; do
      if [ "$b" = before ]; then tree=$before; else tree=$after; fi
      export HVFS_STATE_DIR=$work/state-$b
      mkdir -p -m 700 "$HVFS_STATE_DIR"
      "$tree/.venv/bin/hvfs" run -- true  # the manager is up before it is measured
      pid=$("$tree/.venv/bin/hvfs" manager status | head -1 | awk '{print $3}' | tr -d ,)
      c0=$(cpu "$pid")
      v=$("$tree/.venv/bin/hvfs" run --driver "$d" ${W8_OPTIONS:-} -v "$work:$work" -- "$work/openbench" "$work/file" w 20000)
      c1=$(cpu "$pid")
      echo "$r $d $b $v $(( (c1 - c0) / 20400 ))"  # 20,000 opens and 400 of warm-up
    done
  done
done
for b in before after; do
  tree=$before; [ "$b" = after ] && tree=$after
  HVFS_STATE_DIR=$work/state-$b "$tree/.venv/bin/hvfs" manager stop >/dev/null 2>&1 || true
done
