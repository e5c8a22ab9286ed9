#!/bin/bash
# The lazy images benchmark (issue 13): bench/lazy/run.sh [BUILD_DIR]
# (default build), or BENCH_PARTS=lazy bench/run.sh.
#
# Starts its own legiond on 127.0.0.1 (a free port, its sandbox network on a
# table, link prefix and /20 of its own) with a private LEGION_HOME under
# bench/out/ and LEGION_CGROUP_PARENT=legion-bench-lazy-PID; a network
# namespace of its own ($LAZY_NETNS) with a veth to the host (100.64.13.0/30:
# host .1, namespace .2) and Debian's docker-registry in it; then
# bench/lazy/bench.py builds a Python image of at least 100 MB and one of at
# least 500 MB whose start reads little from host files, pushes them,
# converts them to the lazy form with legiond (`legion image convert
# --push`), and times, in one run, the start of a container app of each
# until its HTTP server answers through legiond's router: (A) full pull and
# extract, then start; (B) the image local; (C) lazy, nothing local (C-first
# without a prefetch record, C with the one an earlier run left); (D) lazy
# with the base layers local. Each over the veth as it is and shaped (htb
# rate on both ends, and a one-way delay by bench/lazy/delayproxy in the
# namespace: this kernel has no netem). Bytes the host received from the
# registry before the answer, as % of the image. The same for a function
# package with large unused files (`legion package push`, an app with
# `packageImage`).
#
# Raw JSON goes to bench/out/lazy/, the Markdown section to
# bench/out/lazy.md (bench/lazy/report.py). The section
# "## Lazy images (issue 13)" of bench/RESULTS.md is replaced by it (or
# appended) unless LAZY_NO_MERGE=1 (bench/run.sh sets it when it writes
# RESULTS.md whole). legiond, its workloads and lazy mounts, the registry,
# the namespace and the veth are removed at the end, also on failure, and
# the script checks that nothing is left.
#
# Environment (defaults in brackets):
#   LAZY_N [5]            timed tries per arm, image and link (after LAZY_WARMUP)
#   LAZY_WARMUP [1]       untimed tries first
#   LAZY_ARMS [C-first,C,D,A,B,B-cold]
#   LAZY_IMAGES [py100,py500]
#   LAZY_LINKS [unshaped,shaped]
#   LAZY_RATE [10gbit]    htb rate of the shaped link
#   LAZY_DELAY_US [250]   one-way delay of the shaped link
#   LAZY_BASE_MB [40]     host libraries in the base layer beyond python3's own
#   LAZY_UNUSED_MB [400]  host files in py500's layer that the server never reads
#   LAZY_PACKAGE [on]     also the function package (a packageImage app of a
#                         package with LAZY_UNUSED_MB of files never read):
#                         C-first, C, B-mounted (the lazy package as the try
#                         before left it mounted), A (the same files pushed
#                         --no-lazy: fetched whole and extracted), B (A's tree)
#   LAZY_LEGIOND_ARGS [--lazy-rate 0]  legiond options: by default no
#                         background hydration, so that the bytes before the
#                         answer are the reads' and the prefetch's alone
#                         (--insecure-registry for the bench's registry is
#                         added in any case)
set -euo pipefail

LAZY_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$LAZY_DIR/../.." && pwd)
BUILD=$(cd "$ROOT" && realpath -m "${1:-build}")
PY=/usr/bin/python3
OUT=$ROOT/bench/out
RES=$OUT/lazy
HOME_DIR=$OUT/lazy-home
SECTION="## Lazy images (issue 13)"
export LEGION_CGROUP_PARENT=legion-bench-lazy-$$
NETNS=${LAZY_NETNS:-lgbench-lazy-$$}
NETNS_LINK=lgblazy0

die() { echo "bench/lazy: $*" >&2; exit 1; }
# shellcheck source=bench/lib/common.sh
. "$ROOT/bench/lib/common.sh"
BENCH_NET_NAME=z BENCH_NET_OCTET=243

[ "$(id -u)" = 0 ] || die "must run as root (legiond makes sandboxes and mounts, tc, netns)"
for t in cc ip tc curl docker-registry mkfs.erofs; do
        command -v $t >/dev/null || die "$t is not installed (scripts/install-deps.sh)"
done
[ -x "$PY" ] || die "$PY is missing"
if pgrep -f -- "--home $HOME_DIR " >/dev/null; then
        die "a legiond with home $HOME_DIR is already running"
fi
! ip link show "$NETNS_LINK" >/dev/null 2>&1 || die "link $NETNS_LINK exists (another bench/lazy run?)"

