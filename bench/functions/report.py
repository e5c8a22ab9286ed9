#!/usr/bin/python3
"""bench/functions/report.py RESULTS_DIR > functions.md

Turns the raw JSON of bench/functions/run.sh (cold.json, warm.json,
burst.json, meta.json) into the `## Functions` section of bench/RESULTS.md.
Every number printed here is read from those files."""
import json
import os
import statistics
import sys

GOAL_COLD_P50_MS = 5.0
GOAL_COLD_P99_MS = 20.0
GOAL_COLD_RATIO = 20.0
GOAL_ROUTER_US = 100.0


def load(d, name):
    p = os.path.join(d, name)
    return json.load(open(p)) if os.path.exists(p) else None


def yes(ok):
    return "**met**" if ok else "**not met**"


def ms(v):
    return f"{v:.2f}" if v < 100 else f"{v:.0f}"


def us(v):
    return f"{v:.0f}" if abs(v) >= 10 else f"{v:.1f}"


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def rng(xs, f):
    return f"{f(min(xs))}–{f(max(xs))}" if xs else ""


BURST_COLUMNS = ("all answered ms | 2xx | latency p50 / p99 ms | instances that answered "
                 "| right after: ready + starting | cold starts | placeholders taken / on demand "
                 "| on-demand instances ready after, ms: first / p50 / last | all instances up, s after the last answer")


def burst_header(first=("concurrency / maxInstances", "function")):
    """The burst table's head; first: the columns before BURST_COLUMNS."""
    n = len(first) + BURST_COLUMNS.count("|") + 1
    return ["| " + " | ".join(first) + " | " + BURST_COLUMNS + " |", "|" + "---|" * n]


def burst_row(v, requests, first=None):
    """One variant of burst.json as a row; first: the leading cells (default
    concurrency / maxInstances and the function)."""
    h = v["httpload"]
    st = v["status_right_after"]
    if first is None:
        fn = f"sleeps {v['sleep_s'] * 1000:.0f} ms" if v["sleep_s"] else "hello (no sleep)"
        first = (f"{v['concurrency']} / {v['maxInstances']}", fn)
    o = v["instance_ready_ms_on_demand"]
    od = f"{o['min']:.0f} / {o['p50']:.0f} / {o['max']:.0f}" if o.get("n") else "none"
    return (f"| {' | '.join(first)} | {h['all_answered_ms']:.1f} | "
            f"{h['status']['2xx']}/{requests} | {h['latency_us']['p50'] / 1000:.1f} / "
            f"{h['latency_us']['p99'] / 1000:.1f} | {v['instances_that_answered']} | "
            f"{st['instances']} + {st['starting']} | {st['coldStarts']['count']} | "
            f"{v['pool_taken']} / {v['pool_on_demand']} | {od} | {v['settle_s']:.2f} |")


