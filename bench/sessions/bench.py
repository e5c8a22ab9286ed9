#!/usr/bin/python3
"""The sessions benchmark's driver (bench/sessions/run.sh starts legiond and
runs this; see run.sh for the whole picture).

Three parts, each writing raw JSON into OUT:
  first    time from the first execution request for a new identifier to its
           answer (`print(1)`), with a ready pool and without one
  tput     executions per second on one warm session (through legiond and
           straight to the worker's socket) and across 50 sessions at once
  density  memory per idle ready session, the pool grown in steps to 1,000

Every figure in the report comes from these files."""
import argparse
import glob
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
import harness  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")

log = harness.logger("bench/sessions")
RawConn, summary, write_json = harness.RawConn, harness.summary, harness.write_json


class Api(harness.Api):
    def put_pool(self, name, spec):
        return self.call("PUT", f"/v1/sessionpools/{name}", spec)[1]

    def pool_status(self, name):
        return self.call("GET", f"/v1/sessionpools/{name}")[1]["status"]

    def delete_pool(self, name):
        self.call("DELETE", f"/v1/sessionpools/{name}")

    def execute(self, pool, ident, code):
        st, doc = self.call("POST", f"/v1/sessionpools/{pool}/executions?identifier={ident}", {"code": code})
        if doc.get("status") != "Succeeded":
            raise RuntimeError(f"execution in {ident} failed: {doc}")
        return doc

    def delete_session(self, pool, ident):
        self.call("DELETE", f"/v1/sessionpools/{pool}/sessions/{ident}")


def request_bytes(method, path, token=None, body=None):
    h = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if token:
        h += f"Authorization: Bearer {token}\r\n"
    if body is not None:
        h += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (h + "\r\n").encode() + (body or b"")


# ---- the machine -------------------------------------------------------------

class Host:
    def __init__(self, cgroup_parent, legiond_pid, home):
        self.cg = f"/sys/fs/cgroup/memory/{cgroup_parent}"
        self.cgroup_parent = cgroup_parent
        self.pid = legiond_pid
        self.home = home

    def sandboxes(self):
        """The sandboxes' memory cgroups (one per sandbox, named by the instance)."""
        return sorted(glob.glob(os.path.join(self.cg, "i-*")))

    def cg_usage(self):
        """(count, sum of memory.usage_in_bytes) over the sandboxes' cgroups."""
        n = total = 0
        for d in self.sandboxes():
            try:
                with open(os.path.join(d, "memory.usage_in_bytes")) as f:
                    total += int(f.read())
                n += 1
            except OSError:
                pass
        return n, total

    def cg_parent(self):
        out = {}
        for f in ("memory.usage_in_bytes", "memory.kmem.usage_in_bytes"):
            try:
                with open(os.path.join(self.cg, f)) as fh:
                    out[f] = int(fh.read())
            except OSError:
                pass
        try:
            with open(os.path.join(self.cg, "memory.stat")) as fh:
                st = dict(line.split() for line in fh)
            for k in ("total_rss", "total_cache", "total_shmem", "total_mapped_file", "total_kernel_stack"):
                if k in st:
                    out[k] = int(st[k])
        except OSError:
            pass
        return out

    @staticmethod
    def meminfo():
        out = {}
        with open("/proc/meminfo") as f:
            for line in f:
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0])  # KiB
        return out

    def legiond(self):
        out = {}
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    k, v = line.split(":", 1)
                    if k in ("VmRSS", "Threads"):
                        out[k] = int(v.split()[0])
            out["fds"] = len(os.listdir(f"/proc/{self.pid}/fd"))
            with open(f"/proc/{self.pid}/limits") as f:
                for line in f:
                    if line.startswith("Max open files"):
                        out["nofile_soft"], out["nofile_hard"] = line.split()[3:5]
            out["cpu_s"] = self.legiond_cpu()
        except OSError as e:
            out["error"] = str(e)
        return out

    def legiond_cpu(self):
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    @staticmethod
    def cpu_busy():
        """(busy, total) jiffies of the whole machine."""
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + v[4]
        return sum(v) - idle, sum(v)

    @staticmethod
    def tasks():
        with open("/proc/loadavg") as f:
            la = f.read().split()
        return {"loadavg": la[:3], "tasks": int(la[3].split("/")[1])}

    def runtime_processes(self):
        """Processes of session workers (any legiond's, as the brief asks)."""
        r = subprocess.run(["pgrep", "-f", "/opt/legion/runtime/"], capture_output=True, text=True)
        return [int(p) for p in r.stdout.split()]

    def our_processes(self):
        """Processes in our cgroup parent (sandbox processes do not show
        legiond's command line)."""
        pids = []
        for d in self.sandboxes():
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    pids += [int(p) for p in f.read().split()]
            except OSError:
                pass
        return pids



