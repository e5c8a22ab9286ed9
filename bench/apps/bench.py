#!/usr/bin/python3
"""The container apps benchmark's driver (bench/apps/run.sh starts legiond
and runs this; see run.sh for the whole picture).

Parts, each writing raw JSON into OUT:
  image    the server image (Python http.server, bench/apps/server.py) in
           two versions, built from host files and imported
  cold     one request to a new container app: from a warm image pool in
           placeholder mode `sandbox`, from one in mode `process`, with no
           pool, and `runc run -d` of the same image and server until its
           port answers; interleaved app by app
  proxy    httpload and wrk through legiond's router, straight to the
           instance's ip:port, and through nginx to the same ip:port
  rolling  an image pool group of N (20): time from PUT of the other image
           until its status says the replacement is done, and the most
           warm sandboxes missing at once; the pool's fill from nothing
           beside it

Every figure in the report comes from these files."""
import argparse
import http.client
import importlib.util
import os
import py_compile
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench", "lib"))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import harness  # noqa: E402
import oci_kit  # noqa: E402
import proxy  # noqa: E402
from runc import Runc  # noqa: E402

log = harness.logger("bench/apps")
write, summary = harness.write_json, harness.summary
PORT = 8080                   # the server's port in every sandbox and container
READY_PATH = "/healthz"       # any path answers 200
REFS = {1: "apps-server:1", 2: "apps-server:2"}
SERVER = os.path.join(ROOT, "bench", "apps", "server.py")


class Api(harness.Api):
    """JSON asked for, long image operations allowed."""

    timeout = 300
    ok = (200, 201, 202, 204)
    json_headers = True

    def put_pool(self, name, spec):
        return self.call("PUT", f"/v1/poolgroups/{name}", spec)[1]


def get_request(path, token=None):
    h = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if token:
        h += f"Authorization: Bearer {token}\r\n"
    return (h + "\r\n").encode()


# ---- the image -------------------------------------------------------------------

