#!/bin/bash
# W8 (benchmarks/openbench.c, write-opens + closes of a bound file) under proot, the seccomp
# driver and the ptrace driver of two checkouts, alternated round by round (the first runner
# of each round rotates), each checkout with its own HVFS_STATE_DIR and manager: openbench's
# µs per open, and the 1-minute load average after each run.
#
#   benchmarks/w8_rounds.sh BEFORE_CHECKOUT AFTER_CHECKOUT ROUNDS [OPENS [CPU]] > out.txt
#
# With CPU, proot and every thread of both managers run on that CPU only (taskset; their
# VMs inherit it): the tracers and their tracees never split, which takes the placement's
# 2-3x out of the comparison (a benchmark's choice: the driver never sets a VM's affinity).
#
# Prints "round runner µs load"; runners: proot, seccomp (AFTER's), pt-before, pt-after.
# Not a test: nothing is asserted. On a 2-vCPU guest the figures are bimodal: a tracer and
# its tracee on one CPU, or on two (docs/ptrace.md, "CPU placement"); compare per round.
set -eu
before=$1 after=$2 rounds=$3 opens=${4:-20000} cpu=${5:-}
pin=()
[ -n "$cpu" ] && pin=(taskset -c "$cpu")
work=$(mktemp -d /tmp/w8rounds.XXXXXX)
cc -O2 -o "$work/openbench" "$(dirname "$0")/openbench.c"
echo x > "$work/file"
mkdir -p -m 700 "$work/state-before" "$work/state-after"
run() {
  case $1 in
    proot) "${pin[@]}" proot -b "$work:$work" -w "$work" "$work/openbench" "$work/file" w "$opens" ;;
    seccomp) HVFS_STATE_DIR=$work/state-after "$after/.venv/bin/hvfs" run --driver seccomp -v "$work:$work" -- "$work/openbench" "$work/file" w "$opens" ;;
    pt-before) HVFS_STATE_DIR=$work/state-before "$before/.venv/bin/hvfs" run --driver ptrace -v "$work:$work" -- "$work/openbench" "$work/file" w "$opens" ;;
    pt-after) HVFS_STATE_DIR=$work/state-after "$after/.venv/bin/hvfs" run --driver ptrace -v "$work:$work" -- "$work/openbench" "$work/file" w "$opens" ;;
  esac
}
for b in before after; do  # both managers up (and pinned) before any run is measured
  tree=$before; [ "$b" = after ] && tree=$after
  HVFS_STATE_DIR=$work/state-$b "${pin[@]}" "$tree/.venv/bin/hvfs" run -- true
  if [ -n "$cpu" ]; then
    pid=$(HVFS_STATE_DIR=$work/state-$b "$tree/.venv/bin/hvfs" manager status | head -1 | awk '{print $3}' | tr -d ,)
    taskset -a -p -c "$cpu" "$pid" >/dev/null
    HVFS_STATE_DIR=$work/state-$b "$tree/.venv/bin/hvfs" run -- true  # a spare made on that CPU
  fi
done
runners=(proot seccomp pt-before pt-after)
for r in $(seq "$rounds"); do
  for i in 0 1 2 3; do
    k=${runners[$(( (i + r) % 4 ))]}
    echo "$r $k $(run "$k") $(cut -d' ' -f1 /proc/loadavg)"
  done
done
HVFS_STATE_DIR=$work/state-after "$after/.venv/bin/hvfs" manager stop >/dev/null 2>&1 || true
HVFS_STATE_DIR=$work/state-before "$before/.venv/bin/hvfs" manager stop >/dev/null 2>&1 || true
