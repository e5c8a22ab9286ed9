"""Legion custom-handler worker (docs/runtimes.md).

For apps in any language: the package brings an executable that serves
HTTP on 127.0.0.1:$PORT. Started by legion-init in a placeholder sandbox as

    python3 -I /opt/legion/runtime/python custom

it says `op=ready phase=placeholder` and waits. On `op=specialize` it applies
the app's env, starts the entrypoint command ("cmd args...", split like a
shell does, run from /code with PORT=8080 unless the app sets PORT), waits
until the port accepts connections (LEGION_START_TIMEOUT seconds, default
10), says `op=ready phase=specialized`, and then relays every connection of
the host's listening socket to 127.0.0.1:PORT, byte for byte (keep-alive and
all). When the command exits, the worker exits with its status.

The sandbox has its own network namespace: the port is private to it."""
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from legion_runtime import control as lc
from legion_runtime import serving

DEFAULT_PORT = 8080
BUF = 256 * 1024


def _pump(src, dst, quickack=False):
    try:
        while True:
            data = src.recv(BUF)
            if not data:
                break
            if quickack:
                # ACK the handler's writes at once: a server that writes a
                # response in pieces without TCP_NODELAY (Python's
                # http.server does) would otherwise wait for our delayed
                # ACK (40 ms) before each later piece.
                src.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


BAD_GATEWAY = (b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\nConnection: close\r\n"
               b"Content-Length: %d\r\n\r\n%s")


class Proxy:
    def __init__(self, listener, port, proc):
        self.listener = listener
        self.port = port
        self.proc = proc

    def serve_forever(self):
        serving.accept_loop(self.listener, self.relay)

    def relay(self, conn):
        try:
            up = socket.create_connection(("127.0.0.1", self.port))
        except OSError as e:
            body = b'{"error":{"code":"BadGateway","message":"the custom handler refused the connection"}}'
            lc.log("connect to 127.0.0.1:%d: %s" % (self.port, e))
            try:
                conn.sendall(BAD_GATEWAY % (len(body), body))
            except OSError:
                pass
            conn.close()
            return
        up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        up.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        t = threading.Thread(target=_pump, args=(up, conn, True), daemon=True)
        t.start()
        _pump(conn, up)
        t.join()
        conn.close()
        up.close()


def start_command(workdir, entrypoint, port):
    try:
        argv = shlex.split(entrypoint)
    except ValueError as e:
        raise lc.SpecializeError("InvalidEntrypoint", "entrypoint `%s`: %s" % (entrypoint, e))
    if not argv:
        raise lc.SpecializeError("InvalidEntrypoint",
                                 "the custom runtime needs an entrypoint command, e.g. `./server --port 8080`")
    exe = argv[0]
    if "/" in exe:
        full = os.path.join(workdir, exe)
        if not os.path.isfile(full):
            raise lc.SpecializeError("EntrypointNotFound", "entrypoint `%s`: no file `%s` in %s" % (
                entrypoint, exe, workdir), exception="FileNotFoundError")
        if not os.access(full, os.X_OK):
            raise lc.SpecializeError("EntrypointNotFound", "entrypoint `%s`: `%s` is not executable "
                                     "(chmod +x it in the package)" % (entrypoint, exe), exception="PermissionError")
    elif shutil.which(exe) is None:
        hint = " (use ./%s for a file in the package)" % exe if os.path.isfile(os.path.join(workdir, exe)) else ""
        raise lc.SpecializeError("EntrypointNotFound", "entrypoint `%s`: command `%s` not found on PATH%s" % (
            entrypoint, exe, hint), exception="FileNotFoundError")
    env = dict(os.environ)
    env["PORT"] = str(port)
    for k in ("LEGION_CONTROL_FD", "LEGION_LISTEN_FD"):
        env.pop(k, None)
    try:
        return subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL, close_fds=True)
    except OSError as e:
        raise lc.SpecializeError("StartError", "start `%s`: %s" % (entrypoint, e.strerror), exception=type(e).__name__)


def exit_status(code):
    return code if code >= 0 else 128 - code


def wait_for_port(proc, port, timeout, entrypoint):
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        code = proc.poll()
        if code is not None:
            raise lc.SpecializeError("StartError", "`%s` exited with status %d before listening on 127.0.0.1:%d" % (
                entrypoint, exit_status(code), port))
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=1)
            s.close()
            return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            proc.kill()
            proc.wait()
            raise lc.SpecializeError("StartError", "`%s` did not listen on 127.0.0.1:%d within %g s" % (
                entrypoint, port, timeout))
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def specialize(frame):
    t0 = time.monotonic()
    app, revision, listener, workdir = lc.prepare_specialize(frame)
    try:
        port = int(os.environ.get("PORT") or DEFAULT_PORT)
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        raise lc.SpecializeError("InvalidEnv", "PORT=%s is not a port number" % os.environ.get("PORT"))
    try:
        timeout = float(os.environ.get("LEGION_START_TIMEOUT") or 10)
    except ValueError:
        raise lc.SpecializeError("InvalidEnv", "LEGION_START_TIMEOUT=%s is not a number of seconds"
                                 % os.environ.get("LEGION_START_TIMEOUT"))
    entrypoint = frame.get("entrypoint") or ""
    proc = start_command(workdir, entrypoint, port)
    wait_for_port(proc, port, timeout, entrypoint)
    return Proxy(listener, port, proc), lc.now_ms(t0), app, revision


def main(t_start):
    ctl = lc.Control.from_env()
    ctl.send("ready", phase="placeholder", runtime="custom", ms="%.1f" % lc.now_ms(t_start))
    frame = lc.wait_for_specialize(ctl)

    proxy, ms, app, revision = lc.run_specialize(ctl, frame, specialize)

    proc = proxy.proc

    def forward(signum, _frame):
        try:
            proc.send_signal(signum)
        except OSError:
            pass

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(s, forward)

    def watch():
        code = exit_status(proc.wait())
        lc.log("custom handler `%s` exited with status %d" % (frame.get("entrypoint"), code))
        try:
            sys.stderr.flush()
        except Exception:
            pass
        os._exit(code)

    threading.Thread(target=watch, name="legion-watch", daemon=True).start()
    threading.Thread(target=proxy.serve_forever, name="legion-accept", daemon=True).start()
    lc.serve_specialized(ctl, frame, app, revision, ms)