def pyc_layer_entries():
    """__pycache__ entries (tar_layer form) for the standard library modules
    the server loads, compiled as unchecked-hash .pyc: oci_kit's
    python_layer has sources only (their mtimes rewritten), so without these
    every start in a fresh sandbox would compile them again, while runc's
    one rootfs would keep what its first run wrote. Which modules: those a
    copy of the server on the host has loaded after one request."""
    port = harness.free_port()
    srv = subprocess.Popen(["/usr/bin/python3", "-I", SERVER, str(port)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/")
                c.getresponse().read()
                c.request("GET", "/modules")
                files = c.getresponse().read().decode().split("\n")
                break
            except OSError:
                if time.monotonic() > deadline or srv.poll() is not None:
                    raise RuntimeError(f"the server did not start on the host: {srv.stderr.read()[:400]}")
                time.sleep(0.05)
    finally:
        srv.kill()
        srv.wait()
    lib = os.path.dirname(os.__file__) + "/"
    entries, dirs = [], set()
    with tempfile.TemporaryDirectory() as tmp:
        for src in files:
            if not (src.startswith(lib) and src.endswith(".py")) or "-packages/" in src:
                continue
            cfile = importlib.util.cache_from_source(src)
            out = os.path.join(tmp, "x.pyc")
            py_compile.compile(src, cfile=out, dfile=src, doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
            d = os.path.dirname(cfile).lstrip("/")
            if d not in dirs:
                dirs.add(d)
                entries.append((d, "dir"))
            entries.append((cfile.lstrip("/"), "file", open(out, "rb").read()))
    return entries


def part_image(args, api):
    t0 = time.monotonic()
    python = oci_kit.python_layer()
    app = oci_kit.tar_layer([("srv", "dir"), ("srv/server.py", "file", open(SERVER, "rb").read())] +
                            pyc_layer_entries())
    images = {}
    for v, ref in REFS.items():
        # The versions differ in their config only (VERSION): another image
        # id, the same layers.
        images[v] = oci_kit.Image([python, app], compression="none", config={
            "Cmd": ["/usr/bin/python3", "/srv/server.py", str(PORT)], "WorkingDir": "/srv",
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", f"VERSION={v}"],
            "ExposedPorts": {f"{PORT}/tcp": {}}})
    archive = os.path.join(args.out, "apps-server.tar")
    oci_kit.write_docker_archive(archive, [(images[v], [ref]) for v, ref in REFS.items()])
    built = time.monotonic() - t0
    env = dict(os.environ, LEGION_API=f"http://127.0.0.1:{args.port}", LEGION_HOME=args.home)
    t0 = time.monotonic()
    p = subprocess.run([args.legion, "image", "import", archive], env=env, capture_output=True)
    if p.returncode:
        raise RuntimeError(f"legion image import: {p.returncode} {p.stderr.decode()[:400]}")
    imported = time.monotonic() - t0
    res = {"build_s": built, "import_s": imported, "archive_bytes": os.path.getsize(archive),
           "layer_bytes": [len(python), len(app)], "refs": REFS, "images": {}}
    for v, ref in REFS.items():
        doc = api.call("GET", "/v1/images/" + urllib.parse.quote(ref, safe=""))[1]
        res["images"][v] = {"ref": ref, "id": images[v].id, "config": images[v].config["config"], "stored": doc}
    os.unlink(archive)
    log(f"image: built in {built:.1f} s, imported in {imported:.1f} s")
    write(args.out, "image.json", res)
    return res


# ---- cold start --------------------------------------------------------------------

def http_get_once(host, port, path, timeout=5):
    """One GET on a new connection: (status, body)."""
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


class Netns:
    """A network namespace with a veth to the host (transfer /30 of
    100.64.0.0/10, never the host's), for runc's containers: made once,
    untimed, as a CNI plugin would have made it before `runc run`."""

    def __init__(self, name, link, host_ip, ns_ip):
        self.name, self.link, self.ns_ip = name, link, ns_ip
        self.path = f"/run/netns/{name}"
        cmds = [["ip", "netns", "add", name],
                ["ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", name],
                ["ip", "addr", "add", f"{host_ip}/30", "dev", link],
                ["ip", "link", "set", link, "up"],
                ["ip", "-n", name, "addr", "add", f"{ns_ip}/30", "dev", "eth0"],
                ["ip", "-n", name, "link", "set", "eth0", "up"],
                ["ip", "-n", name, "link", "set", "lo", "up"]]
        try:
            for c in cmds:
                subprocess.run(c, check=True, capture_output=True)
        except subprocess.CalledProcessError as e:
            self.delete()
            raise RuntimeError(f"{' '.join(e.cmd)}: {e.stderr.decode()[:300]}")

    def delete(self):
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.link], capture_output=True)


def runc_until_answer(runc, ip, every):
    """`runc run -d` of the server, then a GET on a new connection, again
    after each failed one, until one is answered 200: (seconds from runc's
    start, seconds until `runc run -d` returned, attempts). `every` is the
    pause in seconds, or (first, longest): the pause doubling from first up
    to longest, as legiond's readiness probe does. The container is deleted
    after (untimed)."""
    pause, longest = every if isinstance(every, tuple) else (every, every)
    t0, cid = runc.start("server")
    t_run = time.perf_counter() - t0
    attempts = 0
    try:
        while True:
            attempts += 1
            try:
                st, _ = http_get_once(ip, PORT, "/")
                if st == 200:
                    return time.perf_counter() - t0, t_run, attempts
            except OSError:
                pass
            if time.perf_counter() - t0 > 60:
                raise RuntimeError(f"runc: port {PORT} never answered")
            time.sleep(pause)
            pause = min(pause * 2, longest)
    finally:
        runc.delete(cid)


def part_cold(args, api, img):
    n, ready = args.cold_n, args.pool_ready
    base = {"image": REFS[1], "port": PORT}
    pools = {
        "sandbox": {"image": REFS[1], "ready": ready, "placeholder": "sandbox"},
        "process": {"image": REFS[1], "ready": ready, "placeholder": "process", "port": PORT,
                    "readinessPath": READY_PATH},
    }
    pools = {k: v for k, v in pools.items() if f"pool-{k}" in args.cold_variants.split(",")}
    for mode, spec in pools.items():
        api.put_pool(f"apps-{mode}", spec)

    def at_rest(st):
        return st["ready"] >= ready and st["starting"] == 0

    def all_at_rest():
        return {m: api.wait_pool(f"apps-{m}", at_rest, what=f"pool apps-{m} full") for m in pools}

    all_at_rest()
    # runc: the same layers (legiond's store, lowest first) in one rootfs,
    # the image's command, in a network namespace made beforehand.
    doc = img["images"][1]["stored"]
    layer_dirs = [os.path.join(args.home, "images", "layers", d.split(":")[1]) for d in reversed(doc["layers"])]
    netns = Netns(args.netns, args.netns_link, "100.66.12.1", "100.66.12.2")
    cfg = img["images"][1]["config"]
    runc = Runc(args.out, layer_dirs, {"server": cfg["Cmd"]}, netns=netns.path, env=cfg["Env"],
                cwd=cfg["WorkingDir"])
    # legiond answers 502/503 when an instance cannot start (issue 12); a
    # request still unanswered after 90 s is a failure of the run.
    conn = harness.RawConn(args.port, timeout=90)
    variants = {
        "pool-sandbox": dict(base, poolGroup="apps-sandbox", readinessPath=READY_PATH),
        "pool-process": dict(base, poolGroup="apps-process"),
        "no-pool": dict(base, readinessPath=READY_PATH),
        "runc": 0.0005,
        # legiond's readiness probe: 1 ms after the first try, the pause
        # doubling up to 50 ms (src/node/probe.h): runc's server found as
        # late as legiond would find it.
        "runc-probe": (0.001, 0.05),
    }
    variants = {k: v for k, v in variants.items() if k in args.cold_variants.split(",")}
    res = {"n": n, "pool_ready": ready, "pool_specs": pools, "app_specs": variants, "port": PORT,
           "client": "Python raw socket (bench/lib/harness.py RawConn), one keep-alive TCP connection to "
                     "legiond for all apps; time.perf_counter_ns around sendall + reading the whole response",
           "runc": {"netns": args.netns, "ip": netns.ns_ip, "rootfs": runc.rootfs,
                    "bundle": runc.bundles["server"]},
           "variants": {v: {"rows": [], "failures": []} for v in variants}}
    seq = 0
    t_start = time.monotonic()
    try:
        for i in range(-args.warmup, n):
            for name, spec in variants.items():
                if not isinstance(spec, dict):
                    # Untimed: the pools at rest, as before a legion variant.
                    all_at_rest()
                    dt, t_run, attempts = runc_until_answer(runc, netns.ns_ip, spec)
                    if i >= 0:
                        res["variants"][name]["rows"].append({"i": i, "ms": dt * 1000, "run_ms": t_run * 1000,
                                                              "attempts": attempts})
                    continue
                seq += 1
                app = f"cs-{seq}"
                api.put_app(app, spec)
                before = all_at_rest()
                pool = spec.get("poolGroup")
                ns, status, body = conn.request(get_request(f"/fn/default/{app}/", args.token))
                warm_ns, warm_status, _ = conn.request(get_request(f"/fn/default/{app}/", args.token))
                st = api.app(app)["status"]
                after = api.pool(pool)["status"] if pool else None
                _, text = api.call("GET", f"/v1/namespaces/default/apps/{app}/logs", raw=True)
                m = re.search(rb"ready in ([\d.]+) ms \(([^)]*)\)", text)
                api.delete_app(app)
                if i < 0:
                    continue
                cs = st.get("coldStarts") or {}
                row = {"i": i, "app": app, "ms": ns / 1e6, "status": status, "body": body[:80].decode(errors="replace"),
                       "warm_ms": warm_ns / 1e6, "warm_status": warm_status, "cold_starts": cs.get("count"),
                       "server_ms": cs.get("lastMs"), "conditions": st.get("conditions"),
                       "instance_ready_ms": float(m.group(1)) if m else None,
                       "instance_from": m.group(2).decode() if m else None}
                if pool:
                    b = before[pool.split("-", 1)[1]]
                    row.update({"pool_ready_before": b["ready"], "taken": after["taken"] - b["taken"],
                                "on_demand": after["onDemand"] - b["onDemand"]})
                ok = (status == 200 and warm_status == 200 and b"version 1" in body and cs.get("count") == 1 and
                      (not pool or (row["taken"] == 1 and row["on_demand"] == 0 and
                                    row["instance_from"] == "from a placeholder")))
                res["variants"][name]["rows"].append(row)
                if not ok:
                    res["variants"][name]["failures"].append(row)
            if i >= 0 and (i + 1) % 20 == 0:
                log(f"cold: {i + 1}/{n} ({time.monotonic() - t_start:.0f} s)")
    finally:
        conn.s.close()
        runc.cleanup()
        netns.delete()
        for mode in pools:
            api.call("DELETE", f"/v1/poolgroups/apps-{mode}", ok=())
    for name, v in res["variants"].items():
        v["client_ms"] = summary([r["ms"] for r in v["rows"]])
        v["server_ms"] = summary([r["server_ms"] for r in v["rows"] if r.get("server_ms") is not None])
        v["warm_ms"] = summary([r["warm_ms"] for r in v["rows"] if "warm_ms" in r])
        v["instance_ready_ms"] = summary([r["instance_ready_ms"] for r in v["rows"]
                                          if r.get("instance_ready_ms") is not None])
        v["run_ms"] = summary([r["run_ms"] for r in v["rows"] if "run_ms" in r])
        s = v["client_ms"]
        log(f"cold {name}: n={s['n']} p50={s['p50']:.2f} ms p99={s['p99']:.2f} ms, {len(v['failures'])} failed checks")
    res["elapsed_s"] = time.monotonic() - t_start
    write(args.out, "cold.json", res)


# ---- warm path: router, direct, nginx -----------------------------------------------

def part_proxy(args, api):
    app = "apps-web"
    spec = {"image": REFS[1], "port": PORT, "readinessPath": READY_PATH, "concurrency": 64,
            "minInstances": 1, "maxInstances": 1}
    api.put_app(app, spec)
    conn = harness.RawConn(args.port, timeout=90)
    for _ in range(200):
        _, st, body = conn.request(get_request(f"/fn/default/{app}/", args.token))
        if st != 200:
            raise RuntimeError(f"{app}: {st} {body[:300]!r}")
    conn.s.close()
    status = api.app(app)["status"]
    addrs = status.get("addresses") or []
    if len(addrs) != 1:
        raise RuntimeError(f"{app}: expected one address in its status, found {addrs}")
    ip = addrs[0].rsplit(":", 1)[0] if addrs[0].count(".") == 3 and ":" in addrs[0] else addrs[0]
    direct = f"{ip}:{PORT}"
    info = {"app": app, "spec": spec, "address": addrs[0], "direct": direct, "body": body.decode(errors="replace"),
            "rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.load_warmup,
            "concurrency": [1, args.conns], "wrk": {"threads": 2, "connections": args.conns}}
    ng = proxy.Nginx(os.path.join(args.out, "nginx"), args.nginx_workers, {"web": direct},
                     os.path.join(args.out, "nginx.pid.bench"))
    info["nginx"] = ng.info
    try:
        targets = {"web": {"router": (f"127.0.0.1:{args.port}", f"/fn/default/{app}/"),
                           "direct": (direct, "/"),
                           "nginx": (f"127.0.0.1:{ng.port}", "/web/")}}
        # Same answer from the three.
        c = http.client.HTTPConnection("127.0.0.1", args.port)
        c.request("GET", targets["web"]["router"][1], headers={"Authorization": "Bearer " + args.token})
        r1 = c.getresponse().read()
        _, r2 = http_get_once(ip, PORT, "/")
        _, r3 = http_get_once("127.0.0.1", ng.port, "/web/")
        if not (r1 == r2 == r3):
            raise RuntimeError(f"the three targets disagree: {r1!r} {r2!r} {r3!r}")
        info["runs"] = proxy.load_rounds(args.httpload, targets, {"router": [args.legiond_pid], "nginx": ng.workers},
                                         args.rounds, args.conns, args.duration, args.load_warmup, args.wrk_duration,
                                         f"Authorization: Bearer {args.token}", log)
    finally:
        ng.stop()
    info["status_after"] = api.app(app)["status"]
    api.delete_app(app)
    write(args.out, "proxy.json", info)


# ---- rolling replacement ---------------------------------------------------------

def part_rolling(args, api):
    n = args.roll_n
    res = {"n": n, "runs": []}
    for mode in args.roll_modes.split(","):
        for mu in [int(x) for x in args.roll_max_unavailable.split(",")]:
            name = f"roll-{mode}-{mu}"
            spec = {"image": REFS[1], "ready": n, "placeholder": mode, "upgrade": {"maxUnavailable": mu}}
            if mode == "process":
                spec.update({"port": PORT, "readinessPath": READY_PATH})
            # The reference: the same pool made from nothing, which is what
            # replacing every sandbox at once would cost (n missing meanwhile).
            t0 = time.monotonic()
            api.put_pool(name, spec)
            full = api.wait_pool(name, lambda st: st["ready"] >= n and st["starting"] == 0,
                                 what=f"{name} full", timeout=180, every=0.01)
            fill_s = time.monotonic() - t0
            time.sleep(0.5)
            spec2 = dict(spec, image=REFS[2])
            samples = []
            t0 = time.monotonic()
            api.put_pool(name, spec2)
            while True:
                st = api.pool(name)["status"]
                t = time.monotonic() - t0
                samples.append({"t": t, "ready": st.get("ready"), "starting": st.get("starting"),
                                "updated": st.get("updated"), "outdated": st.get("outdated"),
                                "rolling": st.get("rolling")})
                if not st.get("rolling") and st.get("updated", 0) >= n and st.get("outdated", 1) == 0:
                    break
                if t > 180:
                    raise RuntimeError(f"{name}: the replacement did not finish in 180 s: {st}")
                time.sleep(0.01)
            done_s = time.monotonic() - t0
            final = api.pool(name)
            api.call("DELETE", f"/v1/poolgroups/{name}")
            # The status' own word: the first poll with `rolling` false
            # (the old sandboxes gone; new ones may still be starting).
            not_rolling = next((s["t"] for s in samples if not s["rolling"]), None)
            avail = [s["updated"] + s["outdated"] for s in samples
                     if s["updated"] is not None and s["outdated"] is not None]
            run = {"pool": name, "mode": mode, "max_unavailable": mu, "spec": spec, "fill_s": fill_s,
                   "full_status": full, "replace_s": done_s, "not_rolling_s": not_rolling, "samples": samples, "final": final,
                   "max_missing_observed": n - min(avail) if avail else None, "polls": len(samples)}
            res["runs"].append(run)
            log(f"rolling {name}: fill from nothing {fill_s:.2f} s, replacement {done_s:.2f} s, "
                f"at most {run['max_missing_observed']} missing ({len(samples)} polls)")
    write(args.out, "rolling.json", res)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--home", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--legion", required=True)
    ap.add_argument("--httpload", required=True)
    ap.add_argument("--legiond-pid", type=int, required=True)
    ap.add_argument("--netns", required=True, help="the network namespace made for runc's containers")
    ap.add_argument("--netns-link", required=True, help="the host end of its veth")
    ap.add_argument("--parts", default="cold,proxy,rolling")
    ap.add_argument("--cold-n", type=int, default=100)
    ap.add_argument("--cold-variants", default="pool-sandbox,pool-process,no-pool,runc,runc-probe")
    ap.add_argument("--warmup", type=int, default=3, help="untimed cold starts of each variant first")
    ap.add_argument("--pool-ready", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=2)
    ap.add_argument("--load-warmup", type=float, default=0.5)
    ap.add_argument("--wrk-duration", type=int, default=3)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--nginx-workers", default="1")
    ap.add_argument("--roll-n", type=int, default=20)
    ap.add_argument("--roll-modes", default="sandbox,process")
    ap.add_argument("--roll-max-unavailable", default="1")
    args = ap.parse_args()
    args.token = harness.read_token(args.home)
    api = Api(args.port, args.token)
    parts = args.parts.split(",")
    failed = False
    try:
        img = part_image(args, api)
    except Exception as e:  # noqa: BLE001 -- recorded for the report; nothing else can run
        log(f"part image failed: {e}")
        write(args.out, "image-error.json", {"error": str(e)})
        sys.exit(1)
    for part, fn in (("cold", lambda: part_cold(args, api, img)), ("proxy", lambda: part_proxy(args, api)),
                     ("rolling", lambda: part_rolling(args, api))):
        if part not in parts:
            continue
        t = time.monotonic()
        log(f"{part}: start")
        try:
            fn()
        except Exception as e:  # noqa: BLE001 -- recorded for the report, then the next part
            failed = True
            log(f"part {part} failed: {e}")
            write(args.out, f"{part}-error.json", {"error": str(e)})
        log(f"{part}: done in {time.monotonic() - t:.0f} s")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