def wait(pred, timeout, what, interval=0.002):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(interval)


# ---- 1. first execution ------------------------------------------------------

def first(args, api, host, out):
    ready = args.ready
    base = {"runtime": "python3", "maxSessions": 1000, "cooldownSeconds": 600}
    conn = RawConn(args.port)
    code = json.dumps({"code": "print(1)"}).encode()
    results = {"ready": ready, "pool_spec": dict(base, ready=ready),
               "client": "Python raw socket: one keep-alive TCP connection to legiond for all the timed "
                         "requests; time.perf_counter_ns around sendall + reading the whole response",
               "code": "print(1)", "variants": {}}
    # The client's and legiond's floor on this connection: GET /healthz.
    hz = request_bytes("GET", "/healthz")
    for _ in range(50):
        conn.request(hz)
    results["floor_healthz"] = summary([conn.request(hz)[0] / 1e6 for _ in range(args.first_n)])

    seq = [0]

    def one(pool, wait_fn):
        """Wait as told, time one first execution, end the session."""
        seq[0] += 1
        ident = f"first-{seq[0]:05d}"
        t_wait = time.monotonic()
        before = wait_fn()
        waited = time.monotonic() - t_wait
        raw = request_bytes("POST", f"/v1/sessionpools/{pool}/executions?identifier={ident}", args.token, code)
        ns, status, body = conn.request(raw)
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
        ok = status == 200 and doc.get("status") == "Succeeded" and doc.get("stdout") == "1\n"
        address = None
        if results.get("network"):
            address = api.call("GET", f"/v1/sessionpools/{pool}/sessions/{ident}", ok=())[1]
            address = address.get("address") if isinstance(address, dict) else None
        api.delete_session(pool, ident)
        return {"identifier": ident, "ms": ns / 1e6, "status": status, "ok": ok, "address": address,
                "worker_ms": doc.get("executionTimeMs"), "execution": doc.get("execution"),
                "waited_s": round(waited, 4), "before": before,
                "body": None if ok else body[:300].decode(errors="replace")}

    def quiet(pool, n_ready, n_sandboxes=None):
        """The pool is full and nothing is starting or being torn down: as
        many sandbox cgroups as ready placeholders (n_sandboxes: of every
        pool in the run), no more."""
        def pred():
            st = api.pool_status(pool)
            if st["ready"] == n_ready and st["starting"] == 0 and \
                    len(host.sandboxes()) == (n_ready if n_sandboxes is None else n_sandboxes):
                return st
            return None
        return lambda: wait(pred, 30, f"pool {pool} at rest")

    def run_variants(variants, n, warmup=5):
        """variants: [(name, pool, spec, wait_fn)], measured in turn one
        request each, so that drift on the machine hits them alike."""
        for _, pool, spec, _ in variants:
            api.put_pool(pool, spec)
        total = sum(spec["ready"] for _, _, spec, _ in variants)
        wait(lambda: all(api.pool_status(pool)["ready"] >= spec["ready"] for _, pool, spec, _ in variants) and
             len(host.sandboxes()) == total, 60, "pools " + ", ".join(v[1] for v in variants) + " filled")
        cpu0, busy0 = host.legiond_cpu(), host.cpu_busy()
        t0 = time.monotonic()
        for _ in range(warmup):
            for _, pool, _, wait_fn in variants:
                one(pool, wait_fn)
        rows = {name: [] for name, *_ in variants}
        for _ in range(n):
            for name, pool, _, wait_fn in variants:
                rows[name].append(one(pool, wait_fn))
        elapsed = time.monotonic() - t0
        busy1 = host.cpu_busy()
        for _, pool, _, _ in variants:
            api.delete_pool(pool)
        wait(lambda: not host.sandboxes(), 60, "the pools' sandboxes to go")
        for name, pool, spec, wait_fn in variants:
            r = rows[name]
            good = [x["ms"] for x in r if x["ok"]]
            v = {"pool": pool, "spec": spec, "n": n, "warmup": warmup, "wait": wait_fn.__doc__, "rows": r,
                 "interleaved_with": [x[0] for x in variants if x[0] != name],
                 "failures": [x for x in r if not x["ok"]], "ms": summary(good),
                 "worker_ms": summary([x["worker_ms"] for x in r if x["ok"] and x["worker_ms"] is not None]),
                 "elapsed_s": round(elapsed, 2), "legiond_cpu_s": round(host.legiond_cpu() - cpu0, 2),
                 "machine_busy": round((busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]), 3),
                 "loadavg_end": host.tasks()["loadavg"]}
            if any(x.get("address") for x in r):
                v["addresses"] = len({x["address"] for x in r if x.get("address")})
            results["variants"][name] = v
            log(f"first execution, {name}: n={len(good)} p50 {v['ms'].get('p50', 0):.2f} ms "
                f"p99 {v['ms'].get('p99', 0):.2f} ms ({len(v['failures'])} failed)")

    def run_variant(name, pool, spec, n, wait_fn, warmup=5):
        run_variants([(name, pool, spec, wait_fn)], n, warmup)

    # With legiond's network on (issue 11), a pool with egress on (its
    # sessions get an address, NAT'd egress) alternates request by request
    # with the default pool (egress off: loopback only).
    egress = args.egress == "on"
    results["network"] = egress
    if egress:
        w = quiet("first-ready", ready, 2 * ready)
        w.__doc__ = (f"pool full (ready == {ready}, starting == 0) and no sandbox cgroup but the two "
                     "pools' placeholders")
        we = quiet("first-egress", ready, 2 * ready)
        we.__doc__ = w.__doc__
        run_variants([("ready", "first-ready", dict(base, ready=ready), w),
                      ("ready-egress-on", "first-egress", dict(base, ready=ready, egress="on"), we)],
                     args.first_n)
    else:
        w = quiet("first-ready", ready)
        w.__doc__ = f"pool full (ready == {ready}, starting == 0) and no other sandbox cgroup"
        run_variant("ready", "first-ready", dict(base, ready=ready), args.first_n, w)

    def b2b():
        """status.ready >= 1 only (refills and teardowns of earlier ones may run)"""
        return wait(lambda: (lambda st: st if st["ready"] >= 1 else None)(api.pool_status("first-b2b")), 30,
                    "a ready placeholder")
    run_variant("ready-back-to-back", "first-b2b", dict(base, ready=ready), args.b2b_n, b2b)

    w0 = quiet("first-ondemand", 0)
    w0.__doc__ = "no sandbox at all (ready 0, the previous session's sandbox gone)"
    run_variant("on-demand", "first-ondemand", dict(base, ready=0), args.cold_n, w0, warmup=3)

    r, o = results["variants"]["ready"]["ms"], results["variants"]["on-demand"]["ms"]
    if r.get("n") and o.get("n"):
        results["ratio_p50"] = o["p50"] / r["p50"]
        results["ratio_p99"] = o["p99"] / r["p99"]
    write_json(out, "first.json", results)


