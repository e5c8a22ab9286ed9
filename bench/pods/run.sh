#!/bin/bash
# The pods benchmark: bench/pods/run.sh [BUILD_DIR] (default build).
#
# Starts two legiond on 127.0.0.1 (free ports) with private LEGION_HOMEs
# under bench/out/ and LEGION_CGROUP_PARENT=legion-bench-pods: one as
# configured by default (warm pod sandboxes on), one with LEGION_POD_WARM=0
# (every container's sandbox made at its start: the cold path, as the
# first pod of an image has it). Then bench/pods/bench.py measures:
#   1. pod start: pod create -> container running, and pod create -> exit
#      of /bin/true (restartPolicy Never, phase Succeeded), through the Pod
#      API with a watch, on both legiond; against `runc run -d` and
#      `runc run` on a bundle whose rootfs is the same image's extracted
#      layers. Interleaved run by run; p50/p99 and ratios.
#   2. images: `legion image import` of a ~100 MB image, `legion image pull`
#      of it from a docker-registry on 127.0.0.1 (cold, and with every layer
#      present), against `skopeo copy` to an OCI dir (and `umoci unpack`).
# Raw JSON goes to bench/out/pods/, the Markdown section to bench/out/pods.md
# and bench/pods/RESULTS.md (bench/pods/report.py). Run alone, the script
# also puts the section into bench/RESULTS.md (replacing an older "## Pods");
# bench/run.sh sets PODS_NO_MERGE=1 and appends it itself.
#
# Environment (defaults in brackets):
#   PODS_PARTS [start,image]
#   PODS_N [200]        timed runs of each start measurement
#   PODS_WARMUP [5]     untimed runs first
#   PODS_IMAGE_N [3]    runs of each import / pull measurement
#   PODS_BIG_MB [100]   size of the random layer of the big image
set -euo pipefail

PODS_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$PODS_DIR/../.." && pwd)
BUILD=$(cd "$ROOT" && realpath -m "${1:-build}")
PY=/usr/bin/python3
OUT=$ROOT/bench/out
RES=$OUT/pods
HOME_DIR=$OUT/pods-home
HOME_COLD=$OUT/pods-home-cold
export LEGION_CGROUP_PARENT=legion-bench-pods

die() { echo "bench/pods: $*" >&2; exit 1; }
# shellcheck source=bench/lib/common.sh
. "$ROOT/bench/lib/common.sh"
BENCH_NET_NAME=p BENCH_NET_OCTET=252

[ "$(id -u)" = 0 ] || die "must run as root (legiond makes sandboxes, runc)"
[ -x "$PY" ] || die "$PY is missing"
for t in runc skopeo docker-registry busybox curl; do
        command -v $t >/dev/null || die "$t is not installed (scripts/install-deps.sh)"
done
for h in "$HOME_DIR" "$HOME_COLD"; do
        if pgrep -f -- "--home $h " >/dev/null; then
                die "a legiond with home $h is already running"
        fi
done

ninja -C "$BUILD" legiond legion legion-client legion-init >/dev/null
[ -x "$BUILD/legiond" ] || die "$BUILD/legiond was not built"
rm -rf "$RES" "$HOME_DIR" "$HOME_COLD" "$OUT/pods.md"
mkdir -p "$RES" "$HOME_DIR" "$HOME_COLD"

PORT=$(bench_free_port)
PORT_COLD=$(bench_free_port)
LEGIOND_PID=
COLD_PID=

# shellcheck disable=SC2317 # run by the trap
cleanup() {
        bench_kill_legiond 600
        if [ -n "$COLD_PID" ]; then
                LEGIOND_PID=$COLD_PID
                bench_kill_legiond 600
        fi
        if [ -d "$RES/runc-root" ]; then
                for id in $(runc --root "$RES/runc-root" list -q 2>/dev/null); do
                        runc --root "$RES/runc-root" delete -f "$id" >/dev/null 2>&1 || true
                done
        fi
        bench_net_cleanup
}
trap cleanup EXIT

cut -d' ' -f1-3 /proc/loadavg >"$RES/load-start.txt"
OTHERS=$(pgrep -x legiond | wc -l || true)
date -u '+%Y-%m-%d %H:%M:%S UTC' >"$RES/date.txt"
T0=$(date +%s)
echo "bench/pods: legiond on 127.0.0.1:$PORT, home $HOME_DIR; LEGION_POD_WARM=0 on :$PORT_COLD, home $HOME_COLD"
# The cold one first, through the same helper (it starts $HOME_DIR's).
HOME_SAVE=$HOME_DIR
HOME_DIR=$HOME_COLD
LEGION_POD_WARM=0 bench_start_legiond "$PORT_COLD"
mv "$RES/legiond.log" "$RES/legiond-cold.log"
COLD_PID=$LEGIOND_PID
HOME_DIR=$HOME_SAVE
bench_start_legiond "$PORT"

brc=0
"$PY" "$PODS_DIR/bench.py" --port "$PORT" --home "$HOME_DIR" --out "$RES" --legion "$BUILD/legion" \
        --cold-port "$PORT_COLD" --cold-home "$HOME_COLD" \
        --parts "${PODS_PARTS:-start,image}" --n "${PODS_N:-200}" --warmup "${PODS_WARMUP:-5}" \
        --image-n "${PODS_IMAGE_N:-3}" --big-mb "${PODS_BIG_MB:-100}" || brc=$?

kill -TERM $LEGIOND_PID $COLD_PID
rc=0
wait $LEGIOND_PID || rc=$?
crc=0
wait $COLD_PID || crc=$?
[ "$rc" != 0 ] || rc=$crc
LEGIOND_PID=
COLD_PID=
sleep 0.5
left=$(pgrep -f -- "--home ($HOME_DIR|$HOME_COLD) " | tr '\n' ' ' || true)
left_sb=$(bench_sandbox_pids)
left=$(echo $left $left_sb)
bench_rm_cgroup_parents
bench_net_cleanup
cat >"$RES/meta.json" <<EOF
{"date": "$(cat "$RES/date.txt")", "elapsed_s": $(( $(date +%s) - T0 )),
 "load_start": "$(cat "$RES/load-start.txt")", "load_end": "$(cut -d' ' -f1-3 /proc/loadavg)",
 "other_legiond": $OTHERS, "legiond_exit": $rc, "bench_exit": $brc,
 "leftover_processes": "$left",
 $(bench_meta_machine) "build": "$BUILD",
 $(bench_meta_git)}
EOF
"$PY" "$PODS_DIR/report.py" "$RES" >"$OUT/pods.md"
cp "$OUT/pods.md" "$PODS_DIR/RESULTS.md"
if [ "${PODS_NO_MERGE:-0}" != 1 ] && [ -f "$ROOT/bench/RESULTS.md" ]; then
        # Replace the "## Pods" section of bench/RESULTS.md, or append it.
        "$PY" "$ROOT/bench/lib/section.py" "$ROOT/bench/RESULTS.md" "## Pods" "$OUT/pods.md"
fi
cat "$OUT/pods.md"
echo "bench/pods: done in $(( $(date +%s) - T0 )) s; $OUT/pods.md"
[ -z "$left" ] || die "processes outlived legiond: $left"
[ "$rc" = 0 ] || die "legiond exited with status $rc"
[ "$brc" = 0 ] || die "bench.py failed (status $brc); the report shows what was measured"
