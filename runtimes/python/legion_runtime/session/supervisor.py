"""Legion session worker: the supervisor (docs/sessions-runtime.md).

Started by legion-init in a session placeholder sandbox as

    python3 -I /opt/legion/runtime/python session

with the worker control channel on fd 3 (LEGION_CONTROL_FD) and the host's
listening Unix socket on fd 4 (LEGION_LISTEN_FD), or attached to specialize.
It starts the session's interpreter (interpreter.py, a separate python3
process that is warm before any code exists), says `op=ready
phase=placeholder`, and waits for `op=specialize ... identifier=ID`. Then it
serves HTTP/1.1 on the listening socket:

    POST   /execute         {"code": "...", "timeoutSeconds": 30}
    GET    /files           [{"name","size","modified"}] under /mnt/data
    POST   /files           multipart/form-data upload
    PUT    /files/{path}    raw upload
    GET    /files/{path}    download
    DELETE /files/{path}
    GET    /health
    POST   /restart         a fresh interpreter

The supervisor is small and runs no user code: it outlives interpreters that
time out, crash or run out of memory, and starts fresh ones. Its parts:
session.py (executions), interp.py and procs.py (the interpreter process and
the sandbox's others), files.py and multipart.py (/mnt/data), api.py (HTTP).
Standard library only."""
import os
import signal
import sys
import threading
import time

from legion_runtime import control as lc
from legion_runtime import serving
from legion_runtime.session import api
from legion_runtime.session.config import CONFIG
from legion_runtime.session.interp import InterpreterError
from legion_runtime.session.session import SESSION


def _on_sigterm(*_):
    i = SESSION.interp
    if i is not None:
        i.killed = True
        try:
            os.kill(i.pid, signal.SIGKILL)
        except OSError:
            pass
    try:
        sys.stderr.flush()
    except Exception:
        pass
    os._exit(0)


def _not_dumpable():
    """The session's code runs as the same user as we do: without this it
    could open our descriptors (/proc/PID/fd/3 is the control channel) or
    write our memory through /proc/PID/mem. (It can still signal us; the
    host then sees the sandbox end.)"""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
    except Exception as e:
        lc.log("prctl(PR_SET_DUMPABLE): %s" % e)


def main(t_start):
    _not_dumpable()
    ctl = lc.Control.from_env()
    signal.signal(signal.SIGINT, lambda *_: None)  # init forwards ^C; the interpreter gets its own
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        SESSION.start()
    except InterpreterError as e:
        lc.log(str(e))
        sys.exit(1)
    i = SESSION.interp
    ctl.send("ready", phase="placeholder", runtime="session", version=i.version,
             ms="%.1f" % lc.now_ms(t_start), interpreter_ms="%.1f" % i.startup_ms)

    frame = lc.wait_for_specialize(ctl)

    def bind(frame):
        listener = lc.listen_socket(frame)
        lc.apply_env(frame)
        CONFIG.load()
        pool, identifier = frame.get("app", ""), frame.get("identifier", "")
        SESSION.bind(pool, identifier)
        return listener, pool, identifier

    t0 = time.monotonic()
    listener, pool, identifier = lc.run_specialize(ctl, frame, bind)
    ms = lc.now_ms(t0)
    threading.Thread(target=serving.accept_loop, args=(listener, api.serve), name="legion-accept", daemon=True).start()
    lc.log("session bound: pool=%s identifier=%s in %.1f ms" % (pool, identifier, ms))
    ctl.send_fields("ready", [("id", frame.get("id")), ("phase", "specialized"), ("app", pool),
                              ("identifier", identifier), ("ms", "%.1f" % ms)])
    lc.control_loop(ctl)
    threading.Event().wait()