# ---- 2. executions per second ------------------------------------------------

def sessload(args, target, path, conns, headers=()):
    cmd = [args.sessload, "-c", str(conns), "-d", str(args.duration), "-w", str(args.warmup),
           "-b", json.dumps({"code": "x += 1"})]
    for h in headers:
        cmd += ["-H", h]
    cmd += [target, path]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + args.warmup + 180)
    if r.returncode != 0:
        raise RuntimeError(f"sessload failed: {r.stderr}")
    return json.loads(r.stdout)


def worker_sockets(home):
    """{identifier: Unix socket} of the bound workers: each answers GET
    /health with its identifier (a placeholder does not answer; 0.3 s)."""
    found = {}
    for sock in glob.glob(os.path.join(home, "run", "sockets", "*.sock")):
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(0.3)
            s.connect(sock)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            s.close()
            ident = json.loads(data.split(b"\r\n\r\n", 1)[1]).get("identifier")
            if ident:
                found[ident] = sock
        except (OSError, ValueError, IndexError, AttributeError):
            continue
    return found


def tput(args, api, host, out):
    pool = "tput"
    spec = {"runtime": "python3", "ready": args.ready, "maxSessions": 200, "cooldownSeconds": 600}
    api.put_pool(pool, spec)
    wait(lambda: api.pool_status(pool)["ready"] >= args.ready, 60, "pool tput filled")
    auth = "Authorization: Bearer " + args.token
    res = {"pool_spec": spec, "code": "x += 1", "duration_s": args.duration, "warmup_s": args.warmup,
           "client": "bench/sessions/sessload (C, one thread, epoll, closed loop, keep-alive, "
                     "latency send to last byte)", "runs": {}}

    def measured(name, fn):
        cpu0, busy0 = host.legiond_cpu(), host.cpu_busy()
        r = fn()
        busy1 = host.cpu_busy()
        r["legiond_cpu_s"] = round(host.legiond_cpu() - cpu0, 2)
        r["machine_busy"] = round((busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]), 3)
        r["loadavg_end"] = host.tasks()["loadavg"]
        res["runs"][name] = r
        log(f"executions/s, {name}: {r['good_rate']:.0f}/s, p50 {r['latency_ms']['p50']:.3f} ms, "
            f"p99 {r['latency_ms']['p99']:.3f} ms, {r['bad_status'] + r['bad_body']} bad")
        return r

    # One warm session through legiond, then straight to its worker.
    one = "tput-one"
    api.execute(pool, one, "x = 0")
    r = measured("one-session", lambda: sessload(args, f"127.0.0.1:{args.port}",
                                                  f"/v1/sessionpools/{pool}/executions?identifier={one}", 1, [auth]))
    x = int(api.execute(pool, one, "x")["result"])
    r["x_check"] = {"x": x, "answered": r["sent"][0], "ok": x == r["sent"][0]}
    sock = worker_sockets(args.home).get(one)
    if sock:
        x0 = x
        r = measured("one-session-direct", lambda: sessload(args, "unix:" + sock, "/execute", 1))
        r["socket"] = os.path.relpath(sock, args.home)
        x = int(api.execute(pool, one, "x")["result"])
        r["x_check"] = {"x": x - x0, "answered": r["sent"][0], "ok": x - x0 == r["sent"][0]}
    else:
        res["direct_error"] = "the worker's socket was not found"
    api.delete_session(pool, one)

    # Many sessions at once: each connection drives its own identifier.
    n = args.conns
    t0 = time.monotonic()
    for i in range(n):
        api.execute(pool, f"tput-{i}", "x = 0")
    res["bind_s"] = round(time.monotonic() - t0, 2)
    r = measured(f"{n}-sessions", lambda: sessload(
        args, f"127.0.0.1:{args.port}", f"/v1/sessionpools/{pool}/executions?identifier=tput-%d", n, [auth]))
    # Each session's x counts its executions: none lost, none doubled.
    bad = []
    for i in range(n):
        x = int(api.execute(pool, f"tput-{i}", "x")["result"])
        if x != r["sent"][i]:
            bad.append((i, x, r["sent"][i]))
    r["x_check"] = {"ok": not bad, "mismatches": bad}
    # The same sessions straight to their workers' sockets (one symbolic
    # link per connection number): what the workers and the CPUs do alone.
    links = os.path.join(out, "direct")
    os.makedirs(links, exist_ok=True)
    found = 0
    socks = worker_sockets(args.home)
    for i in range(n):
        sock = socks.get(f"tput-{i}")
        if sock:
            os.symlink(sock, os.path.join(links, f"{i}.sock"))
            found += 1
    if found == n:
        xs = [int(api.execute(pool, f"tput-{i}", "x")["result"]) for i in range(n)]
        r = measured(f"{n}-sessions-direct", lambda: sessload(args, "unix:" + os.path.join(links, "%d.sock"),
                                                               "/execute", n))
        bad = []
        for i in range(n):
            x = int(api.execute(pool, f"tput-{i}", "x")["result"]) - xs[i]
            if x != r["sent"][i]:
                bad.append((i, x, r["sent"][i]))
        r["x_check"] = {"ok": not bad, "mismatches": bad}
    else:
        res["direct_many_error"] = f"found the sockets of {found} of {n} sessions"
    for f in glob.glob(os.path.join(links, "*.sock")):
        os.unlink(f)
    os.rmdir(links)
    # The idle bound sessions' memory: no placeholders left, only sessions.
    api.put_pool(pool, dict(spec, ready=0))
    sessions = api.pool_status(pool)["sessions"]
    wait(lambda: len(host.sandboxes()) == sessions, 30, "placeholders to go")
    time.sleep(2)
    cnt, total = host.cg_usage()
    res["idle_bound"] = {"sessions": sessions, "cgroups": cnt, "usage_bytes": total,
                         "per_session_kib": total / cnt / 1024 if cnt else None,
                         "note": "after the throughput run: each session bound, with a few thousand executions"}
    api.delete_pool(pool)
    wait(lambda: not host.sandboxes(), 60, "tput sandboxes to go")
    write_json(out, "tput.json", res)


