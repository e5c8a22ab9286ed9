#!/usr/bin/python3
"""bench/net/report.py RESULTS_DIR: the `## Network` section of
bench/RESULTS.md (issue 11), in Markdown on stdout, from what
bench/net/run.sh wrote into RESULTS_DIR (bench/out/net). Every figure printed
is read from those files; a part that was not run says so."""
import glob
import json
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
import harness  # noqa: E402

summary = harness.summary

load, ms = harness.load_json, harness.ms


def ratio(a, b):
    return "n/a" if not a or not b else f"{a / b:.2f}x"


def yes(b):
    return "yes" if b else "**no**"


# ---- 1. attach ------------------------------------------------------------------

ATTACH_WHAT = {
    "lg_net": "src/net in this process: lg_net_reserve + lg_net_attach (netlink) + lg_net_assign (nft set elements)",
    "ip-per-step": "one process per step: 4 `ip` on the host end, 6 `nsenter -t PID -n ip` inside, 1 `nft -f -`",
    "ip-batch": "the same steps in 3 processes: `ip -batch -`, `nsenter -t PID -n ip -batch -`, `nft -f -`",
    "ip-batch-bridge": "a bridge instead, the same 3 processes: the host end enslaved to the bridge `<prefix>br` "
                       "(which holds the gateway as /16), eth0 with ip/16 and the default route via the gateway; "
                       "the same set elements",
}


