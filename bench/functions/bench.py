#!/usr/bin/python3
"""The functions benchmark's driver (bench/functions/run.sh starts legiond
and runs this; see run.sh for the whole picture).

Four parts, each writing raw JSON into OUT:
  cold   cold starts with a placeholder ready and without (on demand)
  warm   wrk and httpload through the router, straight to the instance's
         socket, and through nginx to the same instance
  burst  200 requests at once at an app with no instance
  scale  0 to N (500) instances of one app: N requests at once that each
         hold an instance (concurrency 1) until all can have come up

Every figure in the report comes from these files."""
import argparse
import http.client
import io
import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench", "lib"))
import harness  # noqa: E402
import proxy  # noqa: E402

log = harness.logger("bench/functions")
RawConn, summary, free_port = harness.RawConn, harness.summary, harness.free_port


class Api(harness.Api):
    def upload(self, directory):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as t:
            for f in sorted(os.listdir(directory)):
                t.add(os.path.join(directory, f), arcname=f)
        return self.call("POST", "/v1/namespaces/default/packages", buf.getvalue())[1]["digest"]



def get_request(path, token=None, host="127.0.0.1"):
    h = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n"
    if token:
        h += f"Authorization: Bearer {token}\r\n"
    return (h + "\r\n").encode()


# ---- 1. cold starts ----------------------------------------------------------

def cold(args, api, out):
    n = args.cold_n
    py = api.pool("python3")
    spec = dict(py["spec"])
    spec["ready"] = args.pool_ready
    api.call("PUT", "/v1/poolgroups/python3", spec)
    cold_spec = dict(py["spec"])
    cold_spec["ready"] = 0
    api.call("PUT", "/v1/poolgroups/cold", cold_spec)
    target = args.pool_ready

    def at_rest(st):
        return st["ready"] >= target and st["starting"] == 0

    api.wait_pool("python3", at_rest, what="python3 pool full")
    digest = api.upload(os.path.join(ROOT, "examples", "python-hello"))
    conn = RawConn(args.port)
    # Apps are deleted right after their measurement (DELETE destroys the
    # instance at once), so at most one bench app is alive at a time.
    # Variants of one group alternate app by app, so that drift on the
    # machine hits them alike: with legiond's network on, the app's egress
    # "on" (functions' default, the namespace's policy) against "off".
    egress = args.egress == "on"
    groups = [
        # (name, pool group, wait before each request, extra app spec), ...
        [("placeholder", "python3", "rest", {})] +
        ([("placeholder-egress-off", "python3", "rest", {"egress": "off"})] if egress else []),
        [("on-demand", "cold", "rest", {})] +
        ([("on-demand-egress-off", "cold", "rest", {"egress": "off"})] if egress else []),
        [("placeholder-back-to-back", "python3", "ready>=1", {})],
    ]
    results = {"n": n, "pool_ready": target, "pool_spec": spec, "cold_pool_spec": cold_spec,
               "client": "Python raw socket (bench/functions/bench.py RawConn), one keep-alive TCP "
                         "connection to legiond for all apps; time.perf_counter_ns around sendall + reading "
                         "the whole response",
               "network": egress, "variants": {}}
    seq = 0
    for group in groups:
        rows = {v[0]: [] for v in group}
        failures = {v[0]: [] for v in group}
        warmup = 3
        t_variant = time.monotonic()
        for i, (name, pool, wait, extra) in ((i, v) for i in range(-warmup, n) for v in group):
            seq += 1
            app = f"cs-{seq}"
            api.put_app(app, dict({"runtime": "python3", "package": digest, "poolGroup": pool}, **extra))
            if wait == "rest":
                before = api.wait_pool("python3", at_rest, what="python3 pool full")
            else:
                before = api.wait_pool("python3", lambda st: st["ready"] >= 1, what="a placeholder")
            pbefore = before if pool == "python3" else api.pool(pool)["status"]
            ns, status, body = conn.request(get_request(f"/fn/default/{app}/", args.token))
            warm_ns, warm_status, _ = conn.request(get_request(f"/fn/default/{app}/", args.token))
            doc = api.app(app)
            pafter = api.pool(pool)["status"]
            _, text = api.call("GET", f"/v1/namespaces/default/apps/{app}/logs", raw=True)
            m = re.search(rb"ready in ([\d.]+) ms \((from a placeholder|no placeholder ready)\)", text)
            api.delete_app(app)
            if i < 0:
                continue
            cs = doc["status"]["coldStarts"]
            row = {"i": i, "app": app, "ms": ns / 1e6, "status": status, "warm_ms": warm_ns / 1e6,
                   "warm_status": warm_status, "cold_starts": cs["count"], "server_ms": cs.get("lastMs"),
                   "instance_ready_ms": float(m.group(1)) if m else None,
                   "instance_from": m.group(2).decode() if m else None,
                   "pool_ready_before": before["ready"], "pool_starting_before": before["starting"],
                   "taken": pafter["taken"] - pbefore["taken"], "on_demand": pafter["onDemand"] - pbefore["onDemand"]}
            if egress:
                row["address"] = (doc["status"].get("addresses") or [None])[0]
            rows[name].append(row)
            ok = (status == 200 and warm_status == 200 and cs["count"] == 1 and
                  (row["taken"] == 1 and row["on_demand"] == 0 and row["instance_from"] == "from a placeholder"
                   if pool == "python3" else
                   row["on_demand"] == 1 and row["instance_from"] == "no placeholder ready"))
            if not ok:
                failures[name].append(row)
        for name, pool, wait, extra in group:
            r = rows[name]
            results["variants"][name] = {
                "pool": pool, "wait": wait, "app_spec": extra, "rows": r, "failures": failures[name],
                "interleaved_with": [v[0] for v in group if v[0] != name],
                "client_ms": summary([x["ms"] for x in r]),
                "server_ms": summary([x["server_ms"] for x in r if x["server_ms"] is not None]),
                "warm_ms": summary([x["warm_ms"] for x in r]),
                "instance_ready_ms": summary([x["instance_ready_ms"] for x in r
                                              if x["instance_ready_ms"] is not None]),
                "elapsed_s": time.monotonic() - t_variant,
            }
            s = results["variants"][name]["client_ms"]
            log(f"cold {name}: n={s['n']} p50={s['p50']:.2f} ms p99={s['p99']:.2f} ms, "
                f"{len(failures[name])} failed checks")
    api.call("DELETE", "/v1/poolgroups/cold")
    conn.s.close()
    json.dump(results, open(os.path.join(out, "cold.json"), "w"), indent=1)