# ---- 3. density --------------------------------------------------------------

# What the sandboxes' processes and kernel objects take, by /proc/meminfo's
# own accounting: unlike MemFree/MemAvailable it does not depend on when the
# kernel gets freed pages back on its free lists.
ACCOUNTED = ("AnonPages", "Shmem", "Slab", "PageTables", "KernelStack", "Percpu")
PAGE_REPORTING = "/sys/module/page_reporting/parameters"


def page_reporting():
    """This VM's free page reporting (virtio-balloon): freed pages are handed
    to the host and only then counted as free again."""
    out = {}
    for k in ("reported_kib", "max_waiting_mib", "passes"):
        try:
            with open(os.path.join(PAGE_REPORTING, k)) as f:
                out[k] = int(f.read())
        except (OSError, ValueError):
            pass
    return out


def snapshot(host, api=None, pool=None):
    mi = host.meminfo()
    cnt, total = host.cg_usage()
    snap = {"t": time.time(), "MemAvailable_kib": mi["MemAvailable"], "MemFree_kib": mi["MemFree"],
            "Slab_kib": mi["Slab"], "SUnreclaim_kib": mi.get("SUnreclaim"), "Shmem_kib": mi.get("Shmem"),
            "KernelStack_kib": mi.get("KernelStack"), "PageTables_kib": mi.get("PageTables"),
            "AnonPages_kib": mi.get("AnonPages"), "Percpu_kib": mi.get("Percpu"),
            "accounted_kib": sum(mi.get(k, 0) for k in ACCOUNTED),
            "page_reporting": page_reporting(),
            "cgroups": cnt, "cg_usage_bytes": total, "cg_parent": host.cg_parent(),
            "legiond": host.legiond(), **host.tasks()}
    if api and pool:
        snap["pool_status"] = api.pool_status(pool)
    return snap


