#!/bin/bash
# The network benchmark (issue 11): bench/net/run.sh [BUILD_DIR] (default
# build), or BENCH_PARTS=net bench/run.sh. Four parts (NET_PARTS):
#   attach   bench/netbench attach: lg_net_reserve + lg_net_attach +
#            lg_net_assign on fresh network namespaces, with 10 and with
#            1,000 attached ones present, against the same attach done by
#            `ip`/`nft` processes (one per step, and batched in three), and
#            batched in three for a bridge instead of routed /32s (the
#            host end a port of `<prefix>br`, which holds the gateway /16;
#            as many bridged namespaces as routed ones in the background);
#            the nft table's rule and element counts at both levels
#   sandbox  create to exit of /bin/true: through the library
#            (bench/phases, as the node agent makes a sandbox) with a network
#            from src/net and with today's loopback-only namespace; the CLI
#            (`legion sandbox run`) and bwrap --unshare-all (its own empty
#            network namespace) as whole commands (bench/lgbench); and
#            `legion sandbox run --net pod` if the CLI has it. Interleaved
#            rounds, as bench/run.sh
#   tput     download through NAT: an nginx in a network namespace made
#            here (198.18.11.2, in the benchmarking range of RFC 2544,
#            a veth to the host), fetched with curl from
#            a network namespace attached by src/net with egress on (so
#            through the forward chain and masquerade) and from the host's
#            own stack, alternating; the upstream's access log says which
#            source address it saw
#   pair     sandbox to sandbox in one namespace (bench/netbench pair), in a
#            network namespace of its own standing for the host: TCP
#            request/response (64 bytes each way) and a one-way stream,
#            between two routed sandboxes (attached by src/net: through
#            the host's routing and the table's forward chain) and two
#            bridged ones (L2 in the bridge), the bridge with
#            bridge-nf-call-iptables off (no br_netfilter) and on;
#            then, the namespace isolating its sandboxes, whether each
#            pair still reaches
# Each part uses its own nft table, link prefix and CIDR (never legiond's
# defaults), and everything it made is removed at the end, also on failure;
# the script checks that nothing is left. Raw JSON in bench/out/net/, the
# Markdown section in bench/out/net.md (bench/net/report.py).
#
# Environment (defaults in brackets):
#   NET_PARTS [attach,sandbox,tput,pair]
#   NET_ATTACH_N [500]    timed attaches per configuration and level
#   NET_LEVELS [10,1000]  attached namespaces present while timing
#   NET_N [300]           create-to-exit runs per configuration
#   NET_ROUNDS [10]       interleaved rounds (both parts)
#   NET_WARMUP [5]        untimed runs before each batch
#   NET_TPUT_MB [1024]     bytes per download, MiB
#   NET_TPUT_ROUNDS [10]  downloads per path
#   NET_PAIR_SECS [2]     seconds of request/response, then of stream, per
#                         configuration and round
#   NET_PAIR_ROUNDS [3]   interleaved rounds (after a short untimed one)
set -euo pipefail

NET_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$NET_DIR/../.." && pwd)
BUILD=$(cd "$ROOT" && realpath -m "${1:-build}")
PY=/usr/bin/python3
OUT=$ROOT/bench/out
RES=$OUT/net
PARTS=${NET_PARTS:-attach,sandbox,tput,pair}
ATTACH_N=${NET_ATTACH_N:-500}
LEVELS=${NET_LEVELS:-10,1000}
N=${NET_N:-300}
ROUNDS=${NET_ROUNDS:-10}
WARMUP=${NET_WARMUP:-5}
TPUT_MB=${NET_TPUT_MB:-1024}
TPUT_ROUNDS=${NET_TPUT_ROUNDS:-10}
PAIR_SECS=${NET_PAIR_SECS:-2}
PAIR_ROUNDS=${NET_PAIR_ROUNDS:-3}
SETTLE=0.3
# Ours alone: table, link prefix, CIDR per part.
A_NET=(lgbench_a lgba 10.247.0.0/16)
S_NET=(lgbench_s lgbs 10.248.0.0/16)
T_NET=(lgbench_t lgbt 10.249.0.0/24)
# In a network namespace of netbench's own: gone with it.
P_NET=(lgbench_p lgbp 10.250.0.0/16)
UP_NS=lgbench-up-$$
UP_LINK=lgbup0
# RFC 2544's benchmarking range: neither the host's networks (this machine's
# own LAN is 192.0.2.0/24) nor the tests' (198.51.100.0/24, 203.0.113.0/24).
# An unreachable route for the /24 keeps the downloads on the machine even
# if the veth's route went away.
UP_NET=198.18.11.0/24
UP_HOST=198.18.11.1
UP_ADDR=198.18.11.2
export LEGION_CGROUP_PARENT=legion-bench-net
export LEGION_RUN_DIR=$RES/run
export LEGION_UID_DIR=$OUT/uids