# ---- 2. warm path ------------------------------------------------------------

def instance_socket(api, home, app):
    _, text = api.call("GET", f"/v1/namespaces/default/apps/{app}/logs", raw=True)
    ids = re.findall(rb"instance (i-[0-9a-f]+) ready", text)
    if len(ids) != 1:
        raise RuntimeError(f"{app}: expected one instance in the logs, found {ids}")
    path = os.path.join(home, "run", "sockets", ids[0].decode() + ".sock")
    if not os.path.exists(path):
        raise RuntimeError(f"{path} does not exist")
    return ids[0].decode(), path


def unix_get(path, target):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        data += c
    s.close()
    h = data.find(b"\r\n\r\n")
    return int(data[9:12]), data[h + 4:]


def warm(args, api, out):
    backends = [("python", "python3", "python-hello"), ("node", "node", "node-hello")]
    if args.backends:
        backends = [b for b in backends if b[0] in args.backends.split(",")]
    conn = RawConn(args.port)
    info = {"backends": {}, "rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup,
            "concurrency": [1, args.conns], "wrk": {"threads": 2, "connections": args.conns}}
    for name, runtime, example in backends:
        digest = api.upload(os.path.join(ROOT, "examples", example))
        app = f"hello-{name}"
        spec = {"runtime": runtime, "package": digest, "concurrency": 64, "minInstances": 1, "maxInstances": 1}
        api.put_app(app, spec)
        for _ in range(200):
            _, st, body = conn.request(get_request(f"/fn/default/{app}/", args.token))
            assert st == 200, (st, body)
        iid, sock = instance_socket(api, args.home, app)
        info["backends"][name] = {"app": app, "spec": spec, "instance": iid, "socket": sock,
                                  "body": body.decode(errors="replace")}
    conn.s.close()

    # nginx: one worker (legiond is one event loop on one thread), no access
    # log, keep-alive connections to the instance socket.
    ng = proxy.Nginx(os.path.join(out, "nginx"), args.nginx_workers,
                     {name: f"unix:{b['socket']}" for name, b in info["backends"].items()},
                     os.path.join(out, "nginx.pid.bench"))
    info["nginx"] = ng.info
    try:
        nport = ng.port
        targets = {}
        for name, b in info["backends"].items():
            targets[name] = {
                "router": (f"127.0.0.1:{args.port}", f"/fn/default/{b['app']}/"),
                "direct": (f"unix:{b['socket']}", "/"),
                "nginx": (f"127.0.0.1:{nport}", f"/{name}/"),
            }
            # Same answer from the three.
            c = http.client.HTTPConnection("127.0.0.1", args.port)
            c.request("GET", targets[name]["router"][1], headers={"Authorization": "Bearer " + args.token})
            r1 = c.getresponse().read()
            c = http.client.HTTPConnection("127.0.0.1", nport)
            c.request("GET", targets[name]["nginx"][1])
            r3 = c.getresponse().read()
            st, r2 = unix_get(b["socket"], "/")
            if not (r1 == r2 == r3 and st == 200):
                raise RuntimeError(f"{name}: the three targets disagree: {r1!r} {r2!r} {r3!r}")
        # Whose CPU time is the proxy's: legiond's, or nginx's workers'.
        runs = proxy.load_rounds(args.httpload, targets, {"router": [args.legiond_pid], "nginx": ng.workers},
                                 args.rounds, args.conns, args.duration, args.warmup, args.wrk_duration,
                                 f"Authorization: Bearer {args.token}", log)
    finally:
        ng.stop()
    for name, b in info["backends"].items():
        st = api.app(b["app"])["status"]
        b["status_after"] = st
        api.delete_app(b["app"])
    info["runs"] = runs
    json.dump(info, open(os.path.join(out, "warm.json"), "w"), indent=1)