def density(args, api, host, out):
    pool = "dense"
    spec = {"runtime": "python3", "maxSessions": 100, "cooldownSeconds": 600}
    res = {"pool_spec": spec, "steps": [], "settle_s": args.settle}
    wait(lambda: not host.sandboxes(), 60, "no sandbox before the density part")
    # Pages freed by the earlier parts come back to the free lists only after
    # this VM's free page reporting has handed them to the host: wait until
    # MemAvailable stops rising, so that the baseline is not low.
    res["quiesce"] = mem_quiet(host, None, 120)
    time.sleep(args.settle)
    base = snapshot(host)
    res["baseline"] = base
    log(f"density: baseline MemAvailable {base['MemAvailable_kib'] / 1048576:.2f} GiB (waited "
        f"{res['quiesce']['s']} s for it to stop rising)")
    t_start = time.monotonic()
    for target in args.density_steps:
        # Never drive the machine out of memory: ~20 MiB a session and 1.5 GiB to spare.
        have = host.meminfo()["MemAvailable"]
        need = (target - len(host.sandboxes())) * 20 * 1024 + 1536 * 1024
        step = {"target": target}
        if have < need:
            step["skipped"] = f"MemAvailable {have} KiB < {need} KiB needed"
            res["steps"].append(step)
            log(f"density: step {target} skipped: {step['skipped']}")
            break
        t0 = time.monotonic()
        api.put_pool(pool, dict(spec, ready=target))
        series = []
        last_ready, last_progress = -1, time.monotonic()
        while True:
            st = api.pool_status(pool)
            now = time.monotonic()
            mem = host.meminfo()["MemAvailable"]
            series.append([round(now - t0, 2), st["ready"], st["starting"], mem])
            if st["ready"] != last_ready:
                last_ready, last_progress = st["ready"], now
            if st["ready"] >= target:
                break
            if now - last_progress > args.stall:
                step["stalled"] = {"after_s": round(now - t0, 1), "status": st,
                                   "note": f"no progress for {args.stall} s"}
                break
            if now - t0 > args.step_timeout:
                step["stalled"] = {"after_s": round(now - t0, 1), "status": st, "note": "step timeout"}
                break
            if mem < 1024 * 1024:
                step["stalled"] = {"after_s": round(now - t0, 1), "status": st,
                                   "note": "MemAvailable below 1 GiB: stopped"}
                break
            time.sleep(0.25)
        step["fill_s"] = round(time.monotonic() - t0, 2)
        step["series"] = series
        t_settle = time.monotonic()
        time.sleep(args.settle)
        snap = snapshot(host, api, pool)
        step["snapshot"] = snap
        n = snap["pool_status"]["ready"]
        step["ready"] = n
        if n:
            step["per_session_kib"] = {
                "memavailable": (base["MemAvailable_kib"] - snap["MemAvailable_kib"]) / n,
                "slab": (snap["Slab_kib"] - base["Slab_kib"]) / n,
                "accounted": (snap["accounted_kib"] - base["accounted_kib"]) / n,
                "cgroup": snap["cg_usage_bytes"] / 1024 / snap["cgroups"] if snap["cgroups"] else None,
            }
        # A ready placeholder of the full pool still answers at once.
        try:
            conn = RawConn(args.port)
            raw = request_bytes("POST", f"/v1/sessionpools/{pool}/executions?identifier=dense-probe-{target}",
                                args.token, json.dumps({"code": "print(1)"}).encode())
            ns, status, body = conn.request(raw)
            step["probe"] = {"ms": ns / 1e6, "status": status, "ok": status == 200 and b"Succeeded" in body}
            conn.s.close()
            api.delete_session(pool, f"dense-probe-{target}")
        except (OSError, RuntimeError) as e:
            step["probe"] = {"error": str(e)}
        step["settle_and_probe_s"] = round(time.monotonic() - t_settle, 2)
        res["steps"].append(step)
        psk = step.get("per_session_kib", {})
        log(f"density: {n} ready of {target} in {step['fill_s']} s; MemAvailable -{psk.get('memavailable', 0):.0f} "
            f"KiB each, cgroup {psk.get('cgroup') or 0:.0f} KiB each" + (" STALLED" if "stalled" in step else ""))
        if "stalled" in step:
            step["legiond_log_tail"] = tail(os.path.join(args.out, "legiond.log"), 40)
            break
    res["fill_total_s"] = round(time.monotonic() - t_start, 2)
    # Shrink to nothing: every sandbox goes, the memory comes back.
    t0 = time.monotonic()
    api.put_pool(pool, dict(spec, ready=0))
    try:
        wait(lambda: not host.sandboxes() and not host.our_processes(), 180, "the placeholders to go", 0.1)
        res["shrink_s"] = round(time.monotonic() - t0, 2)
    except RuntimeError as e:
        res["shrink_error"] = str(e)
        res["shrink_left"] = len(host.sandboxes())
    api.delete_pool(pool)
    time.sleep(args.settle)
    res["after_shrink"] = snapshot(host)
    # MemAvailable comes back as fast as the VM's page reporting returns the
    # freed pages: follow it until it is within 128 MiB of the baseline or
    # has stopped rising (checked from 30 s on, for at most 150 s).
    q = mem_quiet(host, base["MemAvailable_kib"] - 128 * 1024, 150, min_s=30)
    res["recovery"] = q
    if q.get("reached"):
        res["returned_within_128mib_s"] = q["s"] + args.settle
    after = snapshot(host)
    res["after"] = after
    res["returned_kib"] = after["MemAvailable_kib"] - base["MemAvailable_kib"]
    log(f"density: shrunk to 0 in {res.get('shrink_s')} s; MemAvailable "
        f"{res['returned_kib'] / 1024:+.0f} MiB against the baseline after {q['s'] + args.settle:.0f} s, "
        f"accounted memory {(after['accounted_kib'] - base['accounted_kib']) / 1024:+.0f} MiB")
    write_json(out, "density.json", res)