die() { echo "bench/net: $*" >&2; exit 1; }
# shellcheck source=bench/lib/common.sh
. "$ROOT/bench/lib/common.sh"
part() { case ",$PARTS," in *",$1,"*) return 0 ;; esac; return 1; }

[ "$(id -u)" = 0 ] || die "must run as root (network namespaces, nftables, sandboxes)"
for t in ip nft nsenter curl nginx bwrap busybox; do
        command -v $t >/dev/null || die "$t is not installed (Debian packages iproute2, nftables, util-linux, curl, nginx-light, bubblewrap, busybox-static)"
done
[ -x "$PY" ] || die "$PY is missing"
(( N >= ROUNDS )) || ROUNDS=$N
PER_ROUND=$(( (N + ROUNDS - 1) / ROUNDS ))

ninja -C "$BUILD" legion legion-init bench/lgbench bench/phases bench/netbench >/dev/null
LEGION=$BUILD/legion
LGBENCH=$BUILD/bench/lgbench
PHASES=$BUILD/bench/phases
NETBENCH=$BUILD/bench/netbench
export LEGION_INIT=$BUILD/legion-init

HOLD_PID=
# shellcheck disable=SC2317 # run by the trap
cleanup() {
        if [ -n "$HOLD_PID" ]; then
                exec 7>&- 2>/dev/null || true
                kill "$HOLD_PID" 2>/dev/null || true
                wait "$HOLD_PID" 2>/dev/null || true
        fi
        if [ -f "$RES/nginx/nginx.pid" ]; then
                kill -TERM "$(cat "$RES/nginx/nginx.pid")" 2>/dev/null || true
                sleep 0.2
        fi
        ip netns del "$UP_NS" 2>/dev/null || true
        ip link del "$UP_LINK" 2>/dev/null || true
        ip route del unreachable "$UP_NET" 2>/dev/null || true
        # What a killed netbench or phases left: its table, and links (the
        # veths go with their namespaces, the `<prefix>0` link does not).
        for t in "${A_NET[0]}" "${S_NET[0]}" "${T_NET[0]}"; do
                nft delete table inet "$t" 2>/dev/null || true
        done
        for p in "${A_NET[1]}" "${S_NET[1]}" "${T_NET[1]}"; do
                for l in $(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E "^${p}([0-9]|br$)" || true); do
                        ip link del "$l" 2>/dev/null || true
                done
        done
        if [ -d "$LEGION_RUN_DIR" ]; then "$LEGION" sandbox gc >/dev/null 2>&1 || true; fi
        bench_rm_cgroup_parents
}
trap cleanup EXIT

rm -rf "$RES"
mkdir -p "$RES" "$LEGION_RUN_DIR"
date -u '+%Y-%m-%d %H:%M:%S UTC' >"$RES/date.txt"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
PSI_START=$(psi)
T0=$(date +%s)

# --- 1. attach --------------------------------------------------------------
if part attach; then
        echo "bench/net: attach, $ATTACH_N per configuration with $LEVELS attached namespaces present"
        "$NETBENCH" attach -n "$ATTACH_N" -r "$ROUNDS" -w "$WARMUP" -b "$LEVELS" "${A_NET[@]}" >"$RES/attach.json" ||
                die "netbench attach failed"
fi

