#!/bin/bash
# The sessions benchmark: bench/sessions/run.sh [BUILD_DIR] (default build).
#
# Starts its own legiond on 127.0.0.1 (a free port) with a private
# LEGION_HOME under bench/out/ and LEGION_CGROUP_PARENT=legion-bench-sess,
# empties its function pool groups (so that every sandbox is a session's),
# then bench/sessions/bench.py measures:
#   1. first execution: the time from the first execution request for a new
#      identifier (`print(1)`) to its answer, with a ready pool and with
#      every session's sandbox made on demand (`ready: 0`);
#   2. executions per second: one warm session (through legiond, and
#      straight to the worker's socket), then 50 sessions at once
#      (bench/sessions/sessload, a small C client);
#   3. density: a pool's `ready` raised in steps to 1,000; memory per idle
#      ready session (MemAvailable, Slab, the sandboxes' memory cgroups),
#      then shrunk to 0 and checked that the memory comes back.
# Raw JSON goes to bench/out/sessions/, the Markdown section to
# bench/out/sessions.md (bench/sessions/report.py). legiond is stopped with
# SIGTERM at the end and the script checks that nothing of it is left.
#
# Environment (defaults in brackets):
#   SESS_PARTS [first,tput,density]
#   SESS_READY [4]              the pool's `ready` in parts 1 and 2
#   SESS_FIRST_N [200]          timed first executions with the pool at rest
#   SESS_EGRESS [auto]          first: also a pool with egress on, alternating
#                               with the default (off); auto = when legiond's
#                               network is on (issue 11), off = not
#   SESS_B2B_N [100]            ... back to back (waiting only for ready >= 1)
#   SESS_COLD_N [100]           ... without a ready pool
#   SESS_DURATION [5]           seconds per throughput run (+ SESS_WARMUP [1] untimed)
#   SESS_CONNS [50]             sessions (one connection each) of the loaded run
#   SESS_DENSITY_STEPS [250,500,1000]
set -euo pipefail

SESS_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$SESS_DIR/../.." && pwd)
BUILD=$(cd "$ROOT" && realpath -m "${1:-build}")
PY=/usr/bin/python3
OUT=$ROOT/bench/out
RES=$OUT/sessions
HOME_DIR=$OUT/sessions-home
export LEGION_CGROUP_PARENT=legion-bench-sess

die() { echo "bench/sessions: $*" >&2; exit 1; }
# shellcheck source=bench/lib/common.sh
. "$ROOT/bench/lib/common.sh"
BENCH_NET_NAME=s BENCH_NET_OCTET=251

[ "$(id -u)" = 0 ] || die "must run as root (legiond makes sandboxes)"
command -v cc >/dev/null || die "cc is not installed (Debian package gcc)"
[ -x "$PY" ] || die "$PY is missing"
if pgrep -f -- "--home $HOME_DIR " >/dev/null; then
        die "a legiond with home $HOME_DIR is already running"
fi
if [ -n "$(find /sys/fs/cgroup/memory/$LEGION_CGROUP_PARENT -maxdepth 1 -name 'i-*' 2>/dev/null)" ]; then
        die "sandboxes of an earlier run are still in /sys/fs/cgroup/memory/$LEGION_CGROUP_PARENT"
fi

ninja -C "$BUILD" legiond legion legion-init >/dev/null
[ -x "$BUILD/legiond" ] || die "$BUILD/legiond was not built"
rm -rf "$RES" "$HOME_DIR" "$OUT/sessions.md"
mkdir -p "$RES" "$HOME_DIR"
cc -O2 -Wall -Wextra -o "$RES/sessload" "$SESS_DIR/sessload.c"

PORT=$(bench_free_port)
LEGIOND_PID=

# shellcheck disable=SC2317 # run by the trap
cleanup() {
        bench_kill_legiond 600
        bench_net_cleanup
}
trap cleanup EXIT