def attach(d, p, goals):
    a = load(d, "attach.json")
    if not a:
        p("Not run in this run (NET_PARTS).\n")
        return
    p(f"{a['n']} attaches per configuration and level, on fresh network namespaces (a child process that "
      f"unshared its network namespace and waits), in {a['rounds']} interleaved batches whose order alternates; "
      f"{a['warmup']} untimed before the first batch of each; a {a['settle_ms']} ms pause after each batch "
      "(the kernel tears network namespaces down later, off the caller). The background namespaces are "
      "attached and assigned and stay so while the level is measured: at each level that many routed (lg_net) "
      "and as many bridged (ports of the bridge, by ip-batch-bridge) namespaces. The peers take their address from "
      "lg_net_reserve, untimed; their set elements go into the same table. "
      f"Table `{a['table']}`, link prefix `{a['prefix']}`, CIDR {a['cidr']}.\n")
    p("| configuration | what |")
    p("|---|---|")
    for k, v in ATTACH_WHAT.items():
        p(f"| {k} | {v} |")
    p("")
    p("| attached namespaces present | configuration | p50 ms | p90 ms | p99 ms | max ms | "
      "p50 ratio (this / lg_net) | p99 ratio |")
    p("|---:|---|---:|---:|---:|---:|---:|---:|")
    for lv in a["levels"]:
        base = lv["configs"]["lg_net"]["total"]
        for k in ATTACH_WHAT:
            t = lv["configs"][k]["total"]
            p(f"| {lv['background']:,} | {k} | {ms(t['p50_ms'])} | {ms(t['p90_ms'])} | {ms(t['p99_ms'])} | "
              f"{ms(t['max_ms'])} | {ratio(t['p50_ms'], base['p50_ms'])} | {ratio(t['p99_ms'], base['p99_ms'])} |")
    p("")
    if any("bridged_background" in lv for lv in a["levels"]):
        p("Bridged namespaces in the background (ports of the bridge) at each level: " +
          "; ".join(f"at {lv['background']:,}, {lv['bridged_background']:,}" for lv in a["levels"]) +
          f". A Linux bridge takes at most {a['levels'][0]['bridge_max_ports']:,} ports (BR_MAX_PORTS, port 0 "
          "reserved; one more is refused with EXFULL), so at the higher level the bridged background stops short "
          "by the timed batch's ports.\n")
    p("lg_net's steps, p50 (p99) ms; and lg_net_release of the same addresses after each batch (the "
      "namespace still alive; not in the attach's time):\n")
    p("| attached namespaces present | lg_net_reserve | lg_net_attach | lg_net_assign | lg_net_release |")
    p("|---:|---:|---:|---:|---:|")
    for lv in a["levels"]:
        c = lv["configs"]["lg_net"]
        p(f"| {lv['background']:,} | " + " | ".join(f"{ms(c[s]['p50_ms'])} ({ms(c[s]['p99_ms'])})"
                                                   for s in ("reserve", "attach", "assign", "release")) + " |")
    p("")
    e = a["empty"]
    p("The table with the background namespaces attached (after the timed batches were released): rules as "
      "lg_net_stats counts them and as `nft -j list table` lists them, set and map elements, host ends "
      "(`<prefix>*` links: the routed and the bridged namespaces' and the bridge).\n")
    p("| attached namespaces present | rules (lg_net_stats) | rules (`nft -j list table`) | elements | links | "
      "time to attach them all |")
    p("|---:|---:|---:|---:|---:|---:|")
    p(f"| 0 | {e['rules']} | {e['rules_nft']} | {e['elements']} | 0 | |")
    for lv in a["levels"]:
        p(f"| {lv['background']:,} | {lv['rules']} | {lv['rules_nft']} | {lv['elements']:,} | {lv['links']:,} | "
          f"{lv['fill_s']:.1f} s |")
    p("")
    for lv in a["levels"]:
        t = lv["configs"]["lg_net"]["total"]
        goals.append((f"network attach of a fresh sandbox p50 <= 2 ms, {lv['background']:,} attached",
                      f"p50 {ms(t['p50_ms'])} ms, p99 {ms(t['p99_ms'])} ms", t["p50_ms"] <= 2))
    rules = {lv["rules"] for lv in a["levels"]} | {e["rules"]}
    rules_nft = {lv["rules_nft"] for lv in a["levels"]} | {e["rules_nft"]}
    goals.append(("nft rule count does not grow with sandboxes",
                  ", ".join(f"{lv['background']:,}: {lv['rules_nft']} rules, {lv['elements']:,} elements"
                            for lv in a["levels"]) + f" (empty: {e['rules_nft']})",
                  len(rules) == 1 and len(rules_nft) == 1))
    for lv in a["levels"]:
        c = lv["configs"]
        goals.append((f"attach by `ip`/`nft` processes / lg_net, {lv['background']:,} attached (p50)",
                      f"one per step {ratio(c['ip-per-step']['total']['p50_ms'], c['lg_net']['total']['p50_ms'])}, "
                      f"batched {ratio(c['ip-batch']['total']['p50_ms'], c['lg_net']['total']['p50_ms'])}", None))
    for lv in a["levels"]:
        c = lv["configs"]
        if "ip-batch-bridge" in c:
            r_, b_ = c["ip-batch"]["total"], c["ip-batch-bridge"]["total"]
            goals.append((f"attach, bridge / routed /32 (both `ip -batch`), {lv['background']:,} attached",
                          f"p50 {ms(b_['p50_ms'])} / {ms(r_['p50_ms'])} ms = {ratio(b_['p50_ms'], r_['p50_ms'])}, "
                          f"p99 {ms(b_['p99_ms'])} / {ms(r_['p99_ms'])} ms = {ratio(b_['p99_ms'], r_['p99_ms'])}",
                          None))


# ---- 2. sandbox create to exit ---------------------------------------------------

SB_WHAT = {
    "legion-net": "library (bench/phases): lg_sandbox create, start, wait, destroy, with a network from src/net "
                  "as the node agent makes it: reserve (the address and nameserver into the spec: /etc/hosts, "
                  "/etc/resolv.conf), attach in the spec's net_hook, assign after create, release after destroy",
    "legion-loopback": "library (bench/phases): the same without `--net`: today's namespace with only `lo`",
    "legion-cli": "whole command (bench/lgbench): `legion sandbox run --rootfs R -- /bin/true`, loopback only",
    "legion-cli-net": "whole command: `legion sandbox run --net pod`",
    "bwrap": "whole command: `bwrap --unshare-all` (its own network namespace with only `lo`, as "
             "--unshare-net) on the same rootfs",
}