# ---- 3. burst ----------------------------------------------------------------

def served_by(doc):
    """Answers per instance id (None: no id) of a burst's httpload -B result;
    takes the answers out of doc."""
    served = {}
    for a in doc.pop("answers"):
        try:
            iid = json.loads(a["body"])["instance"]
        except ValueError:
            iid = None
        served[iid] = served.get(iid, 0) + 1
    return served


def ready_times(api, app):
    """The app's instance ready times from its log, ms: (from a placeholder,
    made on demand), and the log's text."""
    _, text = api.call("GET", f"/v1/namespaces/default/apps/{app}/logs", raw=True)
    return ([float(x) for x in re.findall(rb"ready in ([\d.]+) ms \(from a placeholder\)", text)],
            [float(x) for x in re.findall(rb"ready in ([\d.]+) ms \(no placeholder ready\)", text)], text)


def burst(args, api, out):
    digest = api.upload(os.path.join(ROOT, "bench", "functions", "apps", "burst"))
    # The cold part sets the python3 pool group's ready count; run alone
    # (FN_PARTS=burst), the burst part sets it the same way.
    py = api.pool("python3")
    if py["spec"]["ready"] != args.pool_ready:
        spec = dict(py["spec"])
        spec["ready"] = args.pool_ready
        api.call("PUT", "/v1/poolgroups/python3", spec)
    target = args.pool_ready
    # (concurrency, maxInstances, seconds the function sleeps)
    variants = [(10, 10, 0), (10, 20, 0), (1, 50, 0), (1, 200, 0), (10, 20, 0.1), (1, 200, 0.1)]
    res = {"requests": args.burst_n, "pool_ready": target, "variants": []}
    for conc, mx, sleep in variants:
        api.wait_pool("python3", lambda st: st["ready"] >= target and st["starting"] == 0, what="pool full")
        time.sleep(1)
        load = open("/proc/loadavg").read().split()[:3]
        app = f"burst-c{conc}-m{mx}" + (f"-s{int(sleep * 1000)}ms" if sleep else "")
        api.put_app(app, {"runtime": "python3", "package": digest, "concurrency": conc, "maxInstances": mx})
        p0 = api.pool("python3")["status"]
        path = f"/fn/default/{app}/" + (f"?sleep={sleep}" if sleep else "")
        p = subprocess.run([args.httpload, "-b", "-B", "-c", str(args.burst_n), "-t", "1", "-l", app,
                            "-H", f"Authorization: Bearer {args.token}",
                            f"127.0.0.1:{args.port}", path], capture_output=True, text=True, check=True)
        t_done = time.monotonic()
        doc = json.loads(p.stdout)
        st = api.app(app)["status"]
        p1 = api.pool("python3")["status"]
        served = served_by(doc)
        # Instances still starting finish (nothing waits for them), then count.
        deadline = time.monotonic() + 60
        while True:
            st2 = api.app(app)["status"]
            if st2["starting"] == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        settle = time.monotonic() - t_done
        ready_ms, ready_cold_ms, _ = ready_times(api, app)
        api.delete_app(app)
        v = {"app": app, "concurrency": conc, "maxInstances": mx, "sleep_s": sleep, "load_before": load,
             "httpload": doc, "status_right_after": st, "status_settled": st2, "settle_s": settle,
             "instances_that_answered": len([k for k in served if k]), "answers_per_instance": served,
             "pool_taken": p1["taken"] - p0["taken"], "pool_on_demand": p1["onDemand"] - p0["onDemand"],
             "pool_ready_before": p0["ready"],
             "instance_ready_ms_placeholder": summary(ready_ms), "instance_ready_ms_on_demand": summary(ready_cold_ms)}
        res["variants"].append(v)
        log(f"burst {app}: {doc['requests']} answered ({doc['status']['2xx']} 2xx) in {doc['all_answered_ms']:.1f} ms "
            f"by {v['instances_that_answered']} instances; right after: {st['instances']} ready + {st['starting']} "
            f"starting, {st['coldStarts']['count']} cold starts; all started {settle:.2f} s later")
    json.dump(res, open(os.path.join(out, "burst.json"), "w"), indent=1)


