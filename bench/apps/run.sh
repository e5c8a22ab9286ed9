#!/bin/bash
# The container apps benchmark (issue 12): bench/apps/run.sh [BUILD_DIR]
# (default build), or BENCH_PARTS=apps bench/run.sh.
#
# Starts its own legiond on 127.0.0.1 (a free port, its sandbox network on a
# table, link prefix and /20 of its own) with a private LEGION_HOME under
# bench/out/ and LEGION_CGROUP_PARENT=legion-bench-apps-PID, builds an image
# from host files (the host's python3, a trimmed standard library with the
# server's modules compiled, bench/apps/server.py: http.server answering
# HTTP/1.1 keep-alive on port 8080) in two versions and imports it; then
# bench/apps/bench.py measures, in one run:
#   1. cold start: one request through the router to a new container app
#      whose instance comes from a warm image pool in placeholder mode
#      `sandbox` (no process yet), from one in mode `process` (the server
#      already started and ready), or with no pool (made on demand); and
#      `runc run -d` of the same image's layers and command in a network
#      namespace made beforehand, until its port answers a GET (tried every
#      0.5 ms, and as legiond's readiness probe: from 1 ms, the pause doubling to 50 ms). Interleaved
#      app by app; p50/p99 and ratios;
#   2. warm path: bench/functions/httpload and wrk through legiond's router,
#      straight to the instance's ip:port (the app status' `addresses`),
#      and through nginx to that ip:port;
#   3. rolling replacement: an image pool group of 20, PUT with the other
#      image version: time until its status says the replacement is done,
#      and the most warm sandboxes missing at once (both placeholder modes);
#      the pool's fill from nothing beside it.
# Raw JSON goes to bench/out/apps/, the Markdown section to bench/out/apps.md
# (bench/apps/report.py). The section "## Container apps (issue 12)" of
# bench/RESULTS.md is replaced by it (or appended) unless APPS_NO_MERGE=1
# (bench/run.sh sets it when it writes RESULTS.md whole). legiond, nginx,
# runc's containers and network namespace are removed at the end, also on
# failure, and the script checks that nothing is left.
#
# Environment (defaults in brackets):
#   APPS_PARTS [cold,proxy,rolling]
#   APPS_COLD_N [100]        cold starts per variant (after 3 untimed)
#   APPS_COLD_VARIANTS [pool-sandbox,pool-process,no-pool,runc,runc-probe]
#   APPS_POOL_READY [4]      `ready` of the two cold-start pools
#   APPS_ROUNDS [3]          interleaved rounds of the warm-path runs
#   APPS_DURATION [2]        seconds per httpload run (+ 0.5 untimed)
#   APPS_WRK_DURATION [3]    seconds per wrk run
#   APPS_CONNS [32]          connections of the loaded warm runs
#   APPS_ROLL_N [20]         warm sandboxes of the rolling pool
#   APPS_ROLL_MODES [sandbox,process]
#   APPS_ROLL_MAX_UNAVAILABLE [1]  (a list: one run per value and mode)
set -euo pipefail

APPS_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$APPS_DIR/../.." && pwd)
BUILD=$(cd "$ROOT" && realpath -m "${1:-build}")
PY=/usr/bin/python3
OUT=$ROOT/bench/out
RES=$OUT/apps
HOME_DIR=$OUT/apps-home
SECTION="## Container apps (issue 12)"
export LEGION_CGROUP_PARENT=legion-bench-apps-$$
# runc's containers join this namespace; its veth's host end is NETNS_LINK.
NETNS=lgbench-apps-$$
NETNS_LINK=lgbcrunc0

die() { echo "bench/apps: $*" >&2; exit 1; }
# shellcheck source=bench/lib/common.sh
. "$ROOT/bench/lib/common.sh"
BENCH_NET_NAME=c BENCH_NET_OCTET=245

[ "$(id -u)" = 0 ] || die "must run as root (legiond makes sandboxes, runc)"
for t in wrk nginx cc runc ip curl; do
        command -v $t >/dev/null || die "$t is not installed (scripts/install-deps.sh)"
done
[ -x "$PY" ] || die "$PY is missing"
if pgrep -f -- "--home $HOME_DIR " >/dev/null; then
        die "a legiond with home $HOME_DIR is already running"