ninja -C "$BUILD" legiond legion legion-client legion-init >/dev/null
[ -x "$BUILD/legiond" ] || die "$BUILD/legiond was not built"
grep -q -- '--net-table' <<<"$("$BUILD/legiond" --help 2>&1 || true)" || die "this legiond has no sandbox network (container apps need it)"
# Lazy mounts (EROFS layers, the fetcher's FUSE) left under the home, by an
# interrupted run or a legiond that did not remove them.
umount_home() {
        local m
        for m in $(findmnt -rn -o TARGET | grep "^$HOME_DIR/" | sort -r || true); do
                umount -l "$m" 2>/dev/null || true
        done
}
umount_home
rm -rf "$RES" "$HOME_DIR" "$OUT/lazy.md"
mkdir -p "$RES" "$HOME_DIR"
cc -O2 -Wall -Wextra -o "$RES/delayproxy" "$LAZY_DIR/delayproxy.c"

PORT=$(bench_free_port)
LEGIOND_PID=

# shellcheck disable=SC2317 # run by the trap
cleanup() {
        ip netns pids "$NETNS" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$NETNS" 2>/dev/null || true
        ip link del "$NETNS_LINK" 2>/dev/null || true
        bench_stop_legiond
        umount_home
        bench_net_cleanup
}
trap cleanup EXIT

bench_record_start
echo "bench/lazy: legiond on 127.0.0.1:$PORT, home $HOME_DIR"
# (grep on a variable: grep -q on legiond's pipe would stop it early, and
# pipefail would call that a failure)
LEGIOND_HELP=$("$BUILD/legiond" --help 2>&1 || true)
if [ -z "${LAZY_LEGIOND_ARGS+set}" ]; then
        LAZY_LEGIOND_ARGS=
        if grep -q -- '--lazy-rate' <<<"$LEGIOND_HELP"; then
                LAZY_LEGIOND_ARGS="--lazy-rate 0"
        fi
fi
# The registry (straight, and behind the delay relay) over plain HTTP, for
# package images.
if grep -q -- '--insecure-registry' <<<"$LEGIOND_HELP"; then
        LAZY_LEGIOND_ARGS="$LAZY_LEGIOND_ARGS --insecure-registry 100.64.13.2:5000 --insecure-registry 100.64.13.2:5001"
fi
# shellcheck disable=SC2086 # LAZY_LEGIOND_ARGS is a list of options
bench_start_legiond "$PORT" ${LAZY_LEGIOND_ARGS:-}

brc=0
"$PY" "$LAZY_DIR/bench.py" --port "$PORT" --home "$HOME_DIR" --out "$RES" --legion "$BUILD/legion" \
        --delayproxy "$RES/delayproxy" --netns "$NETNS" --link "$NETNS_LINK" \
        --n "${LAZY_N:-5}" --warmup "${LAZY_WARMUP:-1}" --arms "${LAZY_ARMS:-C-first,C,D,A,B,B-cold}" \
        --images "${LAZY_IMAGES:-py100,py500}" --links "${LAZY_LINKS:-unshaped,shaped}" \
        --rate "${LAZY_RATE:-10gbit}" --delay-us "${LAZY_DELAY_US:-250}" \
        --base-mb "${LAZY_BASE_MB:-40}" --unused-mb "${LAZY_UNUSED_MB:-400}" --package "${LAZY_PACKAGE:-on}" || brc=$?

# Stop legiond the polite way, then its workloads and the fetcher
# (SIGTERM leaves them for the next legiond), and check that nothing
# outlived it.
bench_stop_all
left=$(pgrep -f -- "--home $HOME_DIR" || true)
left_sb=$(bench_sandbox_pids)
left_ns=$(ip netns list | grep -w "$NETNS" || true)
left_mnt=$(findmnt -rn -o TARGET | grep "^$HOME_DIR/" || true)
umount_home
bench_rm_cgroup_parents
bench_net_cleanup
left_cg=$(find /sys/fs/cgroup -maxdepth 2 -name "$LEGION_CGROUP_PARENT" -type d 2>/dev/null || true)
left=$(words "$left $left_sb $left_ns $left_mnt")
cat >"$RES/meta.json" <<EOM
{$(bench_meta_run) "legiond_args": "${LAZY_LEGIOND_ARGS:-}",
 $(bench_meta_machine)
 "registry": "$(dpkg-query -W -f '${Version}' docker-registry 2>/dev/null || echo '?')",
 "erofs_utils": "$(dpkg-query -W -f '${Version}' erofs-utils 2>/dev/null || echo '?')",
 "python": "$($PY --version | cut -d' ' -f2)", "build": "$BUILD",
 "command": "LAZY_N=${LAZY_N:-5} LAZY_ARMS=${LAZY_ARMS:-C-first,C,D,A,B,B-cold} LAZY_IMAGES=${LAZY_IMAGES:-py100,py500} LAZY_LINKS=${LAZY_LINKS:-unshaped,shaped} LAZY_PACKAGE=${LAZY_PACKAGE:-on} bench/lazy/run.sh",
 $(bench_meta_git)}
EOM
bench_report_and_finish lazy "${LAZY_NO_MERGE:-0}"
