#!/bin/bash
# W3 (untar and rm -rf of 3,000 small files, benchmarks/fixtures.py's tarball) under proot and
# the ptrace driver of two checkouts, alternated round by round (the first runner of each
# round rotates), each checkout with its own HVFS_STATE_DIR and manager: wall ms per run, and
# the 1-minute load average after it.
#
#   benchmarks/w3_rounds.sh BEFORE_CHECKOUT AFTER_CHECKOUT ROUNDS > out.txt
#
# Prints "round runner ms load"; runners: proot, pt-before, pt-after. Not a test: nothing is
# asserted; compare per round (the machine's load moves every figure).
set -eu
before=$1 after=$2 rounds=$3
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/w3rounds.XXXXXX)
"$after/.venv/bin/python" -c "
import sys; sys.path.insert(0, '$here')
from pathlib import Path
from benchmarks import fixtures
class Layout: work = Path('$work')
fixtures.make_tarball(Layout)"
mkdir -p -m 700 "$work/state-before" "$work/state-after"
w3="tar -xf $work/w3.tar && rm -rf tree"
run() {
  rm -rf "$work/w3" && mkdir "$work/w3"
  local start end
  start=$(date +%s%N)
  case $1 in
    proot) proot -b "$work:$work" -w "$work/w3" sh -c "$w3" ;;
    pt-before) HVFS_STATE_DIR=$work/state-before "$before/.venv/bin/hvfs" run --driver ptrace -v "$work:$work" -w "$work/w3" -- sh -c "$w3" ;;
    pt-after) HVFS_STATE_DIR=$work/state-after "$after/.venv/bin/hvfs" run --driver ptrace -v "$work:$work" -w "$work/w3" -- sh -c "$w3" ;;
  esac
  end=$(date +%s%N)
  echo $(( (end - start) / 1000000 ))
}
for b in before after; do  # both managers up, a spare made, before any run is measured
  tree=$before; [ "$b" = after ] && tree=$after
  HVFS_STATE_DIR=$work/state-$b "$tree/.venv/bin/hvfs" run --driver ptrace -- true
done
runners=(proot pt-before pt-after)
for r in $(seq "$rounds"); do
  for i in 0 1 2; do
    k=${runners[$(( (i + r) % 3 ))]}
    echo "$r $k $(run "$k") $(cut -d' ' -f1 /proc/loadavg)"
  done
done
HVFS_STATE_DIR=$work/state-after "$after/.venv/bin/hvfs" manager stop >/dev/null 2>&1 || true
HVFS_STATE_DIR=$work/state-before "$before/.venv/bin/hvfs" manager stop >/dev/null 2>&1 || true
rm -rf "$work"