def sandbox(d, p, meta, goals):
    files = sorted(glob.glob(os.path.join(d, "sb-*-r*.json")))
    if not files:
        p("Not run in this run (NET_PARTS).\n")
        return
    lat, phases, cmds = {}, {}, {}
    for line in open(os.path.join(d, "sb-configs.txt")):
        label, kind, args = line.rstrip("\n").split("|", 2)
        cmds[label] = (kind, args)
    for f in files:
        label = re.match(r"sb-(.*)-r\d+\.json$", os.path.basename(f)).group(1)
        j = json.load(open(f))
        if "lat_us" in j:
            lat.setdefault(label, []).extend(v / 1000 for v in j["lat_us"])
        else:
            lat.setdefault(label, []).extend(v / 1000 for v in j["raw_us"]["total"])
            for ph, vs in j["raw_us"].items():
                phases.setdefault(label, {}).setdefault(ph, []).extend(v / 1000 for v in vs)
    p(f"/bin/true from a static busybox rootfs, {meta.get('n')} runs per configuration in {meta.get('rounds')} "
      f"interleaved rounds ({meta.get('warmup')} untimed before each batch), one after the other (no parallel "
      "workers). Two kinds of figure: **library** runs are timed in one process by bench/phases around the "
      "calls the node agent makes (no process start, no CLI); **whole command** runs are timed by "
      "bench/lgbench from posix_spawn to waitpid, as in the sandbox section. "
      + ("`legion sandbox run` has a `--net pod` here: measured as legion-cli-net. "
         if "legion-cli-net" in cmds else
         "`legion sandbox run` has no option for a network, so the network is measured through the library "
         "(legion-net), next to the same library run without it (legion-loopback); the CLI and bwrap "
         "are whole commands. ")
      + f"Table `{meta.get('nets', {}).get('sandbox', '?')}` (table, link prefix, CIDR).\n")
    p("| configuration | what | p50 ms | p90 ms | p99 ms | mean ms |")
    p("|---|---|---:|---:|---:|---:|")
    s = {k: summary(v) for k, v in lat.items()}
    for k in SB_WHAT:
        if k in s:
            p(f"| {k} | {SB_WHAT[k]} | {ms(s[k]['p50'])} | {ms(s[k]['p90'])} | {ms(s[k]['p99'])} | "
              f"{ms(s[k]['mean'])} |")
    p("")

    def r(a, b, q):
        return ratio(s[a][q], s[b][q]) if a in s and b in s else "n/a"
    p("| ratio | p50 | p99 |")
    p("|---|---:|---:|")
    rows = [("legion-net / legion-loopback: what the network adds to a sandbox (library)", "legion-net",
             "legion-loopback"),
            ("bwrap / legion-cli (above 1 = legion faster; both whole commands, loopback only)", "bwrap",
             "legion-cli"),
            ("bwrap / legion-net (a whole command against a library run with a network)", "bwrap", "legion-net")]
    if "legion-cli-net" in s:
        rows += [("legion-cli-net / legion-cli: what the network adds (whole commands)", "legion-cli-net",
                  "legion-cli"),
                 ("bwrap / legion-cli-net", "bwrap", "legion-cli-net")]
    for title, a, b in rows:
        p(f"| {title} | {r(a, b, 'p50')} | {r(a, b, 'p99')} |")
    p("")
    if "legion-net" in s and "legion-loopback" in s:
        p(f"The network adds {ms(s['legion-net']['p50'] - s['legion-loopback']['p50'])} ms at p50. "
          "Where, p50 (p99) ms of each library step (create includes the reserve, the net_hook's attach and the "
          "assign; destroy includes the release):\n")
        p("| configuration | create | start | wait | destroy | total |")
        p("|---|---:|---:|---:|---:|---:|")
        ex = {}
        for k in ("legion-net", "legion-loopback"):
            ph = {n: summary(v) for n, v in phases[k].items()}
            p(f"| {k} | " + " | ".join(f"{ms(ph[n]['p50'])} ({ms(ph[n]['p99'])})"
                                       for n in ("create", "start", "wait", "destroy", "total")) + " |")
            x = phases[k]
            ex[k] = summary([c + st + w for c, st, w in zip(x["create"], x["start"], x["wait"])])
        p("")
        a, b = ex["legion-net"], ex["legion-loopback"]
        p(f"Until the workload's exit status (create + start + wait, run by run; without the teardown, which "
          f"legiond does off its event loop): with a network p50 {ms(a['p50'])} ms, p99 {ms(a['p99'])} ms; "
          f"loopback only p50 {ms(b['p50'])} ms, p99 {ms(b['p99'])} ms: {a['p50'] / b['p50']:.2f}x at p50, "
          f"{a['p99'] / b['p99']:.2f}x at p99. The destroy with a network includes lg_net_release (its time "
          "alone is the release column in part 1); the kernel removes a network namespace, and the veth "
          "with it, after the last process is gone, outside the timed run.\n")
        goals.append(("sandbox create to exit with a network / loopback only (library, p50)",
                      f"to the exit status {ms(a['p50'])} / {ms(b['p50'])} ms = {a['p50'] / b['p50']:.2f}x; "
                      f"with the teardown {ms(s['legion-net']['p50'])} / {ms(s['legion-loopback']['p50'])} ms = "
                      f"{r('legion-net', 'legion-loopback', 'p50')}", None))

    p("Commands:\n")
    for k, (kind, args) in cmds.items():
        if kind == "phases":
            p(f"- {k}: `bench/phases -n N {args} -- /bin/true`")
        else:
            p(f"- {k}: `{args}`")
    p("")


