#!/bin/bash
# Per-call latency and supervisor CPU of one kind of served call, interleaved round by round:
# BEFORE's hvfs, this checkout's hvfs, and the strict floor (benchmarks/floor/floor.c strict:FILTER).
#
#   BEFORE=/tmp/before/.venv/bin/hvfs benchmarks/callbench_ab.sh ROUNDS N KIND... > out.txt
#   python3 benchmarks/callbench_ab.py out.txt
#
# KIND: benchmarks/callbench.c's (fchmod fchown futimens openr openw opendir stat). Each line:
# ROUND BUILD KIND median (min-max) cpu µs: the loop's own median µs per call (5 batches), and
# the supervisor's CPU per call (the manager's, all threads, from /proc/PID/stat; the floor's
# serving process, perf stat --no-inherit). Each build has its own manager and HVFS_STATE_DIR
# (under $WORK). U="-u 1000:1000": the VM's programs as that user (WORK's file is made theirs).
set -eu
rounds=$1; n=$2; shift 2
HERE=$(cd "$(dirname "$0")/.." && pwd)
AFTER=${AFTER:-$HERE/.venv/bin/hvfs}
WORK=${WORK:-$(mktemp -d /tmp/callbench.XXXXXX)}
chmod 755 "$WORK"; mkdir -p "$WORK/work"; echo x > "$WORK/work/f"
gcc -O2 -Wall -o "$WORK/callbench" "$HERE/benchmarks/callbench.c"
gcc -O2 -Wall -o "$WORK/floor" "$HERE/benchmarks/floor/floor.c"
PYTHONPATH=$HERE "$HERE/.venv/bin/python" -c "import sys
from hvfs.intercept.arch import native
from hvfs.intercept.backend import SeccompBackend
sys.stdout.buffer.write(SeccompBackend().filter_program(True, native()))" > "$WORK/strict.bpf"
[ -n "${U:-}" ] && chown -R "${U#-u }" "$WORK/work"
mkdir -p -m 700 "$WORK/st-before" "$WORK/st-after"
mcpu() { awk '{print $14+$15}' "/proc/$(python3 -c "import json;print(json.load(open('$1/manager.json'))['pid'])")/stat"; }
HVFS_STATE_DIR=$WORK/st-before "$BEFORE" run -- true
HVFS_STATE_DIR=$WORK/st-after "$AFTER" run -- true
for r in $(seq "$rounds"); do
  for k in "$@"; do
    for b in before after floor; do
      if [ $b = floor ]; then
        res=$(perf stat -x, --no-inherit -e task-clock "$WORK/floor" "strict:$WORK/strict.bpf" sync nopin "$WORK/callbench" "$k" "$n" "$WORK/work/f" 2>&1)
        out=$(echo "$res" | grep "^$k")
        cpu=$(echo "$res" | grep task-clock | python3 -c "import sys; print(f'{float(sys.stdin.read().split(\",\")[0]) * 1e3 / $n:.2f}')")
      else
        st=$WORK/st-$b; [ $b = before ] && H=$BEFORE || H=$AFTER
        c0=$(mcpu "$st")
        out=$(HVFS_STATE_DIR=$st "$H" run --strict ${U:-} -v "$WORK:$WORK" -- "$WORK/callbench" "$k" "$n" "$WORK/work/f")
        c1=$(mcpu "$st")
        cpu=$(python3 -c "print(f'{($c1 - $c0) * 1e6 / $(getconf CLK_TCK) / $n:.2f}')")
      fi
      echo "$r $b $out cpu $cpu"
    done
  done
done
for b in before after; do HVFS_STATE_DIR=$WORK/st-$b "$AFTER" manager stop >/dev/null 2>&1 || true; done
