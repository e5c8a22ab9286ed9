"""The warm-path comparison the benchmarks share (bench/functions,
bench/apps): nginx in front of the same instance legiond's router reaches,
and rounds of load (bench/functions/httpload, wrk) at the router, at the
instance directly and at nginx, with the CPU time each proxy spent. Each
bench.py puts bench/lib on sys.path and imports this."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import harness

NGINX_CONF = """# written by bench/lib/proxy.py
worker_processes {workers};
# Function instance sockets are in legiond's root-only run directory.
user root;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
{upstreams}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        keepalive_requests 1000000;
{locations}
    }}
}}
"""


def parse_wrk(text):
    def dur(v):
        m = re.match(r"([\d.]+)(us|ms|s|m)$", v)
        return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6, "m": 6e7}[m.group(2)]

    lat = {}
    for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", text, re.M):
        lat["p" + p] = dur(v)
    m = re.search(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)", text, re.M)
    if m:
        lat["mean"], lat["stdev"], lat["max"] = dur(m.group(1)), dur(m.group(2)), dur(m.group(3))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    req = int(re.search(r"(\d+) requests in", text).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: (.*)", text)
    return {"tool": "wrk", "rps": rps, "requests": req, "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sock.group(1) if sock else "", "latency_us": lat}


def cpu_ns(pids):
    """On-CPU time of every thread of these processes, ns (schedstat)."""
    total = 0
    for pid in pids:
        try:
            for t in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                    total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def children(pid):
    try:
        out = []
        for t in os.listdir(f"/proc/{pid}/task"):
            out += open(f"/proc/{pid}/task/{t}/children").read().split()
        return [int(x) for x in out]
    except FileNotFoundError:
        return []


class Nginx:
    """nginx proxying /NAME/ to each upstream {NAME: "unix:/path" or
    "ip:port"}: worker_processes workers (legiond is one event loop on one
    thread: 1 to compare alike), no access log, upstream keepalive 64,
    HTTP/1.1 to the upstream, the client's Authorization header dropped.
    Its pid goes to pidfile while it runs (run.sh's exit trap stops it)."""

    def __init__(self, prefix, workers, upstreams, pidfile):
        shutil.rmtree(prefix, ignore_errors=True)
        for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(prefix, "tmp", d))
        self.port = harness.free_port()
        ups, locs = "", ""
        for name, server in upstreams.items():
            ups += f"    upstream {name} {{ server {server}; keepalive 64; }}\n"
            locs += (f"        location /{name}/ {{\n"
                     f"            proxy_pass http://{name}/;\n"
                     f"            proxy_http_version 1.1;\n"
                     f"            proxy_set_header Connection \"\";\n"
                     f"            proxy_set_header Authorization \"\";\n"
                     f"        }}\n")
        conf = NGINX_CONF.format(workers=workers, prefix=prefix, port=self.port, upstreams=ups, locations=locs)
        self.conf = os.path.join(prefix, "nginx.conf")
        open(self.conf, "w").write(conf)
        self.info = {"conf": self.conf, "workers": workers, "port": self.port,
                     "version": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()}
        self.pidfile = pidfile
        err = os.path.join(prefix, "error.log")
        with open(os.path.join(prefix, "stderr.log"), "w") as log:
            self.p = subprocess.Popen(["nginx", "-p", prefix, "-c", self.conf, "-e", err],
                                      stdout=log, stderr=log, start_new_session=True)
        open(pidfile, "w").write(str(self.p.pid))
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", self.port)).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or self.p.poll() is not None:
                        raise RuntimeError("nginx did not start: " + open(err).read())
                    time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        # Whose CPU time is nginx's: its workers'.
        self.workers = children(self.p.pid)
        self.info["worker_pids"] = self.workers

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        if os.path.exists(self.pidfile):
            os.unlink(self.pidfile)


def load_rounds(httpload, targets, proxy_pids, rounds, conns, duration, warmup, wrk_duration, auth, log):
    """rounds of load: targets {backend: {target: (addr, path)}} (addr
    "ip:port" or "unix:/path"), each at 1 and at conns connections with
    httpload (1 thread at 1 connection, 2 at more), then wrk -t2 -c conns
    at the TCP ones; the targets' order rotates each round. auth (a header
    line) goes to the "router" target with httpload and to all with wrk.
    proxy_pids {target: [pid...]}: whose CPU time is the proxy's. The runs,
    one dict each."""
    runs = []
    order = list(next(iter(targets.values())))
    for rnd in range(rounds):
        k = rnd % len(order)
        rot = order[k:] + order[:k]  # who goes first changes each round
        for name in targets:
            for c in (1, conns):
                for tg in rot:
                    addr, path = targets[name][tg]
                    cmd = [httpload, "-t", "1" if c == 1 else "2", "-c", str(c), "-d", str(duration),
                           "-w", str(warmup), "-l", f"{name}/{tg}/c{c}"]
                    if tg == "router":
                        cmd += ["-H", auth]
                    pids = proxy_pids.get(tg)
                    c0 = cpu_ns(pids or [])
                    p = subprocess.run(cmd + [addr, path], capture_output=True, text=True, check=True)
                    doc = json.loads(p.stdout)
                    doc.update({"round": rnd, "backend": name, "target": tg, "conns": c,
                                "proxy_cpu_ns": cpu_ns(pids) - c0 if pids else None,
                                "loadavg": open("/proc/loadavg").read().split()[0]})
                    runs.append(doc)
                    log(f"round {rnd + 1} {name:6} {tg:6} c={c:<3} httpload: {doc['rps']:9.0f} req/s "
                        f"p50 {doc['latency_us']['p50']:8.1f} us p99 {doc['latency_us']['p99']:8.1f} us "
                        f"errors {doc['errors']}")
            # wrk against the TCP targets, same settings.
            for tg in [t for t in rot if not targets[name][t][0].startswith("unix:")]:
                addr, path = targets[name][tg]
                cmd = ["wrk", "-t2", f"-c{conns}", f"-d{wrk_duration}s", "--latency",
                       "-H", auth, f"http://{addr}{path}"]
                pids = proxy_pids.get(tg)
                c0 = cpu_ns(pids or [])
                p = subprocess.run(cmd, capture_output=True, text=True, check=True)
                doc = parse_wrk(p.stdout)
                doc.update({"proxy_cpu_ns": cpu_ns(pids) - c0 if pids else None,
                            "loadavg": open("/proc/loadavg").read().split()[0]})
                doc.update({"round": rnd, "backend": name, "target": tg, "conns": conns,
                            "threads": 2, "duration_s": wrk_duration, "raw": p.stdout})
                runs.append(doc)
                log(f"round {rnd + 1} {name:6} {tg:6} c={conns:<3} wrk:      {doc['rps']:9.0f} req/s "
                    f"p50 {doc['latency_us'].get('p50', 0):8.1f} us p99 {doc['latency_us'].get('p99', 0):8.1f} us "
                    f"non-2xx {doc['non2xx']}")
    return runs