# ---- 3. throughput -----------------------------------------------------------------

def tput(d, p, goals):
    m = load(d, "tput-meta.json")
    if not m:
        p("Not run in this run (NET_PARTS).\n")
        return
    rows = {}
    for line in open(os.path.join(d, "tput.txt")):
        who, code, size, secs = line.split()
        if code != "200" or int(size) != m["mb"] << 20:
            raise SystemExit(f"report: a download failed: {line.strip()}")
        rows.setdefault(who, []).append(int(size) / float(secs) / 1e6)
    srcs = {}
    for line in open(os.path.join(d, "access.log")):
        srcs[line.split()[0]] = srcs.get(line.split()[0], 0) + 1
    p(f"{m['rounds']} downloads of {m['mb']} MiB (a sparse file: zeros, served with sendfile) per path, "
      "alternating host and sandbox, after one untimed download each; curl to /dev/null, MB/s = bytes / "
      f"curl's time_total. Upstream: nginx {m['nginx']} (1 worker) in a network namespace made by the benchmark "
      f"at {m['upstream']}, a veth to the host (host end {m['host_addr']}/30). The sandbox is a network "
      f"namespace attached by src/net ({m['sandbox_ip']}, namespace with egress on): its packets cross its "
      "veth, the table's prerouting and forward chains and masquerade. The host path is the host's own stack "
      "to the same upstream, the same veth. "
      f"{m['curl']}.\n")
    p("| path | median MB/s | min | max |")
    p("|---|---:|---:|---:|")
    med = {}
    for who in ("host", "sandbox"):
        v = rows.get(who, [])
        if v:
            med[who] = statistics.median(v)
            p(f"| {who} | {med[who]:,.0f} | {min(v):,.0f} | {max(v):,.0f} |")
    p("")
    if len(med) == 2:
        p(f"Sandbox through NAT / host's own stack: {med['sandbox'] / med['host']:.2f} (medians).\n")
        goals.append(("throughput through NAT against the host's own stack (median MB/s)",
                      f"{med['sandbox']:,.0f} / {med['host']:,.0f} = {med['sandbox'] / med['host']:.2f}", None))
    seen = ", ".join(f"{ip}: {n}" for ip, n in sorted(srcs.items()))
    nat_ok = m["sandbox_ip"] not in srcs and set(srcs) == {m["host_addr"]}
    p(f"Source addresses in the upstream's access log (requests): {seen}. The sandbox's own address "
      f"{m['sandbox_ip']} {'never' if m['sandbox_ip'] not in srcs else '**did**'} reached the upstream "
      f"({'masqueraded' if nat_ok else '**not masqueraded**'}).\n")
    goals.append(("the upstream sees the host's address, not the sandbox's (NAT)", seen, nat_ok))


# ---- 4. routed or bridged --------------------------------------------------------

PAIR_WHAT = {
    "routed": "what src/net builds: eth0 ip/32, through the host's routing (veth, host, veth) and the table's "
              "prerouting and forward chains (pod_to_pod: same namespace, accepted), conntrack",
    "bridge": "two ports of one bridge, eth0 ip/16: L2 inside the bridge; bridge-nf-call-iptables 0 (as on a host "
              "without br_netfilter): no inet hook sees the frames",
    "bridge-brnf": "the same bridge with bridge-nf-call-iptables 1 (br_netfilter on): bridged IPv4 frames go "
                   "through the inet hooks too",
}


