#!/bin/bash
# The serverless jobs benchmark (issue 14): bench/jobs/run.sh [BUILD_DIR]
# (default build), or BENCH_PARTS=jobs bench/run.sh.
#
# Starts its own legiond on 127.0.0.1 (a free port, its sandbox network on a
# table, link prefix and /20 of its own: the dask engine needs the node
# network) with a private LEGION_HOME under bench/out/,
# LEGION_CGROUP_PARENT=legion-bench-jobs-PID, `--job-cpu` and
# `--job-memory` large enough for 16 executors and a warm pool; uploads the
# job's files (bench/jobs/workload.py and 8.4 MB of text) as a package; then
# bench/jobs/bench.py measures, in one run:
#   1. a fixed Dask workload (a dask.array reduction of about a second and a
#      dask.bag word count over the uploaded files, results checked) with
#      4 executors, the job's own master: time from submit to the first task
#      started (a task returning time.time()) and to the driver's exit,
#      (a) through legiond with warm pools: `warm-dask` (every role from
#      a pool of pre-imported Dask processes, kind dask-executor) and
#      `warm` (every role from a plain pool), (b) the same workload on
#      dask-scheduler and dask-worker started as plain processes on the host
#      (`plain`), (c) through legiond with the pools empty (`cold`: every
#      sandbox made on demand); interleaved run by run; p50/p99 and ratios;
#   2. executor ready: the role's readyMs in the job status, and until the
#      worker registered with the scheduler (its add-worker event), jobs of
#      4 executors on a master deployed once, the same legiond arms; the
#      plain dask-worker's spawn to registration beside it;
#   3. 16 executors: until all 16 sandboxes started, and until all 16
#      registered;
#   4. from the driver's exit (its finishedAt) to the job's finishedAt (the
#      last role sandbox destroyed), every job of 1-3.
# The pools ("default" plain, "dask" of kind dask-executor, host rootfs)
# are set to what the next run's arm needs and waited for, untimed.
# Raw JSON goes to bench/out/jobs/, the Markdown section to bench/out/jobs.md
# (bench/jobs/report.py). The section "## Serverless jobs (issue 14)" of
# bench/RESULTS.md is replaced by it (or appended) unless JOBS_NO_MERGE=1
# (bench/run.sh sets it when it writes RESULTS.md whole). legiond, its
# sandboxes and the plain processes are stopped at the end, also on
# failure, and the script checks that nothing is left.
#
# Environment (defaults in brackets):
#   JOBS_PARTS [workload,ready,sixteen]
#   JOBS_ARMS [warm-dask,warm,plain,cold]  the workload's arms, interleaved
#   JOBS_READY_ARMS [warm-dask,warm,cold]  the arms of parts 2 and 3
#   JOBS_N [20]          workload runs per arm (after JOBS_WARMUP untimed)
#   JOBS_READY_N [20]    jobs per arm of part 2 (4 executors each)
#   JOBS_SIXTEEN_N [6]   jobs per arm of part 3 (16 executors each)
#   JOBS_WARMUP [1]
#   JOBS_ARRAY_N [12000] the dask.array's side (float64, 6x6 chunks)
#   JOBS_LEGIOND_ARGS [--job-cpu 64 --job-memory 20g]
set -euo pipefail

JOBS_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$JOBS_DIR/../.." && pwd)
BUILD=$(cd "$ROOT" && realpath -m "${1:-build}")
PY=/usr/bin/python3
OUT=$ROOT/bench/out
RES=$OUT/jobs
HOME_DIR=$OUT/jobs-home
SECTION="## Serverless jobs (issue 14)"
export LEGION_CGROUP_PARENT=legion-bench-jobs-$$

die() { echo "bench/jobs: $*" >&2; exit 1; }
# shellcheck source=bench/lib/common.sh
. "$ROOT/bench/lib/common.sh"
BENCH_NET_NAME=j BENCH_NET_OCTET=241

[ "$(id -u)" = 0 ] || die "must run as root (legiond makes sandboxes)"
for t in curl dask-scheduler dask-worker; do
        command -v $t >/dev/null || die "$t is not installed (scripts/install-deps.sh)"
