# shellcheck shell=bash
# What the benchmarks that start their own legiond share (bench/pods,
# bench/sessions, bench/functions run.sh). Source it after setting PY, BUILD,
# HOME_DIR, RES and LEGION_CGROUP_PARENT and defining die().

# A free TCP port on 127.0.0.1.
bench_free_port() {
        "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# legiond's sandbox network (issue 11), when this legiond has one, on an nft
# table, link prefix and pod CIDR of the benchmark's own, never legiond's
# defaults (legion, lgv, 10.200.0.0/16) that a legiond or test on the
# machine may use: BENCH_NET_NAME (a letter per benchmark; default x) and
# BENCH_NET_OCTET (the CIDR's second octet; default 250) and the count of
# legiond started so far make them unique. Sets BENCH_NET_ARGS.
# bench_net_cleanup removes what they left (a stopped legiond leaves its
# table and links for the sandboxes that outlive it).
BENCH_NET_N=0
BENCH_NET_MADE=()
bench_net_args() {
        BENCH_NET_ARGS=()
        # (grep on a variable: grep -q on legiond's pipe may end before
        # legiond has written all, SIGPIPE, and pipefail calls that a legiond
        # without a network: it then ran on the default table and CIDR)
        grep -q -- '--net-table' <<<"$("$BUILD/legiond" --help 2>&1 || true)" || return 0
        local i=$BENCH_NET_N id=${BENCH_NET_NAME:-x}
        BENCH_NET_N=$((i + 1))
        BENCH_NET_ARGS=(--net-table "lgbench_$id$i" --net-link-prefix "lgb$id$i"
                --pod-cidr "10.${BENCH_NET_OCTET:-250}.$((i * 16)).0/20")
        BENCH_NET_MADE+=("lgbench_$id$i lgb$id$i")
}
bench_net_cleanup() {
        local m table prefix l
        for m in "${BENCH_NET_MADE[@]}"; do
                read -r table prefix <<<"$m"
                nft delete table inet "$table" 2>/dev/null || true
                for l in $(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep "^${prefix}[0-9]" || true); do
                        ip link del "$l" 2>/dev/null || true
                done
        done
}

# Start legiond on 127.0.0.1:$1 (more legiond options after it) with home
# $HOME_DIR, its output in $RES/legiond.log; sets LEGIOND_PID and returns
# once /healthz answers. No
# HTTPS listener: none of the benchmarks uses it, and its default port would
# keep a second benchmark running at the same time from starting.
bench_start_legiond() {
        bench_net_args
        "$BUILD/legiond" --home "$HOME_DIR" --listen "127.0.0.1:$1" --listen-tls off "${BENCH_NET_ARGS[@]}" \
                "${@:2}" >"$RES/legiond.log" 2>&1 &
        LEGIOND_PID=$!
        local i
        for i in $(seq 200); do
                curl -fsS "http://127.0.0.1:$1/healthz" >/dev/null 2>&1 && break
                kill -0 "$LEGIOND_PID" 2>/dev/null || die "legiond exited: $(cat "$RES/legiond.log")"
                [ "$i" -lt 200 ] || die "legiond did not answer /healthz"
                sleep 0.05
        done
}

# For exit traps: SIGTERM to a legiond still running, SIGKILL after $1
# tenths of a second.
bench_kill_legiond() {
        if [ -n "${LEGIOND_PID:-}" ] && kill -0 "$LEGIOND_PID" 2>/dev/null; then
                kill -TERM "$LEGIOND_PID"
                for _ in $(seq "$1"); do kill -0 "$LEGIOND_PID" 2>/dev/null || break; sleep 0.1; done
                kill -KILL "$LEGIOND_PID" 2>/dev/null || true
        fi
}

# For exit traps: a legiond this benchmark started ($LEGIOND_PID) stops,
# and its workloads with it (they outlive legiond's SIGTERM: --stop-all),
# and the parent cgroups it made go.
bench_stop_legiond() {
        [ -n "${LEGIOND_PID:-}" ] || return 0
        bench_kill_legiond 300
        "$BUILD/legiond" --home "$HOME_DIR" "${BENCH_NET_ARGS[@]}" --stop-all >/dev/null 2>&1 || true
        bench_rm_cgroup_parents
}

# The conditions a run starts in: load average into $RES/load-start.txt,
# the date into $RES/date.txt; sets PSI_START (CPU pressure), OTHERS (other
# legiond running) and T0 (seconds since the epoch).
bench_record_start() {
        cut -d' ' -f1-3 /proc/loadavg >"$RES/load-start.txt"
        PSI_START=$(psi)
        OTHERS=$(pgrep -x legiond | wc -l || true)
        date -u '+%Y-%m-%d %H:%M:%S UTC' >"$RES/date.txt"
        T0=$(date +%s)
}

# The end of a run, politely: SIGTERM to legiond ($LEGIOND_PID), which
# leaves its workloads for the next legiond, then --stop-all for them
# (output to $RES/legiond.log); sets rc to legiond's exit status, or the
# stop's if that failed.
bench_stop_all() {
        kill -TERM "$LEGIOND_PID"
        rc=0
        wait "$LEGIOND_PID" || rc=$?
        LEGIOND_PID=
        "$BUILD/legiond" --home "$HOME_DIR" "${BENCH_NET_ARGS[@]}" --stop-all >>"$RES/legiond.log" 2>&1 || rc=$?
        sleep 0.5
}

# meta.json's members about the run (bench_record_start's conditions and
# the ones at the end, rc, brc, $left, $left_cg, the net args), each line
# ending with a comma: follows the opening brace.
# shellcheck disable=SC2154 # brc, left, left_cg: the caller's
bench_meta_run() {
        cat <<EOF
"date": "$(cat "$RES/date.txt")", "elapsed_s": $(( $(date +%s) - T0 )),
 "load_start": "$(cat "$RES/load-start.txt")", "load_end": "$(cut -d' ' -f1-3 /proc/loadavg)",
 "psi_start": "$PSI_START", "psi_end": "$(psi)", "other_legiond": $OTHERS,
 "legiond_exit": $rc, "bench_exit": $brc, "leftover": "$left", "leftover_cgroups": "$(words "$left_cg")",
 "net_args": "${BENCH_NET_ARGS[*]}",
EOF
}

# The end of a run: $1's report.py makes $OUT/$1.md from $RES, merged into
# bench/RESULTS.md's $SECTION unless $2 is 1, printed; then the run fails
# if anything was left ($left), legiond failed ($rc) or bench.py did ($brc).
bench_report_and_finish() {
        "$PY" "$ROOT/bench/$1/report.py" "$RES" >"$OUT/$1.md"
        if [ "${2:-0}" != 1 ] && [ -f "$ROOT/bench/RESULTS.md" ]; then
                "$PY" "$ROOT/bench/lib/section.py" "$ROOT/bench/RESULTS.md" "$SECTION" "$OUT/$1.md"
        fi
        cat "$OUT/$1.md"
        echo "bench/$1: done in $(( $(date +%s) - T0 )) s; $OUT/$1.md"
        [ -z "$left" ] || die "left after the run: $left"
        [ "$rc" = 0 ] || die "legiond exited with status $rc"
        [ "$brc" = 0 ] || die "bench.py failed (status $brc); the report shows what was measured"
}

# Processes in a cgroup below $LEGION_CGROUP_PARENT (sandbox processes do
# not show legiond's command line), space-separated.
bench_sandbox_pids() {
        grep -l -- "$LEGION_CGROUP_PARENT" /proc/[0-9]*/cgroup 2>/dev/null | cut -d/ -f3 | tr '\n' ' ' || true
}

# The parent cgroups legiond made stay behind, empty; remove them.
bench_rm_cgroup_parents() {
        local c
        for c in /sys/fs/cgroup/*/"$LEGION_CGROUP_PARENT" /sys/fs/cgroup/"$LEGION_CGROUP_PARENT"; do
                if [ -d "$c" ]; then rmdir "$c" 2>/dev/null || true; fi
        done
}

# One line of space-separated words.
words() { tr -s ' \n' '  ' <<<"$*" | sed 's/^ //; s/ $//'; }

# The CPU pressure (some, avg60), or n/a.
psi() { sed -n 's/^some avg10=[0-9.]* avg60=\([0-9.]*\).*/\1%/p' /proc/pressure/cpu 2>/dev/null || echo n/a; }

# meta.json fields on the machine (memory in GiB with $1 decimals, default
# 1) and on the tree ($ROOT's commit, uncommitted changes), for a heredoc.
bench_meta_machine() {
        echo "\"cpus\": $(nproc), \"cpu_model\": \"$(lscpu | sed -n 's/^Model name: *//p' | head -1)\","
        echo " \"kernel\": \"$(uname -r)\", \"mem_gib\": $(awk -v d="${1:-1}" '/MemTotal/ {printf "%.*f", d, $2/1048576}' /proc/meminfo),"
        echo " \"cgroup\": \"$( [ -d /sys/fs/cgroup/memory ] && echo v1 || echo v2)\","
}
bench_meta_git() {
        echo "\"git\": \"$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)\","
        echo " \"git_dirty\": $( [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ] && echo true || echo false)"
}

# The sandbox benchmarks' rootfs in $1 (made afresh): static busybox with
# /bin/true, false, sh and sleep, empty mount points, 0755 (bench/run.sh,
# bench/net/run.sh).
bench_make_rootfs() {
        local r=$1 l
        rm -rf "$r"
        mkdir -p "$r/bin"
        cp "$(command -v busybox)" "$r/bin/busybox"
        for l in true false sh sleep; do ln -s busybox "$r/bin/$l"; done
        # Mount points every runtime uses (runc would otherwise create them in R).
        mkdir -p "$r/proc" "$r/dev" "$r/tmp" "$r/etc" "$r/sys"
        chmod -R u=rwX,go=rX "$r"
        chmod 0755 "$r" "$r"/*
        ! readelf -l "$r/bin/busybox" | grep -q INTERP || die "$r/bin/busybox is not static (install busybox-static)"
}