def pair(d, p, attach_json, goals):
    j = load(d, "pair.json")
    if not j:
        p("Not run in this run (NET_PARTS).\n")
        return
    c = j["configs"]
    p(f"Two sandboxes of one namespace talking TCP, {j['rounds']} interleaved rounds (order alternating, after a "
      f"short untimed one) of {j['secs']:g} s per configuration and kind, all in a network namespace made by "
      "bench/netbench standing for the host (so that its bridge-nf switch could be turned; this host's own is "
      f"{'on' if j['host_brnf'] else 'off'}). Request/response: {j['rr_bytes']} bytes each way, one at a time, "
      f"TCP_NODELAY, each timed; stream: {j['chunk'] // 1024} KiB writes for the time given, bytes counted by the "
      f"receiver. Routed {', '.join(j['routed'])} (attached by src/net); bridged {', '.join(j['bridged'])} "
      f"(ports of `{j['bridge']}`, gateway {j['gateway']}/16, attached as ip-batch-bridge). Then the namespace "
      "was set to isolate its sandboxes from each other (isolation \"sandbox\") and each pair tried a connect "
      "again.\n")
    p("| configuration | what | requests/s | RR p50 ms | RR p90 ms | RR p99 ms | stream MB/s | "
      "reaches the other when isolated |")
    p("|---|---|---:|---:|---:|---:|---:|---|")
    for k, what in PAIR_WHAT.items():
        if k in c:
            v = c[k]
            p(f"| {k} | {what} | {v['rr_per_s']:,.0f} | {ms(v['rr']['p50_ms'])} | {ms(v['rr']['p90_ms'])} | "
              f"{ms(v['rr']['p99_ms'])} | {v['stream_mb_s']:,.0f} | "
              f"{'**yes**' if v['reached_when_isolated'] else 'no (dropped)'} |")
    p("")
    r, b = c["routed"], c["bridge"]
    goals.append(("sandbox to sandbox, bridged (no br_netfilter) / routed: RR p50, stream",
                  f"{ms(b['rr']['p50_ms'])} / {ms(r['rr']['p50_ms'])} ms = "
                  f"{ratio(b['rr']['p50_ms'], r['rr']['p50_ms'])}; {b['stream_mb_s']:,.0f} / "
                  f"{r['stream_mb_s']:,.0f} MB/s = {ratio(b['stream_mb_s'], r['stream_mb_s'])}", None))
    goals.append(("isolation between sandboxes holds, routed", "reached" if r["reached_when_isolated"]
                  else "dropped", not r["reached_when_isolated"]))
    # Why: every figure from this run.
    att = ""
    if attach_json:
        parts = []
        for lv in attach_json["levels"]:
            cf = lv["configs"]
            if "ip-batch-bridge" in cf:
                parts.append(f"{lv['background']:,} attached: p50 {ms(cf['ip-batch-bridge']['total']['p50_ms'])} "
                             f"ms bridged, {ms(cf['ip-batch']['total']['p50_ms'])} ms routed, "
                             f"{ms(cf['lg_net']['total']['p50_ms'])} ms routed by src/net's netlink")
        att = ("Attach (part 1, same tool, same three processes): " + "; ".join(parts) + ". ") if parts else ""
        lim = attach_json["levels"][0].get("bridge_max_ports")
        if lim:
            att += (f"A bridge also stops at {lim:,} ports: one bridge cannot hold the 10,000 sandboxes of a "
                    "host (issue 10), and several bridges would end L2 between sandboxes of one namespace "
                    "anyway, bringing back routing between them. ")
    brnf = c.get("bridge-brnf")
    p("**Why routed /32.** " + att +
      f"Between two sandboxes: request/response p50 {ms(b['rr']['p50_ms'])} ms bridged against "
      f"{ms(r['rr']['p50_ms'])} ms routed ({ratio(r['rr']['p50_ms'], b['rr']['p50_ms'])} routed / bridged), "
      f"stream {b['stream_mb_s']:,.0f} against {r['stream_mb_s']:,.0f} MB/s "
      f"({ratio(r['stream_mb_s'], b['stream_mb_s'])} routed / bridged); the routed path crosses the host's routing, the table's "
      "chains and conntrack, which bridged frames skip"
      + (f" (with br_netfilter on, bridged frames cross the inet hooks too: "
         f"{ms(brnf['rr']['p50_ms'])} ms, {brnf['stream_mb_s']:,.0f} MB/s; the bridge and its ports carry the "
         "link prefix, so the table's interface matches judged them and isolation "
         f"{'did not hold' if brnf['reached_when_isolated'] else 'held'})" if brnf else "") +
      ". That skipping is what a bridge gives up: every sandbox of every tenant on one L2 segment (ARP and "
      "MAC spoofing of a neighbour or of the gateway, broadcast and multicast reaching every tenant), and "
      "without br_netfilter the inet forward chain never sees traffic between two ports, so a namespace's "
      f"isolation does not hold: with isolation \"sandbox\" the bridged pair "
      f"{'still reached' if b['reached_when_isolated'] else 'did not reach'} each other, the routed pair "
      f"{'still reached' if r['reached_when_isolated'] else 'was dropped'}. Isolation on a bridge would need "
      "bridge-family rules per port (MAC and IP pinned to the port, ARP filtered, namespace by namespace) "
      "kept in step with every attach and release, or br_netfilter switched on host-wide (which changes "
      "every other bridge on the host). Routed, every packet between sandboxes goes through the one fixed "
      "inet table whose per-sandbox state is set elements, a sandbox's only neighbour is the gateway (a permanent "
      "entry; its veth has no other peer to spoof), and it can send from no address but its /32 (the prerouting chain's fib check drops the rest). The "
      "latency and bandwidth the routed path costs against a bridge without filtering are the price of "
      "that filtering.\n")