# Other legiond processes (tests, other benchmarks) compete for the CPUs.
others() { pgrep -x legiond | wc -l || true; }
cut -d' ' -f1-3 /proc/loadavg >"$RES/load-start.txt"
PSI_START=$(psi)
OTHERS_START=$(others)
RUNTIME_START=$(pgrep -f /opt/legion/runtime/ | wc -l || true)
date -u '+%Y-%m-%d %H:%M:%S UTC' >"$RES/date.txt"
T0=$(date +%s)
echo "bench/sessions: legiond on 127.0.0.1:$PORT, home $HOME_DIR"
bench_start_legiond "$PORT"
# The egress variants (issue 11) where legiond has its network.
EGRESS=${SESS_EGRESS:-auto}
if [ "$EGRESS" = auto ]; then
        EGRESS=off
        [ ${#BENCH_NET_ARGS[@]} = 0 ] || EGRESS=on
fi

brc=0
"$PY" "$SESS_DIR/bench.py" --port "$PORT" --home "$HOME_DIR" --out "$RES" --sessload "$RES/sessload" \
        --legiond-pid $LEGIOND_PID --cgroup-parent "$LEGION_CGROUP_PARENT" \
        --parts "${SESS_PARTS:-first,tput,density}" --ready "${SESS_READY:-4}" \
        --first-n "${SESS_FIRST_N:-200}" --egress "$EGRESS" --b2b-n "${SESS_B2B_N:-100}" --cold-n "${SESS_COLD_N:-100}" \
        --duration "${SESS_DURATION:-5}" --warmup "${SESS_WARMUP:-1}" --conns "${SESS_CONNS:-50}" \
        --density-steps "${SESS_DENSITY_STEPS:-250,500,1000}" || brc=$?
OTHERS_END=$(others)

# Stop legiond the polite way and check that nothing outlived it.
T_STOP=$(date +%s.%N)
kill -TERM $LEGIOND_PID
rc=0
wait $LEGIOND_PID || rc=$?
LEGIOND_PID=
STOP_S=$(awk -v a="$T_STOP" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}')
sleep 0.5
left=$(pgrep -f -- "--home $HOME_DIR " || true)
left_sb=$(bench_sandbox_pids)
RUNTIME_END=$(pgrep -f /opt/legion/runtime/ | wc -l || true)
bench_rm_cgroup_parents
bench_net_cleanup
left_cg=$(find /sys/fs/cgroup -maxdepth 2 -name "$LEGION_CGROUP_PARENT" -type d 2>/dev/null || true)
left=$(words "$left $left_sb")
left_cg=$(words "$left_cg")
cat >"$RES/meta.json" <<EOF
{"date": "$(cat "$RES/date.txt")", "elapsed_s": $(( $(date +%s) - T0 )),
 "load_start": "$(cat "$RES/load-start.txt")", "load_end": "$(cut -d' ' -f1-3 /proc/loadavg)",
 "psi_start": "$PSI_START", "psi_end": "$(psi)",
 "other_legiond_start": $OTHERS_START, "other_legiond_end": $((OTHERS_END > 0 ? OTHERS_END - 1 : 0)),
 "runtime_processes_start": $RUNTIME_START, "runtime_processes_end": $RUNTIME_END,
 "legiond_exit": $rc, "legiond_stop_s": $STOP_S, "bench_exit": $brc,
 "leftover_processes": "$left", "leftover_cgroups": "$left_cg",
 $(bench_meta_machine)
 "pid_max": $(cat /proc/sys/kernel/pid_max), "nofile": "$(ulimit -Sn)/$(ulimit -Hn)",
 "python": "$($PY --version | cut -d' ' -f2)", "build": "$BUILD",
 $(bench_meta_git)}
EOF
"$PY" "$SESS_DIR/report.py" "$RES" >"$OUT/sessions.md"
echo "bench/sessions: done in $(( $(date +%s) - T0 )) s; $OUT/sessions.md"
[ -z "$left" ] || die "processes outlived legiond: $left"
[ "$rc" = 0 ] || die "legiond exited with status $rc"
[ "$brc" = 0 ] || die "bench.py failed (status $brc); the report shows what was measured"
