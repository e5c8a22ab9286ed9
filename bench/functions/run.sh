#!/bin/bash
# The functions benchmark: bench/functions/run.sh [BUILD_DIR] (default build).
#
# Starts its own legiond on 127.0.0.1 (a free port) with a private
# LEGION_HOME under bench/out/ and LEGION_CGROUP_PARENT=legion-bench-fn-PID (the
# script's: another run at the same time has its own, and the check for
# leftovers at the end does not see that run's sandboxes), then
# bench/functions/bench.py measures:
#   1. cold start: one request to a new Python hello app, with a placeholder
#      ready and with every instance made on demand (pool group `ready: 0`);
#   2. warm path: wrk and bench/functions/httpload through the router,
#      straight to the instance's Unix socket, and through nginx to the same
#      instance;
#   3. burst: 200 requests at once at an app with no instance;
#   4. scale (only when asked for: FN_PARTS=scale): 0 to FN_SCALE_N instances
#      of one app, FN_SCALE_N requests at once that each hold an instance.
# Raw JSON goes to bench/out/functions/, the Markdown section to
# bench/out/functions.md (bench/functions/report.py). legiond and nginx are
# stopped at the end and the script checks that nothing of them is left.
#
# Environment (defaults in brackets):
#   FN_COLD_N [200]      cold starts per variant
#   FN_POOL_READY [4]    the python3 pool group's `ready` during the run
#   FN_ROUNDS [5]        interleaved rounds of the warm-path runs
#   FN_DURATION [3]      seconds per httpload run (+ FN_WARMUP [0.5] untimed)
#   FN_WRK_DURATION [4]  seconds per wrk run
#   FN_CONNS [32]        connections of the loaded warm runs (wrk -t2 -cN)
#   FN_NGINX_WORKERS [1] nginx worker_processes
#   FN_PARTS [cold,warm,burst]  (and scale)
#   FN_EGRESS [auto]     cold: also apps with egress off, alternating app by
#                        app with the default (on); auto = when legiond's
#                        network is on (issue 11), off = not
#   FN_SCALE_N [500]     instances of the scale part
#   FN_SCALE_HOLD [300]   seconds each of its requests holds an instance
set -euo pipefail

FN_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$FN_DIR/../.." && pwd)
BUILD=$(cd "$ROOT" && realpath -m "${1:-build}")
PY=/usr/bin/python3
OUT=$ROOT/bench/out
RES=$OUT/functions
HOME_DIR=$OUT/functions-home
export LEGION_CGROUP_PARENT=legion-bench-fn-$$

die() { echo "bench/functions: $*" >&2; exit 1; }
# shellcheck source=bench/lib/common.sh
. "$ROOT/bench/lib/common.sh"
BENCH_NET_NAME=f BENCH_NET_OCTET=250

[ "$(id -u)" = 0 ] || die "must run as root (legiond makes sandboxes)"
for t in wrk nginx cc; do
        command -v $t >/dev/null || die "$t is not installed (Debian packages wrk, nginx-light, gcc)"
done
[ -x "$PY" ] || die "$PY is missing"
if pgrep -f -- "--home $HOME_DIR " >/dev/null; then
        die "a legiond with home $HOME_DIR is already running"
fi

ninja -C "$BUILD" legiond legion legion-init >/dev/null
[ -x "$BUILD/legiond" ] || die "$BUILD/legiond was not built"
rm -rf "$RES" "$HOME_DIR" "$OUT/functions.md"
mkdir -p "$RES" "$HOME_DIR"
cc -O2 -Wall -Wextra -o "$RES/httpload" "$FN_DIR/httpload.c" -lpthread

PORT=$(bench_free_port)
LEGIOND_PID=

# shellcheck disable=SC2317 # run by the trap
cleanup() {
        if [ -f "$RES/nginx.pid.bench" ]; then
                kill -TERM "$(cat "$RES/nginx.pid.bench")" 2>/dev/null || true
                rm -f "$RES/nginx.pid.bench"
        fi
        bench_kill_legiond 300
        bench_net_cleanup
}
trap cleanup EXIT

cut -d' ' -f1-3 /proc/loadavg >"$RES/load-start.txt"
PSI_START=$(psi)
date -u '+%Y-%m-%d %H:%M:%S UTC' >"$RES/date.txt"
T0=$(date +%s)
echo "bench/functions: legiond on 127.0.0.1:$PORT, home $HOME_DIR"
bench_start_legiond "$PORT"
# The egress variants (issue 11) where legiond has its network.
EGRESS=${FN_EGRESS:-auto}
if [ "$EGRESS" = auto ]; then
        EGRESS=off
        [ ${#BENCH_NET_ARGS[@]} = 0 ] || EGRESS=on
fi

"$PY" "$FN_DIR/bench.py" --port "$PORT" --home "$HOME_DIR" --out "$RES" --httpload "$RES/httpload" --legiond-pid $LEGIOND_PID \
        --parts "${FN_PARTS:-cold,warm,burst}" --cold-n "${FN_COLD_N:-200}" --egress "$EGRESS" \
        --pool-ready "${FN_POOL_READY:-4}" \
        --rounds "${FN_ROUNDS:-5}" --duration "${FN_DURATION:-3}" --warmup "${FN_WARMUP:-0.5}" \
        --wrk-duration "${FN_WRK_DURATION:-4}" --conns "${FN_CONNS:-32}" --nginx-workers "${FN_NGINX_WORKERS:-1}" \
        --scale-n "${FN_SCALE_N:-500}" --scale-hold "${FN_SCALE_HOLD:-300}"

# Stop legiond the polite way and check that nothing outlived it.
kill -TERM $LEGIOND_PID
rc=0
wait $LEGIOND_PID || rc=$?
LEGIOND_PID=
sleep 0.5
left=$(pgrep -f -- "--home $HOME_DIR " || true)
bench_rm_cgroup_parents
bench_net_cleanup
left_cg=$(find /sys/fs/cgroup -maxdepth 2 -name "$LEGION_CGROUP_PARENT" -type d 2>/dev/null || true)
left_nginx=$(pgrep -f -- "nginx -p $RES/nginx" || true)
left_sb=$(bench_sandbox_pids)
left=$(words "$left $left_sb")
left_nginx=$(words "$left_nginx")
left_cg=$(words "$left_cg")
cat >"$RES/meta.json" <<EOF
{"date": "$(cat "$RES/date.txt")", "elapsed_s": $(( $(date +%s) - T0 )),
 "load_start": "$(cat "$RES/load-start.txt")", "load_end": "$(cut -d' ' -f1-3 /proc/loadavg)",
 "psi_start": "$PSI_START", "psi_end": "$(psi)",
 "legiond_exit": $rc, "leftover_processes": "$(words "$left $left_nginx")",
 "leftover_cgroups": "$left_cg",
 $(bench_meta_machine 0)
 "wrk": "$(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)", "nginx": "$(nginx -v 2>&1 | cut -d' ' -f3)",
 "python": "$($PY --version | cut -d' ' -f2)", "node": "$(node --version 2>/dev/null || echo none)",
 "build": "$BUILD",
 $(bench_meta_git)}
EOF
"$PY" "$FN_DIR/report.py" "$RES" >"$OUT/functions.md"
echo "bench/functions: done in $(( $(date +%s) - T0 )) s; $OUT/functions.md"
[ -z "$left$left_nginx" ] || die "processes outlived legiond or nginx: $left $left_nginx"
[ "$rc" = 0 ] || die "legiond exited with status $rc"