def mem_quiet(host, target_kib, timeout, min_s=10):
    """Sample MemAvailable every second until it reaches target_kib (if
    given) or, after min_s, rose less than 16 MiB in the last 10 s."""
    t0 = time.monotonic()
    pr0 = page_reporting().get("reported_kib")
    series = []
    out = {}
    while True:
        now = time.monotonic() - t0
        mem = host.meminfo()["MemAvailable"]
        series.append([round(now, 1), mem])
        if target_kib is not None and mem >= target_kib:
            out["reached"] = True
            break
        if now >= min_s and len(series) > 10 and mem - series[-11][1] < 16 * 1024:
            out["flat"] = True
            break
        if now > timeout:
            out["timeout"] = True
            break
        time.sleep(1)
    pr1 = page_reporting().get("reported_kib")
    out.update({"s": round(time.monotonic() - t0, 1), "series": series,
                "rose_kib": series[-1][1] - series[0][1],
                "page_reported_kib": pr1 - pr0 if pr0 is not None and pr1 is not None else None})
    return out


def tail(path, n):
    try:
        with open(path, errors="replace") as f:
            return f.readlines()[-n:]
    except OSError:
        return []


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--home", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--sessload", required=True)
    ap.add_argument("--legiond-pid", type=int, required=True)
    ap.add_argument("--cgroup-parent", required=True)
    ap.add_argument("--parts", default="first,tput,density")
    ap.add_argument("--ready", type=int, default=4)
    ap.add_argument("--first-n", type=int, default=200)
    ap.add_argument("--egress", choices=("on", "off"), default="off",
                    help="first: also a pool with egress on, alternating with the default (off); "
                         "for a legiond with its network on (issue 11)")
    ap.add_argument("--b2b-n", type=int, default=100)
    ap.add_argument("--cold-n", type=int, default=100)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--warmup", type=float, default=1)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--density-steps", default="250,500,1000")
    ap.add_argument("--settle", type=float, default=3)
    ap.add_argument("--stall", type=float, default=30)
    ap.add_argument("--step-timeout", type=float, default=240)
    args = ap.parse_args()
    args.density_steps = [int(s) for s in args.density_steps.split(",") if s]
    args.token = harness.read_token(args.home)
    api = Api(args.port, args.token)
    host = Host(args.cgroup_parent, args.legiond_pid, args.home)
    # Only session sandboxes on this legiond: the function pool groups are
    # emptied, so every sandbox cgroup below is a session's.
    groups = {}
    for g in api.call("GET", "/v1/poolgroups")[1]["items"]:
        groups[g["name"]] = g["spec"]
        if g["spec"].get("ready"):
            api.call("PUT", f"/v1/poolgroups/{g['name']}", dict(g["spec"], ready=0))
    wait(lambda: not host.sandboxes(), 60, "the function placeholders to go")
    write_json(args.out, "setup.json", {"function_pool_groups_before": groups, "legiond": host.legiond(),
                                         "parts": args.parts})
    parts = args.parts.split(",")
    for name, fn in (("first", first), ("tput", tput), ("density", density)):
        if name in parts:
            t0 = time.monotonic()
            fn(args, api, host, args.out)
            log(f"{name} took {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    main()