# --- 2. sandbox create to exit ----------------------------------------------
if part sandbox; then
        R=$RES/rootfs
        bench_make_rootfs "$R"
        CLI_NET=0
        "$LEGION" sandbox run --help | grep -q -- '--net .*pod' && CLI_NET=1
        # label|kind(lgbench|phases)|command or phases options
        CONFIGS=(
                "legion-net|phases|--rootfs $R --net ${S_NET[0]},${S_NET[1]},${S_NET[2]}"
                "legion-loopback|phases|--rootfs $R"
                "legion-cli|lgbench|$LEGION sandbox run --rootfs $R -- /bin/true"
                "bwrap|lgbench|bwrap --unshare-all --ro-bind $R / --proc /proc --dev /dev /bin/true"
        )
        if [ "$CLI_NET" = 1 ]; then
                CONFIGS+=("legion-cli-net|lgbench|$LEGION sandbox run --rootfs $R --net pod --net-table ${S_NET[0]} --net-link-prefix ${S_NET[1]} --pod-cidr ${S_NET[2]} -- /bin/true")
        fi
        run_config() { # label kind args round
                local label=$1 kind=$2 args=$3 round=$4
                sleep "$SETTLE"
                if [ "$kind" = phases ]; then
                        # shellcheck disable=SC2086
                        "$PHASES" -n "$PER_ROUND" -w "$WARMUP" -l "$label" $args -- /bin/true \
                                >"$RES/sb-$label-r$round.json" || die "$label (round $round) failed"
                else
                        # shellcheck disable=SC2086
                        "$LGBENCH" -n "$PER_ROUND" -w "$WARMUP" -l "$label" -- $args \
                                >"$RES/sb-$label-r$round.json" || die "$label (round $round) failed"
                fi
        }
        # Every configuration must work before anything is timed.
        for c in "${CONFIGS[@]}"; do
                IFS='|' read -r label kind args <<<"$c"
                if [ "$kind" = phases ]; then
                        # shellcheck disable=SC2086
                        out=$("$PHASES" -n 1 -w 0 $args -- /bin/true 2>&1 >/dev/null) ||
                                die "$label does not run: $out"
                else
                        # shellcheck disable=SC2086
                        out=$($args 2>&1 >/dev/null) || die "$label does not run: $args: $out"
                fi
        done
        printf '%s\n' "${CONFIGS[@]}" >"$RES/sb-configs.txt"
        echo "bench/net: sandbox create to exit, $N runs per configuration, $ROUNDS rounds"
        for round in $(seq 1 "$ROUNDS"); do
                for c in "${CONFIGS[@]}"; do
                        IFS='|' read -r label kind args <<<"$c"
                        run_config "$label" "$kind" "$args" "$round"
                done
                echo "bench/net:   round $round/$ROUNDS done ($(( $(date +%s) - T0 )) s)"
        done
fi

# --- 3. throughput through NAT ----------------------------------------------
if part tput; then
        echo "bench/net: throughput, $TPUT_ROUNDS downloads of $TPUT_MB MiB per path"
        # Nothing on the host may be in the upstream's range already.
        taken=$(ip -4 -o addr show | grep -F " ${UP_NET%.*}." || true; ip -4 route show root 198.18.0.0/15)
        [ -z "$taken" ] || die "$UP_NET is in use on this host: $taken"
        ip route add unreachable "$UP_NET"
        ip netns add "$UP_NS"
        ip link add "$UP_LINK" type veth peer name eth0 netns "$UP_NS"
        ip addr add "$UP_HOST/30" dev "$UP_LINK"
        ip link set "$UP_LINK" up
        ip -n "$UP_NS" addr add "$UP_ADDR/30" dev eth0
        ip -n "$UP_NS" link set eth0 up
        ip -n "$UP_NS" link set lo up
        NG=$RES/nginx
        mkdir -p "$NG/tmp" "$NG/www"
        truncate -s "${TPUT_MB}M" "$NG/www/blob" # sparse: read as zeros, no disk
        cat >"$NG/nginx.conf" <<EOF