done
[ -x "$PY" ] || die "$PY is missing"
"$PY" -c 'import distributed, dask.array, dask.bag, numpy' 2>/dev/null ||
        die "$PY cannot import distributed, dask.array, dask.bag and numpy (python3-distributed, python3-numpy)"
if pgrep -f -- "--home $HOME_DIR " >/dev/null; then
        die "a legiond with home $HOME_DIR is already running"
fi

ninja -C "$BUILD" legiond legion legion-init >/dev/null
[ -x "$BUILD/legiond" ] || die "$BUILD/legiond was not built"
LEGIOND_HELP=$("$BUILD/legiond" --help 2>&1 || true)
grep -q -- '--net-table' <<<"$LEGIOND_HELP" || die "this legiond has no sandbox network (the dask engine needs it)"
grep -q -- '--job-warm' <<<"$LEGIOND_HELP" || die "this legiond has no jobs (--job-warm)"
rm -rf "$RES" "$HOME_DIR" "$OUT/jobs.md"
mkdir -p "$RES" "$HOME_DIR"

PORT=$(bench_free_port)
LEGIOND_PID=

# shellcheck disable=SC2317 # run by the trap
cleanup() {
        bench_stop_legiond
        bench_net_cleanup
}
trap cleanup EXIT

bench_record_start
JOBS_LEGIOND_ARGS=${JOBS_LEGIOND_ARGS:---job-cpu 64 --job-memory 20g}
echo "bench/jobs: legiond on 127.0.0.1:$PORT, home $HOME_DIR, $JOBS_LEGIOND_ARGS"
# shellcheck disable=SC2086 # a list of options
bench_start_legiond "$PORT" $JOBS_LEGIOND_ARGS

brc=0
"$PY" "$JOBS_DIR/bench.py" --port "$PORT" --home "$HOME_DIR" --out "$RES" \
        --parts "${JOBS_PARTS:-workload,ready,sixteen}" --arms "${JOBS_ARMS:-warm-dask,warm,plain,cold}" \
        --ready-arms "${JOBS_READY_ARMS:-warm-dask,warm,cold}" \
        --n "${JOBS_N:-20}" --ready-n "${JOBS_READY_N:-20}" --sixteen-n "${JOBS_SIXTEEN_N:-6}" \
        --warmup "${JOBS_WARMUP:-1}" --array-n "${JOBS_ARRAY_N:-12000}" || brc=$?

# Stop legiond the polite way, then its workloads (SIGTERM leaves them for
# the next legiond), and check that nothing outlived it: no legiond, no
# sandbox process, no dask process of the plain arm.
bench_stop_all
left=$(pgrep -f -- "--home $HOME_DIR " || true)
left_sb=$(bench_sandbox_pids)
left_plain=$(grep -lza -- "^LEGION_BENCH_JOBS=$RES\$" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 | tr '\n' ' ' || true)
bench_rm_cgroup_parents
bench_net_cleanup
left_cg=$(find /sys/fs/cgroup -maxdepth 2 -name "$LEGION_CGROUP_PARENT" -type d 2>/dev/null || true)
left=$(words "$left $left_sb $left_plain")
cat >"$RES/meta.json" <<EOF
{$(bench_meta_run) "legiond_args": "$JOBS_LEGIOND_ARGS",
 $(bench_meta_machine)
 "dask": "$("$PY" -c 'import distributed; print(distributed.__version__)')",
 "numpy": "$("$PY" -c 'import numpy; print(numpy.__version__)')",
 "python": "$($PY --version | cut -d' ' -f2)", "build": "$BUILD",
 "command": "JOBS_N=${JOBS_N:-20} JOBS_READY_N=${JOBS_READY_N:-20} JOBS_SIXTEEN_N=${JOBS_SIXTEEN_N:-6} bench/jobs/run.sh",
 $(bench_meta_git)}
EOF
bench_report_and_finish jobs "${JOBS_NO_MERGE:-0}"
