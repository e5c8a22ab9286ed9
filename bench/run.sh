#!/bin/bash
# The benchmarks: `make bench` (or bench/run.sh [BUILD_DIR]). BENCH_PARTS
# picks which run (default all: "sandbox functions sessions pods net apps lazy jobs"):
#   sandbox    this file's own part, below; writes bench/RESULTS.md whole
#   functions, sessions, pods   bench/<part>/run.sh, each with its own legiond
#   net        bench/net/run.sh: the network attach (routed and bridged),
#              sandboxes with a network, throughput through NAT, sandbox
#              to sandbox routed and bridged
#   apps       bench/apps/run.sh: container apps (issue 12): cold start from
#              warm image pools, without one and by runc; router against
#              nginx in front of an instance; rolling replacement of a pool
#   lazy       bench/lazy/run.sh: lazy images (issue 13): time until an
#              image's HTTP server answers after a full pull, local, lazy
#              (with and without a prefetch record, base layers local),
#              over an unshaped and a shaped link to a registry
#   jobs       bench/jobs/run.sh: serverless jobs (issue 14): a fixed Dask
#              workload with 4 executors through legiond (warm pools, on
#              demand) and on plain dask processes on the host; executor
#              ready from a warm pool; 16 executors; workers gone after the
#              driver's exit
# Each part other than sandbox writes bench/out/<part>.md; a run with the
# sandbox part appends those files (also ones left by earlier runs) to
# RESULTS.md. Without the sandbox part RESULTS.md is left alone, except
# that apps, lazy and jobs put their own sections into it.
#
# The sandbox part:
# Latency: the same rootfs and the same command (/bin/true) through
# `legion sandbox run`, `bwrap --unshare-all` and `runc run`, N runs
# sequentially and N in each of 2 parallel workers, in interleaved rounds so
# that drift on the machine hits every configuration alike. Each run is the
# whole command, timed by bench/lgbench (posix_spawn to waitpid).
# Where legion's time goes: ablations and the library's steps (bench/phases)
# in the same rounds and, with perf, CPU and off-CPU profiles
# (bench/profile.py).
# Density: DENSITY_N idle legion placeholders (bench/density), and as many
# idle bwrap sandboxes as the peer; memory added per sandbox.
# bench/report.py turns the JSON in bench/out/results into bench/RESULTS.md.
#
# Environment:
#   BENCH_N           runs per configuration and mode (default 500)
#   BENCH_ROUNDS      interleaved rounds the runs are split into (default 10)
#   BENCH_WARMUP      untimed runs before each timed batch (default 5)
#   DENSITY_N         idle sandboxes for the density test (default 2000, 0 = skip)
#   DENSITY_PEER      1 = also measure bwrap density (default 1)
#   BENCH_SHARED_RUN_DIR  1 = the 2 parallel workers share one LEGION_RUN_DIR.
#                     Default 0: one each, so that neither worker's gc scan
#                     (every `legion sandbox run` does one) walks the other's
#                     sandboxes.
#   BENCH_SETTLE      seconds of quiet between batches, for the kernel's
#                     deferred clean-up (network namespaces, cgroups) of one
#                     configuration not to land on the next (default 0.3)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
BUILD=$(cd "$ROOT" && realpath -m "${1:-build}")
PY=/usr/bin/python3
OUT=$BENCH_DIR/out
RES=$OUT/results
N=${BENCH_N:-500}
ROUNDS=${BENCH_ROUNDS:-10}
WARMUP=${BENCH_WARMUP:-5}
export DENSITY_N=${DENSITY_N:-2000}
DENSITY_PEER=${DENSITY_PEER:-1}
SETTLE=${BENCH_SETTLE:-0.3}
SHARED_RUN_DIR=${BENCH_SHARED_RUN_DIR:-0}

die() { echo "bench: $*" >&2; exit 1; }
# shellcheck source=bench/lib/common.sh
. "$BENCH_DIR/lib/common.sh"

PARTS=${BENCH_PARTS:-sandbox functions sessions pods net apps lazy jobs}
OTHER_PARTS="functions sessions pods net apps lazy jobs"
has_part() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
# The parts with a run.sh of their own. Pods' section is appended here, not
# by bench/pods/run.sh.
run_parts() {
        local part st=0
        export PODS_NO_MERGE=1
        for part in $OTHER_PARTS; do
                has_part "$part" || continue
                if [ -x "$BENCH_DIR/$part/run.sh" ]; then
                        echo "bench: $part"
                        "$BENCH_DIR/$part/run.sh" "$BUILD" || st=1
                fi
        done
        return $st
}
if ! has_part sandbox; then
        run_parts
        exit $?
fi