# ---- 4. scale: 0 to N instances ------------------------------------------------

def meminfo():
    m = {}
    for line in open("/proc/meminfo"):
        k, v = line.split(":", 1)
        m[k] = int(v.split()[0]) * 1024
    return m


def scale(args, api, out):
    """N requests at once at an app with concurrency 1 and maxInstances N,
    each holding its instance for --scale-hold seconds: the router must bring
    up N instances for all of them to be served before the first frees one.
    The app's status is polled meanwhile: time until N are ready, and the
    host's memory, pids and legiond's fds at that point."""
    n = args.scale_n
    digest = api.upload(os.path.join(ROOT, "bench", "functions", "apps", "burst"))
    target = api.pool("python3")["spec"]["ready"]
    api.wait_pool("python3", lambda st: st["ready"] >= target and st["starting"] == 0, what="pool full")
    time.sleep(1)
    app = f"scale-{n}"
    spec = {"runtime": "python3", "package": digest, "concurrency": 1, "maxInstances": n,
            "timeoutSeconds": 3600, "idleTimeoutSeconds": 3600}
    api.put_app(app, spec)
    mem0, load0 = meminfo(), open("/proc/loadavg").read().split()
    fds0 = len(os.listdir(f"/proc/{args.legiond_pid}/fd"))
    p0 = api.pool("python3")["status"]
    # legiond takes at most 256 connections from one address (docs/api.md):
    # the N clients come from as many loopback addresses as that needs.
    sources = (n + 199) // 200
    cmd = [args.httpload, "-b", "-B", "-c", str(n), "-t", "4", "-s", str(sources), "-l", app,
           "-H", f"Authorization: Bearer {args.token}", f"127.0.0.1:{args.port}",
           f"/fn/default/{app}/?sleep={args.scale_hold}"]
    t0 = time.monotonic()
    hl = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples, t_all_up, peak = [], None, None
    while hl.poll() is None:
        st = api.app(app)["status"]
        t = time.monotonic() - t0
        m = meminfo()
        used = mem0["MemAvailable"] - m["MemAvailable"]
        samples.append({"t": t, "ready": st["instances"], "starting": st["starting"], "queued": st.get("queued"),
                        "mem_used": used})
        if t_all_up is None and st["instances"] >= n:
            t_all_up = t
            peak = {"t": t, "mem_available_drop": used, "mem_available": m["MemAvailable"],
                    "pids": int(open("/proc/loadavg").read().split()[3].split("/")[1]),
                    "legiond_fds": len(os.listdir(f"/proc/{args.legiond_pid}/fd"))}
            log(f"scale: {n} instances ready after {t:.1f} s")
        time.sleep(0.2)
    stdout, stderr = hl.communicate()
    if hl.returncode != 0:
        raise RuntimeError(f"httpload failed: {stderr}")
    doc = json.loads(stdout)
    served = served_by(doc)
    st = api.app(app)["status"]
    p1 = api.pool("python3")["status"]
    ready_ms, ready_cold_ms, text = ready_times(api, app)
    failed = len(re.findall(rb"failed to start", text))
    t_del = time.monotonic()
    api.delete_app(app)
    # Deleting the app destroys its instances: wait for their memory to
    # come back (as far as it does) so that what follows starts clean.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and meminfo()["MemAvailable"] < mem0["MemAvailable"] - (256 << 20):
        time.sleep(0.5)
    res = {"n": n, "hold_s": args.scale_hold, "spec": spec, "pool_ready": target, "sources": sources,
           "command": " ".join(["bench/functions/httpload"] + cmd[1:-4] + ["-H", "'Authorization: Bearer ...'"] + cmd[-2:]),
           "httpload": doc, "status_after": st, "instances_that_answered": len([k for k in served if k]),
           "answers_per_instance_max": max(served.values()) if served else 0,
           "t_all_up_s": t_all_up, "at_all_up": peak, "samples": samples,
           "pool_taken": p1["taken"] - p0["taken"], "pool_on_demand": p1["onDemand"] - p0["onDemand"],
           "instance_ready_ms_placeholder": summary(ready_ms), "instance_ready_ms_on_demand": summary(ready_cold_ms),
           "instances_failed_to_start": failed, "mem_total": mem0["MemTotal"], "mem_available_before": mem0["MemAvailable"],
           "mem_available_after_delete": meminfo()["MemAvailable"], "delete_settle_s": time.monotonic() - t_del,
           "legiond_fds_before": fds0, "load_before": load0[:3], "pid_max": int(open("/proc/sys/kernel/pid_max").read()),
           "legiond_nofile": open(f"/proc/{args.legiond_pid}/limits").read()}
    log(f"scale: {doc['status']['2xx']}/{n} answered 2xx in {doc['all_answered_ms'] / 1000:.1f} s by "
        f"{res['instances_that_answered']} instances; all {n} up after "
        f"{'never' if t_all_up is None else f'{t_all_up:.1f} s'}")
    json.dump(res, open(os.path.join(out, "scale.json"), "w"), indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--home", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--httpload", required=True)
    ap.add_argument("--legiond-pid", type=int, required=True)
    ap.add_argument("--parts", default="cold,warm,burst")
    ap.add_argument("--cold-n", type=int, default=200)
    ap.add_argument("--egress", choices=("on", "off"), default="off",
                    help="cold: also apps with egress off, alternating with the default (on); "
                         "for a legiond with its network on (issue 11)")
    ap.add_argument("--pool-ready", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=4)
    ap.add_argument("--warmup", type=float, default=1)
    ap.add_argument("--wrk-duration", type=int, default=5)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--nginx-workers", default="1")
    ap.add_argument("--backends", default="")
    ap.add_argument("--burst-n", type=int, default=200)
    ap.add_argument("--scale-n", type=int, default=500)
    ap.add_argument("--scale-hold", type=float, default=300)
    args = ap.parse_args()
    args.token = harness.read_token(args.home)
    api = Api(args.port, args.token)
    parts = args.parts.split(",")
    for part, fn in (("cold", cold), ("warm", warm), ("burst", burst), ("scale", scale)):
        if part in parts:
            t = time.monotonic()
            log(f"{part}: start")
            fn(args, api, args.out)
            log(f"{part}: done in {time.monotonic() - t:.0f} s")


if __name__ == "__main__":
    main()