# written by bench/net/run.sh
worker_processes 1;
user root;
pid $NG/nginx.pid;
error_log $NG/error.log warn;
events { worker_connections 64; }
http {
    log_format src '\$remote_addr \$status \$body_bytes_sent';
    access_log $NG/access.log src;
    client_body_temp_path $NG/tmp/body;
    proxy_temp_path $NG/tmp/proxy;
    fastcgi_temp_path $NG/tmp/fastcgi;
    uwsgi_temp_path $NG/tmp/uwsgi;
    scgi_temp_path $NG/tmp/scgi;
    sendfile on;
    server {
        listen $UP_ADDR:80;
        root $NG/www;
    }
}
EOF
        ip netns exec "$UP_NS" nginx -p "$NG" -c "$NG/nginx.conf" -e "$NG/error.log"
        for _ in $(seq 100); do [ -s "$NG/nginx.pid" ] && break; sleep 0.05; done
        [ -s "$NG/nginx.pid" ] || die "nginx did not start: $(cat "$NG/error.log")"

        # A network namespace with an address from src/net, egress on; it
        # lives until its stdin (a FIFO we hold open) reaches EOF.
        mkfifo "$RES/hold.in"
        "$NETBENCH" hold "${T_NET[@]}" <"$RES/hold.in" >"$RES/hold.out" 2>"$RES/hold.err" &
        HOLD_PID=$!
        exec 7>"$RES/hold.in"
        for _ in $(seq 300); do [ -s "$RES/hold.out" ] && break; sleep 0.1; done
        read -r SB_PID SB_IP <"$RES/hold.out" || die "netbench hold did not start: $(cat "$RES/hold.err")"
        URL=http://$UP_ADDR/blob
        fetch() { # label command...
                local label=$1
                shift
                "$@" curl -sS -o /dev/null --max-time 120 -w '%{http_code} %{size_download} %{time_total}\n' "$URL"
        }
        : >"$RES/tput.txt"
        for round in $(seq 0 "$TPUT_ROUNDS"); do
                for who in host sandbox; do
                        # Round 0: one untimed download each (page cache, TCP).
                        if [ "$who" = host ]; then
                                line=$(fetch host) || die "host download failed"
                        else
                                line=$(fetch sandbox nsenter -t "$SB_PID" -n) || die "sandbox download failed"
                        fi
                        [ "$round" = 0 ] || echo "$who $line" >>"$RES/tput.txt"
                        sleep "$SETTLE"
                done
        done
        exec 7>&-
        wait "$HOLD_PID" || die "netbench hold failed: $(cat "$RES/hold.err")"
        HOLD_PID=
        kill -TERM "$(cat "$NG/nginx.pid")"
        for _ in $(seq 50); do [ -f "$NG/nginx.pid" ] || break; sleep 0.1; done
        cp "$NG/access.log" "$RES/access.log"
        echo "{\"mb\": $TPUT_MB, \"rounds\": $TPUT_ROUNDS, \"upstream\": \"$UP_ADDR\", \"host_addr\": \"$UP_HOST\"," \
                "\"sandbox_ip\": \"$SB_IP\", \"nginx\": \"$(nginx -v 2>&1 | cut -d' ' -f3)\"," \
                "\"curl\": \"$(curl --version | head -1 | cut -d' ' -f1-2)\"}" >"$RES/tput-meta.json"
        ip netns del "$UP_NS"
        ip link del "$UP_LINK" 2>/dev/null || true
        ip route del unreachable "$UP_NET"
fi

# --- 4. sandbox to sandbox: routed or bridged ---------------------------------
if part pair; then
        echo "bench/net: sandbox to sandbox, $PAIR_ROUNDS rounds of ${PAIR_SECS} s per configuration and kind"
        "$NETBENCH" pair -t "$PAIR_SECS" -r "$PAIR_ROUNDS" "${P_NET[@]}" >"$RES/pair.json" ||
                die "netbench pair failed"
fi

# --- nothing left -------------------------------------------------------------
cleanup
trap - EXIT
sleep 0.5
left_tables=$(nft list tables | grep -E "lgbench_[astp]\b" || true)
left_links=$(ip -o link show | awk -F': ' '{print $2}' | grep -E "^(${A_NET[1]}|${S_NET[1]}|${T_NET[1]})([0-9]|br)|^$UP_LINK" || true)
left_ns=$(ip netns list | grep "$UP_NS" || true; ip route | grep "$UP_NET" || true)
cat >"$RES/meta.json" <<EOF
{"date": "$(cat "$RES/date.txt")", "elapsed_s": $(( $(date +%s) - T0 )),
 "load_start": "$LOAD_START", "load_end": "$(cut -d' ' -f1-3 /proc/loadavg)",
 "psi_start": "$PSI_START", "psi_end": "$(psi)",
 "parts": "$PARTS", "attach_n": $ATTACH_N, "levels": "$LEVELS", "n": $N, "rounds": $ROUNDS, "warmup": $WARMUP,
 "nets": {"attach": "${A_NET[*]}", "sandbox": "${S_NET[*]}", "tput": "${T_NET[*]}", "pair": "${P_NET[*]}"},
 "leftover_tables": "$(words "$left_tables")", "leftover_links": "$(words "$left_links")",
 "leftover_netns": "$(words "$left_ns")",
 $(bench_meta_machine 1)
 "iproute2": "$(ip -V | sed 's/.*iproute2-\([^ ,]*\).*/\1/')", "nft": "$(nft -v | cut -d' ' -f2)",
 "bwrap": "$(bwrap --version | cut -d' ' -f2)", "build": "$BUILD",
 $(bench_meta_git)}
EOF
"$PY" "$NET_DIR/report.py" "$RES" >"$OUT/net.md"
echo "bench/net: done in $(( $(date +%s) - T0 )) s; $OUT/net.md"
[ -z "$left_tables$left_links$left_ns" ] || die "left behind: $left_tables $left_links $left_ns"