def main():
    d = sys.argv[1]
    meta = load(d, "meta.json") or {}
    cold = load(d, "cold.json")
    warm = load(d, "warm.json")
    burst = load(d, "burst.json")
    scale = load(d, "scale.json")
    out = []
    w = out.append
    w("## Functions")
    w("")
    w(f"`bench/functions/run.sh` ({meta.get('date', '?')}, git {meta.get('git', '?')}"
      f"{' with uncommitted changes' if meta.get('git_dirty') else ''}, {meta.get('elapsed_s', '?')} s): "
      f"legiond built from `{os.path.basename(meta.get('build', 'build'))}` on 127.0.0.1 with its own LEGION_HOME, "
      f"{meta.get('cpus', '?')} × {meta.get('cpu_model', '?')}, {meta.get('mem_gib', '?')} GiB, Linux "
      f"{meta.get('kernel', '?')}, cgroup {meta.get('cgroup', '?')}; Python {meta.get('python', '?')}, "
      f"Node.js {meta.get('node', '?')}, {meta.get('wrk', 'wrk')}, nginx {meta.get('nginx', '?')}. "
      f"Load average (1, 5, 15 min) at start {meta.get('load_start', '?')}, at end {meta.get('load_end', '?')}; "
      f"CPU pressure (PSI some avg60) at start {meta.get('psi_start', '?')}, at end {meta.get('psi_end', '?')}. "
      "The machine is shared: whatever else ran on it during the run is in those figures. "
      "Raw data: `bench/out/functions/*.json`.")
    w("")

    goals = []
    # ---- goals summary (filled as sections compute) ----
    sections = []

    if cold:
        s = []
        v = cold["variants"]
        s.append("### 1. Cold start")
        s.append("")
        s.append(f"One request to a new Python hello-world app (`examples/python-hello`), {cold['n']} apps per variant "
                 f"(after 3 untimed ones), each deployed first (not timed: the package is uploaded once, then `PUT` "
                 f"an app with the same digest), asked once, checked and deleted (`DELETE`, which destroys the "
                 f"instance at once, so one bench app lives at a time). Timed by the client: "
                 f"{cold['client']}. The app's `status.coldStarts.lastMs` (legiond's own figure, from the "
                 f"request's arrival to the response's start) and the instance's `ready in` log line (placeholder "
                 f"taken or sandbox created → worker specialized) are shown beside it. The python3 pool group had "
                 f"`ready: {cold['pool_ready']}`; the on-demand apps used a pool group `cold` with the same spec "
                 f"and `ready: 0`, so each instance was a new sandbox, the worker's imports, then `specialize`.")
        s.append("")
        s.append("- **placeholder**: before each request, wait until the pool is full again and nothing is starting "
                 "(a machine at rest with placeholders ready);")
        s.append("- **on-demand**: the same, with the app in pool group `cold`;")
        s.append("- **placeholder-back-to-back**: wait only until `status.ready >= 1`, so the refill of the "
                 "placeholders taken just before (sandbox + Python imports) runs while the request is served.")
        if cold.get("network"):
            s.append("- legiond's network is on (issue 11): every instance has an address. The variants above have "
                     "the functions' default egress (on, the namespace's policy); **placeholder-egress-off** and "
                     "**on-demand-egress-off** are the same with the app's `\"egress\": \"off\"`, alternating app "
                     "by app with their egress-on twin.")
        s.append("")
        s.append("| variant | n | p50 ms | p90 ms | p99 ms | mean ms | min ms | max ms | legiond's p50 / p99 ms "
                 "| specialize p50 ms | warm request after, p50 ms | failed checks |")
        s.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for name, x in v.items():
            c, sv, ir, wm = x["client_ms"], x["server_ms"], x["instance_ready_ms"], x["warm_ms"]
            s.append(f"| {name} | {c['n']} | {ms(c['p50'])} | {ms(c['p90'])} | {ms(c['p99'])} | {ms(c['mean'])} | "
                     f"{ms(c['min'])} | {ms(c['max'])} | {ms(sv['p50'])} / {ms(sv['p99'])} | {ms(ir['p50'])} | "
                     f"{ms(wm['p50'])} | {len(x['failures'])} |")
        s.append("")
        s.append("Checks on every app: both answers 200, `status.coldStarts.count == 1`, the pool group's "
                 "`taken` went up by one and `onDemand` did not (placeholder variants) or `onDemand` went up by one "
                 "(on-demand), and the instance's log line says which.")
        for on, off in (("placeholder", "placeholder-egress-off"), ("on-demand", "on-demand-egress-off")):
            if on in v and off in v:
                a_, b_ = v[on]["client_ms"], v[off]["client_ms"]
                s.append("")
                addr = [sum(1 for r in v[x]["rows"] if r.get("address")) for x in (on, off)]
                s.append(f"{on}, egress on / off (same run, alternating): p50 {ms(a_['p50'])} / {ms(b_['p50'])} ms "
                         f"= {a_['p50'] / b_['p50']:.2f}, p99 {ms(a_['p99'])} / {ms(b_['p99'])} ms "
                         f"= {a_['p99'] / b_['p99']:.2f}; instances with an address (app status `addresses`): "
                         f"{addr[0]} of {len(v[on]['rows'])} / {addr[1]} of {len(v[off]['rows'])}.")
                goals.append(("1", f"cold start ({on}) with egress on, against egress off",
                              f"p50 {ms(a_['p50'])} / {ms(b_['p50'])} ms, p99 {ms(a_['p99'])} / {ms(b_['p99'])} ms",
                              "(no goal)"))
        p, o = v.get("placeholder"), v.get("on-demand")
        b = v.get("placeholder-back-to-back")
        if p and o:
            r50 = o["client_ms"]["p50"] / p["client_ms"]["p50"]
            r99 = o["client_ms"]["p99"] / p["client_ms"]["p99"]
            rmean = o["client_ms"]["mean"] / p["client_ms"]["mean"]
            s.append("")
            s.append(f"On demand / with a placeholder: **{r50:.1f}×** at p50, {r99:.1f}× at p99, {rmean:.1f}× on the "
                     f"mean.")
            goals.append(("1", f"cold start with a placeholder p50 ≤ {GOAL_COLD_P50_MS:g} ms",
                          f"{ms(p['client_ms']['p50'])} ms at rest", yes(p["client_ms"]["p50"] <= GOAL_COLD_P50_MS)))
            goals.append(("1", f"cold start with a placeholder p99 ≤ {GOAL_COLD_P99_MS:g} ms",
                          f"{ms(p['client_ms']['p99'])} ms at rest", yes(p["client_ms"]["p99"] <= GOAL_COLD_P99_MS)))
            goals.append(("1", f"at least {GOAL_COLD_RATIO:g}× faster than without placeholders",
                          f"{r50:.1f}× at p50 ({r99:.1f}× at p99)", yes(r50 >= GOAL_COLD_RATIO)))
            if b:
                br50 = o["client_ms"]["p50"] / b["client_ms"]["p50"]
                goals.append(("1", "the same, back to back (placeholders refilling meanwhile)",
                              f"p50 {ms(b['client_ms']['p50'])} ms, p99 {ms(b['client_ms']['p99'])} ms, "
                              f"{br50:.1f}× at p50",
                              f"p50 {yes(b['client_ms']['p50'] <= GOAL_COLD_P50_MS)}, "
                              f"p99 {yes(b['client_ms']['p99'] <= GOAL_COLD_P99_MS)}, "
                              f"ratio {yes(br50 >= GOAL_COLD_RATIO)}"))
        if p:
            rows = p["rows"]
            rest = [r["server_ms"] - r["instance_ready_ms"] for r in rows
                    if r["server_ms"] is not None and r["instance_ready_ms"] is not None]
            client = [r["ms"] - r["server_ms"] for r in rows if r["server_ms"] is not None]
            s.append("")
            s.append(f"Where a cold start with a placeholder goes (medians): {ms(p['instance_ready_ms']['p50'])} ms "
                     f"from taking the placeholder to the worker's `ready phase=specialized` (mount `/code`, "
                     f"`specialize`, the function's import), {ms(med(rest))} ms more until legiond starts the "
                     f"response (connecting to the instance, the first request), {ms(med(client))} ms between "
                     f"legiond and the client. The same client's warm request right after has a p50 of "
                     f"{ms(p['warm_ms']['p50'])} ms, an upper bound on what the Python client adds; a C client would "
                     f"not change the picture.")
        if b:
            rows = b["rows"]
            busy = [r for r in rows if r["pool_starting_before"] > 0]
            s.append("")
            s.append(f"Back to back, {len(busy)} of {len(rows)} requests arrived while placeholders were being "
                     f"made (`status.starting` > 0); their specialize step had a p50 of "
                     f"{ms(med([r['instance_ready_ms'] for r in busy if r['instance_ready_ms'] is not None]) if busy else 0)}"
                     f" ms against {ms(p['instance_ready_ms']['p50']) if p else '?'} ms at rest: on "
                     f"{meta.get('cpus', '?')} CPUs the refill's Python imports compete with the specialization and "
                     f"the first request.")
        s.append("")
        sections += s

    if warm:
        s = []
        runs = warm["runs"]
        backends = list(warm["backends"])
        conns = warm["concurrency"]
        s.append("### 2. Warm path")
        s.append("")
        bdesc = ", ".join(f"`{b['app']}` ({name}, `concurrency: 64`, `minInstances: 1`, `maxInstances: 1`)"
                          for name, b in warm["backends"].items())
        s.append(f"Hello-world apps {bdesc}, warmed with 200 requests, each reached three ways in the same run: "
                 f"**router** = legiond's `/fn/default/APP/` over TCP; **direct** = the instance's own Unix socket "
                 f"(found from the app's log line `instance ID ready`, under `$LEGION_HOME/run/sockets/`); "
                 f"**nginx** = nginx proxying to that same socket ({warm['nginx']['version']}, `worker_processes "
                 f"{warm['nginx']['workers']}` since legiond is one event loop, `access_log off`, upstream "
                 f"`keepalive 64`, HTTP/1.1 to the upstream; the config is `bench/out/functions/nginx/nginx.conf`). "
                 f"All three answer the same bytes (checked). Load comes from `bench/functions/httpload` (C, "
                 f"closed loop, keep-alive, every request's latency kept, TCP or Unix socket alike; 1 thread at 1 "
                 f"connection, 2 threads at {conns[1]}) for the three targets, and from wrk "
                 f"(`wrk -t2 -c{warm['wrk']['connections']} "
                 f"-d{next((r['duration_s'] for r in runs if r['tool'] == 'wrk'), '?')}s --latency` with the "
                 f"`Authorization` header) for the two TCP ones. {warm['rounds']} rounds, the targets' order rotating "
                 f"each round; httpload runs {warm['duration_s']:g} s after {warm['warmup_s']:g} s untimed. Figures "
                 f"are the median over rounds (range in brackets). Nothing is pinned: load generator, proxy and "
                 f"function share the {meta.get('cpus', '?')} CPUs. The function's instance runs with the pool's "
                 f"startup boost for its first seconds, then its own `cpu: 1000m`.")
        s.append("")

        def sel(tool, backend, target, c):
            return [r for r in runs if r["tool"] == tool and r["backend"] == backend and r["target"] == target
                    and r["conns"] == c]

        s.append("httpload:")
        s.append("")
        s.append("| backend | connections | target | req/s | p50 µs | p99 µs | errors |")
        s.append("|---|---|---|---|---|---|---|")
        for b in backends:
            for c in conns:
                for t in ("router", "direct", "nginx"):
                    rs = sel("httpload", b, t, c)
                    if not rs:
                        continue
                    rps = [r["rps"] for r in rs]
                    p50 = [r["latency_us"]["p50"] for r in rs]
                    p99 = [r["latency_us"]["p99"] for r in rs]
                    s.append(f"| {b} | {c} | {t} | {med(rps):.0f} ({rng(rps, lambda x: f'{x:.0f}')}) | "
                             f"{us(med(p50))} ({rng(p50, us)}) | {us(med(p99))} ({rng(p99, us)}) | "
                             f"{sum(r['errors'] for r in rs)} |")
        s.append("")
        s.append("What the proxy adds to p50, router − direct and nginx − direct, taken round by round (the runs "
                 "of a round are next to each other in time), median (range):")
        s.append("")
        s.append("| backend | connections | router adds, µs | nginx adds, µs |")
        s.append("|---|---|---|---|")
        overhead = {}
        for b in backends:
            for c in conns:
                dr, dn = [], []
                for rnd in range(warm["rounds"]):
                    def one(t):
                        x = [r for r in sel("httpload", b, t, c) if r["round"] == rnd]
                        return x[0]["latency_us"]["p50"] if x else None
                    r_, d_, n_ = one("router"), one("direct"), one("nginx")
                    if r_ is not None and d_ is not None:
                        dr.append(r_ - d_)
                    if n_ is not None and d_ is not None:
                        dn.append(n_ - d_)
                overhead[(b, c)] = dr
                s.append(f"| {b} | {c} | {us(med(dr))} ({rng(dr, us)}) | {us(med(dn))} ({rng(dn, us)}) |")
        s.append("")
        s.append("wrk:")
        s.append("")
        s.append("| backend | target | req/s | p50 µs | p90 µs | p99 µs | non-2xx |")
        s.append("|---|---|---|---|---|---|---|")
        thr = {}
        for b in backends:
            for t in ("router", "nginx"):
                rs = sel("wrk", b, t, warm["wrk"]["connections"])
                if not rs:
                    continue
                rps = [r["rps"] for r in rs]
                thr[(b, t)] = rps
                p50 = [r["latency_us"].get("p50", 0) for r in rs]
                p90 = [r["latency_us"].get("p90", 0) for r in rs]
                p99 = [r["latency_us"].get("p99", 0) for r in rs]
                s.append(f"| {b} | {t} | {med(rps):.0f} ({rng(rps, lambda x: f'{x:.0f}')}) | {us(med(p50))} | "
                         f"{us(med(p90))} | {us(med(p99))} | {sum(r['non2xx'] for r in rs)} |")
        s.append("")
        lines = []
        for b in backends:
            rr = sel("wrk", b, "router", warm["wrk"]["connections"])
            nn = sel("wrk", b, "nginx", warm["wrk"]["connections"])
            ratios = []
            for rnd in range(warm["rounds"]):
                x = [r["rps"] for r in rr if r["round"] == rnd]
                y = [r["rps"] for r in nn if r["round"] == rnd]
                if x and y:
                    ratios.append(x[0] / y[0])
            hr = sel("httpload", b, "router", conns[1])
            hn = sel("httpload", b, "nginx", conns[1])
            hratios = []
            for rnd in range(warm["rounds"]):
                x = [r["rps"] for r in hr if r["round"] == rnd]
                y = [r["rps"] for r in hn if r["round"] == rnd]
                if x and y:
                    hratios.append(x[0] / y[0])
            if ratios:
                wins = sum(1 for x in ratios if x >= 1)
                lines.append(f"{b}: router / nginx = {med(ratios):.2f} (rounds: {rng(ratios, lambda x: f'{x:.2f}')}), "
                             f"router ahead in {wins} of {len(ratios)} rounds; httpload {med(hratios):.2f} "
                             f"({rng(hratios, lambda x: f'{x:.2f}')})")
                goals.append(("2", f"router throughput ≥ nginx's ({b} backend, {warm['wrk']['connections']} connections)",
                              f"wrk: router / nginx {med(ratios):.2f}× (median of rounds; ahead in {wins} of "
                              f"{len(ratios)}); httpload: {med(hratios):.2f}×", yes(med(ratios) >= 1)))
        if lines:
            s.append("Throughput, router / nginx, round by round: " + "; ".join(lines) +
                     ". The function is the same instance behind both, so this compares the proxies at an equal "
                     "backend.")
            s.append("")
        for b in backends:
            dr = overhead.get((b, 1))
            if dr:
                goals.append(("2", f"router adds ≤ {GOAL_ROUTER_US:g} µs at p50 ({b} backend, 1 connection)",
                              f"{us(med(dr))} µs (rounds: {rng(dr, us)})", yes(med(dr) <= GOAL_ROUTER_US)))
        def cpu_per_req(r):
            n = r.get("completed_with_warmup", r.get("requests")) if r["tool"] == "httpload" else r["requests"]
            return r["proxy_cpu_ns"] / n / 1000 if r.get("proxy_cpu_ns") and n else None

        if any(r.get("proxy_cpu_ns") for r in runs):
            s.append("CPU time the proxy itself spent per request (legiond's threads for the router, nginx's worker "
                     "for nginx; from `/proc/PID/task/*/schedstat` around each run), µs, median (range). Less "
                     "sensitive than req/s to what else the machine is doing, though batching under load lowers it:")
            s.append("")
            s.append("| backend | load | router | nginx | router / nginx |")
            s.append("|---|---|---|---|---|")
            for b in backends:
                for tool, c in (("httpload", 1), ("httpload", conns[1]), ("wrk", warm["wrk"]["connections"])):
                    rv = [x for x in (cpu_per_req(r) for r in sel(tool, b, "router", c)) if x]
                    nv = [x for x in (cpu_per_req(r) for r in sel(tool, b, "nginx", c)) if x]
                    if rv and nv:
                        s.append(f"| {b} | {tool}, {c} connection{'s' if c > 1 else ''} | {med(rv):.1f} "
                                 f"({rng(rv, lambda x: f'{x:.1f}')}) | {med(nv):.1f} ({rng(nv, lambda x: f'{x:.1f}')}) "
                                 f"| {med(rv) / med(nv):.2f} |")
            s.append("")
        big = [x for b in backends for x in overhead.get((b, conns[1]), [])]
        if big:
            s.append(f"At 1 connection, router − direct is the router's own cost per request. At {conns[1]} "
                     f"connections the latency is mostly waiting in the function's queue, and router − direct "
                     f"swings from {us(min(big))} to {us(max(big))} µs between rounds (it can be negative: through "
                     f"the router the function gets its requests over legiond's upstream connections rather than "
                     f"{conns[1]} of its own); the goal is judged at 1 connection.")
            s.append("")
        for name, bk in warm["backends"].items():
            st = bk.get("status_after", {})
            seen = sum(r.get("non2xx", 0) if r["tool"] == "wrk" else r["errors"]
                       for r in runs if r["backend"] == name)
            extra = (f" legiond counted {st.get('errors5xx') - seen} 5xx that no client received: they appear when "
                     f"wrk stops with requests in flight (no 5xx is written on the wire then; see the notes)."
                     if st.get("errors5xx", 0) > seen else "")
            s.append(f"`{bk['app']}` after the runs: {st.get('instances')} instance, "
                     f"{st.get('coldStarts', {}).get('count')} cold start, {st.get('requests')} requests, "
                     f"`errors5xx` {st.get('errors5xx')}, `rejected429` {st.get('rejected429')}; the load "
                     f"generators saw {seen} errors or non-2xx answers in all.{extra}")
        s.append("")
        sections += s

    if burst:
        s = []
        s.append("### 3. Burst")
        s.append("")
        s.append(f"{burst['requests']} requests at once at an app with no instance: `bench/functions/httpload -b` "
                 f"opens {burst['requests']} keep-alive connections to legiond first, then sends one request on each "
                 f"in one go; \"all answered\" is from the first send to the last response. The function "
                 f"(`bench/functions/apps/burst`) answers with its instance's id, so the answers say how many "
                 f"instances actually served; the app's status is read right after the last answer and again once "
                 f"nothing is starting. The python3 pool group had `ready: {burst['pool_ready']}` (all ready before "
                 f"each burst); a new app per variant, deleted after.")
        s.append("")
        s += burst_header()
        for v in burst["variants"]:
            s.append(burst_row(v, burst["requests"]))
        s.append("")
        waste = [v for v in burst["variants"]
                 if v["status_right_after"]["coldStarts"]["count"] > v["instances_that_answered"]]
        if waste:
            x = max(waste, key=lambda v: v["status_right_after"]["coldStarts"]["count"] - v["instances_that_answered"])
            s.append(f"The router starts an instance only when waiting for one beats waiting for a slot of "
                     f"those ready or starting (src/router/router.h), and requests go to whichever instance is "
                     f"ready first. Some instances started for a burst still serve none of it (worst here: `{x['app']}`, "
                     f"{x['status_right_after']['coldStarts']['count']} instances started, "
                     f"{x['instances_that_answered']} answered, the rest came up "
                     f"{x['settle_s']:.1f} s later and idle until `idleTimeoutSeconds`).")
            s.append("")
        cands = [v for v in burst["variants"] if v["sleep_s"]] or burst["variants"]
        big = max(cands, key=lambda v: v["instance_ready_ms_on_demand"].get("n", 0))
        o = big["instance_ready_ms_on_demand"]
        if o.get("n"):
            s.append(f"On-demand instances start at most 4 at a time per app: in `{big['app']}`, {o['n']} sandboxes "
                     f"were made on {meta.get('cpus', '?')} CPUs, and the first of them was ready after "
                     f"{o['min']:.0f} ms (p50 {o['p50']:.0f} ms, last {o['max']:.0f} ms; one alone takes about "
                     f"{(cold['variants']['on-demand']['instance_ready_ms']['p50'] if cold else float('nan')):.0f} ms, "
                     f"part 1): those starting together share the CPUs.")
            s.append("")
        sections += s

    if scale:
        s = []
        n = scale["n"]
        h = scale["httpload"]
        up = scale["at_all_up"]
        s.append(f"### 4. Scale: 0 to {n} instances of one app")
        s.append("")
        s.append(f"`FN_PARTS=scale bench/functions/run.sh`: {n} requests at once (`{scale['command']}`, "
                 f"from {scale['sources']} loopback source address{'es' if scale['sources'] > 1 else ''}: legiond takes at "
                 f"most 256 connections from one) at a new "
                 f"Python app with `concurrency: 1`, `maxInstances: {n}`, whose function "
                 f"(`bench/functions/apps/burst`) holds its instance {scale['hold_s']:g} s and answers with the "
                 f"instance's id: each request needs an instance of its own until the first ones are done. The app's "
                 f"status was polled every 0.2 s (\"all up\": the first poll with {n} ready, counted from the start "
                 f"of the load generator). The python3 pool group had `ready: {scale['pool_ready']}`. Memory is "
                 f"`MemAvailable` of the host against the value before the app existed.")
        s.append("")
        s.append("| requests | 2xx | instances that answered | all up after, s | all answered, s | "
                 "placeholders taken / on demand | instance ready ms p50 / p99 (on demand) | failed to start | "
                 "memory used at all up | host tasks / legiond fds at all up |")
        s.append("|---|---|---|---|---|---|---|---|---|---|")
        o = scale["instance_ready_ms_on_demand"]
        od = f"{o['p50']:.0f} / {o['p99']:.0f}" if o.get("n") else "none"
        mem = f"{up['mem_available_drop'] / 2**30:.1f} GiB of {scale['mem_total'] / 2**30:.1f}" if up else "-"
        fds = f"{up['pids']} / {up['legiond_fds']}" if up else "-"
        t_up = "never" if scale["t_all_up_s"] is None else f"{scale['t_all_up_s']:.1f}"
        s.append(f"| {n} | {h['status']['2xx']}/{n} | {scale['instances_that_answered']} | {t_up} | "
                 f"{h['all_answered_ms'] / 1000:.1f} | {scale['pool_taken']} / {scale['pool_on_demand']} | {od} | "
                 f"{scale['instances_failed_to_start']} | {mem} | {fds} |")
        s.append("")
        sections += s

    w("### Goals")
    w("")
    w("| part | goal | measured | |")
    w("|---|---|---|---|")
    for g in goals:
        w(f"| {g[0]} | {g[1]} | {g[2]} | {g[3]} |")
    if burst:
        w("| 3 | burst: time until all answered, instances it took | see below | no target set |")
    if scale:
        w(f"| 4 | 0 to {scale['n']} instances of one app: all answered, all serving | "
          f"{scale['httpload']['status']['2xx']}/{scale['n']} answered by {scale['instances_that_answered']} "
          f"instances | {yes(scale['httpload']['status']['2xx'] == scale['n'] and scale['instances_that_answered'] == scale['n'])} |")
    w("")
    out += sections
    if meta.get("leftover_processes") or meta.get("leftover_cgroups"):
        w(f"Left behind after legiond stopped: processes `{meta.get('leftover_processes')}`, cgroups "
          f"`{meta.get('leftover_cgroups')}`.")
    else:
        w(f"legiond stopped on SIGTERM (exit status {meta.get('legiond_exit', '?')}); no process or cgroup of "
          f"the run was left.")
    w("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