[ "$(id -u)" = 0 ] || die "must run as root (sandboxes, cgroups, runc)"
for t in runc bwrap busybox; do
        command -v $t >/dev/null || die "$t is not installed (Debian packages runc, bubblewrap, busybox-static)"
done
[ -x "$PY" ] || die "$PY is missing"
(( N >= ROUNDS )) || ROUNDS=$N
PER_ROUND=$(( (N + ROUNDS - 1) / ROUNDS ))

# Only what the benchmark runs (the rest of the tree may be mid-change).
ninja -C "$BUILD" legion legion-init bench/lgbench bench/density bench/phases >/dev/null
LEGION=$BUILD/legion
LGBENCH=$BUILD/bench/lgbench
DENSITY=$BUILD/bench/density
PHASES=$BUILD/bench/phases
for b in "$LEGION" "$LGBENCH" "$DENSITY" "$PHASES" "$BUILD/legion-init"; do
        [ -x "$b" ] || die "$b was not built (is subdir('bench') in meson.build?)"
done

export LEGION_CGROUP_PARENT=legion-bench
export LEGION_RUN_DIR=$OUT/run
export LEGION_UID_DIR=$OUT/uids
RUNC_ROOT=$OUT/runc-root

MOUNTED_TRACEFS=0
# shellcheck disable=SC2317 # run by the trap
cleanup() {
        if [ "$MOUNTED_TRACEFS" = 1 ]; then umount /sys/kernel/tracing 2>/dev/null || true; fi
        for d in "$OUT"/run "$OUT"/run-w*; do
                if [ -d "$d" ]; then LEGION_RUN_DIR=$d "$LEGION" sandbox gc >/dev/null 2>&1 || true; fi
        done
        rmdir /sys/fs/cgroup/memory/"$LEGION_CGROUP_PARENT"-memcg-probe/g* \
                /sys/fs/cgroup/memory/"$LEGION_CGROUP_PARENT"-memcg-probe 2>/dev/null || true
        for c in /sys/fs/cgroup/*/"$LEGION_CGROUP_PARENT" /sys/fs/cgroup/"$LEGION_CGROUP_PARENT"; do
                if [ -d "$c" ]; then rmdir "$c" 2>/dev/null || true; fi
        done
        if [ -d "$RUNC_ROOT" ]; then
                for id in $(runc --root "$RUNC_ROOT" list -q 2>/dev/null); do
                        runc --root "$RUNC_ROOT" delete -f "$id" >/dev/null 2>&1 || true
                done
        fi
}
trap cleanup EXIT

# --- the common rootfs: static busybox, /bin/true and /bin/sh links ------
R=$OUT/rootfs
rm -rf "$RES" "$OUT/runc-bundle" "$OUT/runc-bundle-userns" "$OUT"/run-w*
bench_make_rootfs "$R"
mkdir -p "$RES" "$LEGION_RUN_DIR"

# --- runc bundles: `runc spec`, /bin/true, no terminal, root = R ----------
make_bundle() { # dir userns(0|1)
        mkdir -p "$1"
        (cd "$1" && runc spec)
        "$PY" - "$1/config.json" "$R" "$2" <<'EOF'
import json, sys
path, rootfs, userns = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
c = json.load(open(path))
c["root"] = {"path": rootfs, "readonly": True}
c["process"]["args"] = ["/bin/true"]
c["process"]["terminal"] = False
if userns:
    c["linux"]["namespaces"].append({"type": "user"})
    m = [{"containerID": 0, "hostID": 0x30000000, "size": 65536}]
    c["linux"]["uidMappings"] = m
    c["linux"]["gidMappings"] = m
json.dump(c, open(path, "w"), indent=1)
EOF
}
make_bundle "$OUT/runc-bundle" 0
make_bundle "$OUT/runc-bundle-userns" 1
mkdir -p "$RUNC_ROOT"

# --- configurations: label|command ----------------------------------------
CONFIGS=(
        "legion|$LEGION sandbox run --rootfs $R -- /bin/true"
        "legion-limits|$LEGION sandbox run --rootfs $R --memory 128M --pids 64 -- /bin/true"
        "legion-nonet|$LEGION sandbox run --rootfs $R --net host -- /bin/true"
        "legion-hostroot|$LEGION sandbox run -- /bin/true"
        "bwrap|bwrap --unshare-all --ro-bind $R / --proc /proc --dev /dev /bin/true"
        "bwrap-sharenet|bwrap --unshare-all --share-net --ro-bind $R / --proc /proc --dev /dev /bin/true"
        "runc|runc --root $RUNC_ROOT run --bundle $OUT/runc-bundle %ID%"
        "runc-userns|runc --root $RUNC_ROOT run --bundle $OUT/runc-bundle-userns %ID%"
)
# Where the time goes: the same run without parts, and its parts alone.
ABLATIONS=(
        "spawn-static-true|$R/bin/true"
        "legion-cli-only|$LEGION sandbox --help"
        "legion-noseccomp|$LEGION sandbox run --rootfs $R --no-seccomp -- /bin/true"
        "legion-nonet-noseccomp|$LEGION sandbox run --rootfs $R --net host --no-seccomp -- /bin/true"
)

# The library's steps, timed by bench/phases: label|options.
PHASES_CONFIGS=(
        "legion|--rootfs $R"
        "legion-limits|--rootfs $R --limits"
        "legion-nonet|--rootfs $R --net-host"
        "legion-noseccomp|--rootfs $R --no-seccomp"
        "legion-hostroot|"
)

# Every configuration must work before anything is timed.
for c in "${CONFIGS[@]}" "${ABLATIONS[@]}"; do
        label=${c%%|*}
        cmd=${c#*|}
        # shellcheck disable=SC2086
        out=$(${cmd//%ID%/check-$label} 2>&1 >/dev/null) || die "$label does not run: ${cmd}: $out"
done

run_batch() { # label mode(seq|par) round cmd...
        local label=$1 mode=$2 round=$3
        shift 3
        local p=1 env=()
        if [ "$mode" = par ]; then
                p=2
                [ "$SHARED_RUN_DIR" = 1 ] || env=(-e "LEGION_RUN_DIR=$OUT/run-w%W%")
        fi
        sleep "$SETTLE"
        "$LGBENCH" -n "$PER_ROUND" -p $p -w "$WARMUP" -l "$label" "${env[@]}" -- "$@" \
                >"$RES/lat-$label-$mode-r$round.json" ||
                die "$label ($mode, round $round) failed"
}

# What one new memory cgroup costs in kmalloc-1k (active objects) right now.
# The kernel sizes every memory cgroup's shrinker map by the highest shrinker
# id ever handed out (one per superblock, and each sandbox mounts several),
# and that high-water mark only drops at reboot: this shows where it stands.
memcg_probe() { # name
        local d=/sys/fs/cgroup/memory/$LEGION_CGROUP_PARENT-memcg-probe k=200
        mkdir "$d"
        local b a
        b=$(awk '$1=="kmalloc-1k" {print $2*$4}' /proc/slabinfo)
        for i in $(seq $k); do mkdir "$d/g$i"; done
        a=$(awk '$1=="kmalloc-1k" {print $2*$4}' /proc/slabinfo)
        for i in $(seq $k); do rmdir "$d/g$i"; done
        rmdir "$d"
        echo "{\"when\": \"$1\", \"groups\": $k, \"kmalloc_1k_bytes_per_group\": $(( (a - b) / k ))}" \
                >"$RES/memcg-probe-$1.json"
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
memcg_probe before
T0=$(date +%s)
echo "bench: latency, $N runs per configuration sequentially and $N in each of 2 workers, $ROUNDS rounds"
for round in $(seq 1 "$ROUNDS"); do
        for mode in seq par; do
                for c in "${CONFIGS[@]}"; do
                        # shellcheck disable=SC2086
                        run_batch "${c%%|*}" $mode "$round" ${c#*|}
                done
        done
        for c in "${ABLATIONS[@]}"; do
                # shellcheck disable=SC2086
                run_batch "${c%%|*}" seq "$round" ${c#*|}
        done
        # The same run through the library, step by step (bench/phases).
        for c in "${PHASES_CONFIGS[@]}"; do
                sleep "$SETTLE"
                # shellcheck disable=SC2086
                LEGION_INIT=$BUILD/legion-init "$PHASES" -n "$PER_ROUND" -w "$WARMUP" -l "${c%%|*}" ${c#*|} \
                        -- /bin/true >"$RES/phases-${c%%|*}-r$round.json" || die "phases ${c%%|*} failed"
        done
        echo "bench:   round $round/$ROUNDS done ($(( $(date +%s) - T0 )) s)"
done

# --- profile: where a legion run spends CPU and where it waits -------------
# Optional: needs a working perf. Off-CPU stacks come from the sched_switch
# tracepoint, which needs tracefs; mounted here (and unmounted at exit) if
# the machine has it unmounted.
PROF_N=$(( N < 300 ? N : 300 ))
profile() { # label command...
        local label=$1
        shift
        perf record -q -e cpu-clock -F 4999 -a -g -o "$OUT/perf/cpu.data" -- \
                "$LGBENCH" -q -n "$PROF_N" -w "$WARMUP" -l "$label-under-perf" -- "$@" \
                >"$RES/profile-$label-lat-cpu.json" 2>/dev/null || die "perf record (cpu, $label) failed"
        perf script -i "$OUT/perf/cpu.data" -F comm,tid,time,ip,sym >"$OUT/perf/cpu.txt" 2>/dev/null
        # The warm-up runs are in the recording too.
        "$PY" "$BENCH_DIR/profile.py" cpu "$OUT/perf/cpu.txt" $(( PROF_N + WARMUP )) 4999 \
                >"$RES/profile-$label-cpu.json"
        if [ -d /sys/kernel/tracing/events/sched ] || [ -d /sys/kernel/debug/tracing/events/sched ]; then
                perf record -q -e sched:sched_switch -a -g -o "$OUT/perf/sched.data" -- \
                        "$LGBENCH" -q -n "$PROF_N" -w "$WARMUP" -l "$label-under-perf" -- "$@" \
                        >"$RES/profile-$label-lat-sched.json" 2>/dev/null || die "perf record (sched, $label) failed"
                perf script -i "$OUT/perf/sched.data" -F comm,tid,time,event,trace,ip,sym \
                        >"$OUT/perf/sched.txt" 2>/dev/null
                "$PY" "$BENCH_DIR/profile.py" offcpu "$OUT/perf/sched.txt" $(( PROF_N + WARMUP )) \
                        >"$RES/profile-$label-offcpu.json"
        fi
        rm -f "$OUT"/perf/*.data
}
if command -v perf >/dev/null && perf record -q -o /dev/null -e cpu-clock -- true >/dev/null 2>&1; then
        mkdir -p "$OUT/perf"
        if ! [ -d /sys/kernel/tracing/events ] && ! [ -d /sys/kernel/debug/tracing/events ]; then
                mount -t tracefs nodev /sys/kernel/tracing && MOUNTED_TRACEFS=1
        fi
        for c in "${CONFIGS[@]:0:2}"; do
                echo "bench: profile, $PROF_N runs of ${c%%|*} under perf"
                # shellcheck disable=SC2086
                profile "${c%%|*}" ${c#*|}
        done
else
        echo "bench: no working perf, skipping the profile"
fi

# --- density ----------------------------------------------------------------
status=0
if (( DENSITY_N > 0 )); then
        echo "bench: density, $DENSITY_N idle legion sandboxes"
        "$DENSITY" -n "$DENSITY_N" legion "$R" >"$RES/density-legion.json" || {
                status=1
                echo "bench: density (legion) reported a failure, see $RES/density-legion.json" >&2
        }
        memcg_probe after-density
        echo "bench: density, $DENSITY_N idle legion sandboxes without a network namespace"
        "$DENSITY" -n "$DENSITY_N" -H legion "$R" >"$RES/density-legion-nonet.json" || {
                status=1
                echo "bench: density (legion, --net host) reported a failure, see $RES/density-legion-nonet.json" >&2
        }
        if [ "$DENSITY_PEER" = 1 ]; then
                echo "bench: density, $DENSITY_N idle bwrap sandboxes"
                "$DENSITY" -n "$DENSITY_N" -c sleep cmd -- bwrap --unshare-all --die-with-parent \
                        --ro-bind "$R" / --proc /proc --dev /dev /bin/sleep infinity \
                        >"$RES/density-bwrap.json" || {
                        status=1
                        echo "bench: density (bwrap) reported a failure, see $RES/density-bwrap.json" >&2
                }
        fi
fi
echo "bench: done in $(( $(date +%s) - T0 )) s"

# What the report needs besides the measurements, so that it can be made
# again from bench/out/results alone (bench/report.py --results ... --out ...).
cat >"$RES/meta.json" <<EOF
{"n": $N, "rounds": $ROUNDS, "warmup": $WARMUP, "elapsed_s": $(( $(date +%s) - T0 )),
 "date": "$(date -u '+%Y-%m-%d %H:%M:%S UTC')", "load_start": "$LOAD_START",
 "load_end": "$(cut -d' ' -f1-3 /proc/loadavg)", "shared_run_dir": "$SHARED_RUN_DIR",
 "build": "$BUILD", "rootfs": "$R",
 "git": "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)",
 "git_dirty": $( [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ] && echo true || echo false)}
EOF
"$PY" "$BENCH_DIR/report.py" --results "$RES" --out "$BENCH_DIR/RESULTS.md"

# Functions (issue 3), sessions (issue 4), pods (issue 5), the network
# (issue 11), container apps (issue 12), lazy images (issue 13) and
# serverless jobs (issue 14) write their own sections.
export APPS_NO_MERGE=1 LAZY_NO_MERGE=1 JOBS_NO_MERGE=1
run_parts || status=1
for part in $OTHER_PARTS; do
        if [ -f "$ROOT/bench/out/$part.md" ]; then
                printf '\n' >>"$BENCH_DIR/RESULTS.md"
                cat "$ROOT/bench/out/$part.md" >>"$BENCH_DIR/RESULTS.md"
        fi
done
exit $status