fi
! ip link show "$NETNS_LINK" >/dev/null 2>&1 || die "link $NETNS_LINK exists (another bench/apps run?)"

ninja -C "$BUILD" legiond legion legion-client legion-init >/dev/null
[ -x "$BUILD/legiond" ] || die "$BUILD/legiond was not built"
grep -q -- '--net-table' <<<"$("$BUILD/legiond" --help 2>&1 || true)" || die "this legiond has no sandbox network (container apps need it)"
rm -rf "$RES" "$HOME_DIR" "$OUT/apps.md"
mkdir -p "$RES" "$HOME_DIR"
cc -O2 -Wall -Wextra -o "$RES/httpload" "$ROOT/bench/functions/httpload.c" -lpthread

PORT=$(bench_free_port)
LEGIOND_PID=

# shellcheck disable=SC2317 # run by the trap
cleanup() {
        if [ -f "$RES/nginx.pid.bench" ]; then
                kill -TERM "$(cat "$RES/nginx.pid.bench")" 2>/dev/null || true
                rm -f "$RES/nginx.pid.bench"
        fi
        if [ -d "$RES/runc-root" ]; then
                for id in $(runc --root "$RES/runc-root" list -q 2>/dev/null); do
                        runc --root "$RES/runc-root" delete -f "$id" >/dev/null 2>&1 || true
                done
        fi
        ip netns del "$NETNS" 2>/dev/null || true
        ip link del "$NETNS_LINK" 2>/dev/null || true
        bench_stop_legiond
        bench_net_cleanup
}
trap cleanup EXIT

bench_record_start
echo "bench/apps: legiond on 127.0.0.1:$PORT, home $HOME_DIR"
bench_start_legiond "$PORT"

brc=0
"$PY" "$APPS_DIR/bench.py" --port "$PORT" --home "$HOME_DIR" --out "$RES" --legion "$BUILD/legion" \
        --httpload "$RES/httpload" --legiond-pid "$LEGIOND_PID" --netns "$NETNS" --netns-link "$NETNS_LINK" \
        --parts "${APPS_PARTS:-cold,proxy,rolling}" --cold-n "${APPS_COLD_N:-100}" \
        --cold-variants "${APPS_COLD_VARIANTS:-pool-sandbox,pool-process,no-pool,runc,runc-probe}" \
        --pool-ready "${APPS_POOL_READY:-4}" --rounds "${APPS_ROUNDS:-3}" --duration "${APPS_DURATION:-2}" \
        --wrk-duration "${APPS_WRK_DURATION:-3}" --conns "${APPS_CONNS:-32}" --roll-n "${APPS_ROLL_N:-20}" \
        --roll-modes "${APPS_ROLL_MODES:-sandbox,process}" \
        --roll-max-unavailable "${APPS_ROLL_MAX_UNAVAILABLE:-1}" || brc=$?

# Stop legiond the polite way, then its workloads (SIGTERM leaves them for
# the next legiond), and check that nothing outlived it.
bench_stop_all
left=$(pgrep -f -- "--home $HOME_DIR " || true)
left_sb=$(bench_sandbox_pids)
left_nginx=$(pgrep -f -- "nginx -p $RES/nginx" || true)
left_runc=$(runc --root "$RES/runc-root" list -q 2>/dev/null || true)
left_ns=$(ip netns list | grep -w "$NETNS" || true)
bench_rm_cgroup_parents
bench_net_cleanup
left_cg=$(find /sys/fs/cgroup -maxdepth 2 -name "$LEGION_CGROUP_PARENT" -type d 2>/dev/null || true)
left=$(words "$left $left_sb $left_nginx $left_runc $left_ns")
cat >"$RES/meta.json" <<EOF
{$(bench_meta_run)
 $(bench_meta_machine)
 "wrk": "$(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)", "nginx": "$(nginx -v 2>&1 | cut -d' ' -f3)",
 "runc": "$(runc --version | head -1 | cut -d' ' -f3)", "python": "$($PY --version | cut -d' ' -f2)",
 "build": "$BUILD",
 $(bench_meta_git)}
EOF
bench_report_and_finish apps "${APPS_NO_MERGE:-0}"