def main():
    d = sys.argv[1]
    meta = load(d, "meta.json") or {}
    p = print
    goals = []
    body = []

    def w(*a):
        body.append(" ".join(str(x) for x in a))

    w("### 1. Network attach\n")
    attach(d, w, goals)
    w("### 2. Sandbox create to exit: with a network, loopback only, bwrap\n")
    sandbox(d, w, meta, goals)
    w("### 3. Throughput through NAT\n")
    tput(d, w, goals)
    w("### 4. Routed /32 or a bridge: sandbox to sandbox\n")
    pair(d, w, load(d, "attach.json"), goals)

    p("## Network (issue 11)\n")
    p(f"Generated by `bench/net/run.sh` (`BENCH_PARTS=net bench/run.sh`) on {meta.get('date', '?')}; the whole "
      f"run took {meta.get('elapsed_s', '?')} s. Every figure below is read from that run's measurements in "
      "`bench/out/net/`; rerun it to regenerate this section.\n")
    p("### Goals\n")
    p("| goal | measured | met |")
    p("|---|---|---|")
    for g, v, ok in goals:
        p(f"| {g} | {v} | {'(no goal)' if ok is None else yes(ok)} |")
    p("")
    p("### Machine and conditions\n")
    p(f"- {meta.get('cpus')} CPUs ({meta.get('cpu_model')}), {meta.get('mem_gib')} GiB, kernel "
      f"{meta.get('kernel')}, cgroup {meta.get('cgroup')}; iproute2 {meta.get('iproute2')}, nft "
      f"{meta.get('nft')}, bwrap {meta.get('bwrap')}")
    p(f"- load average at the start {meta.get('load_start')}, at the end {meta.get('load_end')}; CPU pressure "
      f"(some, avg60) {meta.get('psi_start')} -> {meta.get('psi_end')} (the machine is shared: other work "
      "competes for its 2 CPUs)")
    p(f"- git {meta.get('git')}{' (with uncommitted changes)' if meta.get('git_dirty') else ''}, build "
      f"`{meta.get('build')}`; parts: {meta.get('parts')}")
    left = " ".join(x for x in (meta.get("leftover_tables"), meta.get("leftover_links"),
                                meta.get("leftover_netns")) if x)
    p(f"- left behind after the run (tables, links, namespaces, routes): {left or 'nothing'}\n")
    p("\n".join(body))


if __name__ == "__main__":
    main()
