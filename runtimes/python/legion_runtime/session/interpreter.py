"""Legion session interpreter (docs/sessions-runtime.md).

The persistent Python interpreter of one session. The supervisor
(supervisor.py) starts it as

    python3 -I interpreter.py   (LEGION_SESSION_FD=N, LEGION_SESSION_MARK=HEX in its env)

with stdin /dev/null, stdout and stderr on two pipes the supervisor drains,
and fd N one end of a socketpair. Over that socket both sides send messages:
a u32 little-endian length, then that many bytes of JSON (an object with
"op"). This process runs the session's code, one execution at a time, in one
namespace that persists between executions (like a notebook kernel):

    <- {"op":"ready","pid":P,"ms":F,"version":V}                once, at start
    -> {"op":"setup","env":{K:V},"cwd":DIR,"n":0}                   bind
    <- {"op":"ok","n":0}
    -> {"op":"reap","groups":[G...]}  after a timeout: process groups of forked copies the supervisor killed
    <- {"op":"ok"}
    -> {"op":"exec","n":N,"code":SRC,"timeout":SECONDS}
    <- {"op":"done","n":N,"status":"Succeeded|Failed|TimedOut","result":STR|null,
        "resultTruncated":B,"error":{"type","message","traceback"}|null,"ms":F}

Output is captured at the file descriptor level (so the output of
subprocesses is captured too): after each execution the interpreter flushes
sys.stdout/sys.stderr and writes an end marker, "\\0LGM" + MARK + N as 8 hex
digits + "\\0" (MARK: 16 hex digits from LEGION_SESSION_MARK), to fds 1 and
2, then sends "done". The supervisor cuts the streams at the markers.

A timeout is a SIGINT from the supervisor at the deadline: the handler
raises legion.TimeoutError (a KeyboardInterrupt, so `except Exception` does
not swallow it) in the user's code. Standard library only."""
import time

T_START = time.monotonic()

import os  # noqa: E402
import sys  # noqa: E402


def _oom_score_adj(value):
    # Under memory pressure the kernel's OOM killer must take this process
    # rather than the supervisor (which keeps 0), and copies of it that the
    # user's code forks (1000, see _after_fork_in_child) rather than it: a
    # fork bomb then loses its children, not the session's state. Any value
    # from 0 up needs no privilege.
    try:
        fd = os.open(b"/proc/self/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value)
        finally:
            os.close(fd)
    except OSError:
        pass


_oom_score_adj(b"500")

import ast  # noqa: E402
import faulthandler  # noqa: E402
import fcntl  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import linecache  # noqa: E402
import signal  # noqa: E402
import struct  # noqa: E402
import traceback  # noqa: E402
import types  # noqa: E402

# What user code most often imports first, so that its first execution finds
# it in sys.modules (all cheap, all standard). More with LEGION_SESSION_PRELOAD
# ("numpy,pandas"): imported now if installed, silently skipped if not.
import collections  # noqa: E402,F401
import datetime  # noqa: E402,F401
import functools  # noqa: E402,F401
import itertools  # noqa: E402,F401
import math  # noqa: E402,F401
import random  # noqa: E402,F401
import re  # noqa: E402,F401

_SELF = os.path.abspath(__file__)
_HI_FD = 900  # where the interpreter keeps its own descriptors, out of the user's way


def _hi(fd):
    """A close-on-exec duplicate of fd at a high number; closes fd."""
    try:
        new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _HI_FD)
    except OSError:
        new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return new


CHAN = _hi(int(os.environ.pop("LEGION_SESSION_FD")))
# Our own copies of the output pipes: fds 1 and 2 are put back on them after
# every execution, whatever the user's code did with them.
SAVED_IN = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, _HI_FD)
SAVED_OUT = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, _HI_FD)
SAVED_ERR = fcntl.fcntl(2, fcntl.F_DUPFD_CLOEXEC, _HI_FD)
# Processes forked by the user's code that end with their cell (see
# run_cell) write their pid here, so that we reap them: zombies would hold
# on to the session's pids limit (a fork bomb leaves dozens).
_r, _w = os.pipe2(os.O_NONBLOCK)
REAP_R, REAP_W = _hi(_r), _hi(_w)
del _r, _w
# The end-of-output marker's secret part, chosen by the supervisor.
MARK = (os.environ.pop("LEGION_SESSION_MARK", "") or os.urandom(8).hex()).encode()
MAX_RESULT = int(os.environ.pop("LEGION_SESSION_MAX_OUTPUT", "") or (1 << 20))


def _streams():
    out = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8",
                           errors="backslashreplace", line_buffering=True)
    err = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8",
                           errors="backslashreplace", line_buffering=True)
    return out, err


OUT, ERR = _streams()
sys.stdout = sys.__stdout__ = OUT
sys.stderr = sys.__stderr__ = ERR
# A crash (SIGSEGV, SIGABRT, ...) writes the Python stack to fd 2: it ends up
# in the stderr of the execution that crashed.
faulthandler.enable(file=2, all_threads=True)


class TimeoutError(KeyboardInterrupt):  # noqa: A001 -- shown as legion.TimeoutError
    """The execution ran out of time (raised by the SIGINT the supervisor
    sends at the deadline)."""


TimeoutError.__module__ = "legion"


class _State:
    armed = False        # in user code: SIGINT raises
    deadline = 0.0
    timeout = 0.0
    timed_out = False
    child = False        # a process forked by user code (not us)


_state = _State()


_PID = os.getpid()


def _after_fork_in_child():
    _state.child = True
    _oom_score_adj(b"1000")
    # A copy of us made by the user's code leads a process group of its own
    # (its descendants inherit it): after a timeout the supervisor kills
    # such groups whole, which a fork bomb cannot race (kill(-pgrp) is
    # atomic with respect to fork). Subprocesses (fork+exec in C) stay in
    # ours.
    if os.getpgrp() == _PID:
        try:
            os.setpgid(0, 0)
        except OSError:
            pass


os.register_at_fork(after_in_child=_after_fork_in_child)


def _on_sigint(signum, frame):
    if not _state.armed:
        return
    # The supervisor's SIGINT comes at its deadline, which is a little
    # before ours (it started the clock first); a SIGINT well before the
    # deadline is the user's own (os.kill(os.getpid(), SIGINT)).
    if time.monotonic() >= _state.deadline - 0.5:
        _state.timed_out = True
        raise TimeoutError("the execution exceeded its timeout of %g s" % _state.timeout)
    raise KeyboardInterrupt


# ---- the channel -------------------------------------------------------------

def _read_exact(n):
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = os.read(CHAN, n - len(buf))
        except InterruptedError:
            continue
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def recv():
    hdr = _read_exact(4)
    if hdr is None:
        return None
    (n,) = struct.unpack("<I", hdr)
    data = _read_exact(n)
    if data is None:
        return None
    return json.loads(data)


def send(msg):
    data = json.dumps(msg).encode()
    data = struct.pack("<I", len(data)) + data
    view = memoryview(data)
    while view:
        try:
            k = os.write(CHAN, view)
        except InterruptedError:
            continue
        view = view[k:]


# ---- running code ------------------------------------------------------------

_main = types.ModuleType("__main__", None)
_main.__dict__["__builtins__"] = __builtins__
_ns = _main.__dict__
_keep_self = sys.modules["__main__"]  # noqa: F841 -- our own module stays alive
sys.modules["__main__"] = _main        # pickle and friends find user classes here
_TLA = getattr(ast, "PyCF_ALLOW_TOP_LEVEL_AWAIT", 0)
_CO_COROUTINE = 0x80
_loop = None


def _run_async(coro):
    global _loop
    import asyncio
    if _loop is None:
        _loop = asyncio.new_event_loop()
    return _loop.run_until_complete(coro)


def _format_tb(exc):
    """The traceback without the interpreter's own frames."""
    te = traceback.TracebackException.from_exception(exc)

    def trim(t, seen):
        if id(t) in seen:
            return
        seen.add(id(t))
        t.stack = traceback.StackSummary.from_list(
            [f for f in t.stack if f.filename != _SELF and not f.filename.startswith("<frozen ")])
        if t.__cause__:
            trim(t.__cause__, seen)
        if t.__context__:
            trim(t.__context__, seen)

    trim(te, set())
    return "".join(te.format())


def _error(exc, type_name=None):
    try:
        msg = str(exc)
    except BaseException:
        msg = "<str() of the exception failed>"
    try:
        tb = _format_tb(exc)
    except BaseException:
        tb = "".join(traceback.format_exception_only(type(exc), exc))
    return {"type": type_name or type(exc).__name__, "message": msg, "traceback": tb}


def _flush_user_streams():
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except BaseException:
            pass


def _child_exit(exc):
    """A process the user's code forked ran off the end of the cell: it must
    not answer in our place. It exits, as a script would."""
    code = 0
    if isinstance(exc, SystemExit):
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    elif exc is not None:
        code = 1
        try:
            sys.stderr.write(_format_tb(exc))
        except BaseException:
            pass
    _flush_user_streams()
    try:
        os.write(REAP_W, struct.pack("<i", os.getpid()))
    except OSError:
        pass
    os._exit(code & 0xFF)


def run_cell(msg):
    n = msg["n"]
    code = msg["code"]
    timeout = float(msg.get("timeout") or 30)
    name = "<cell %d>" % n
    linecache.cache[name] = (len(code), None, code.splitlines(True) or ["\n"], name)
    sys.stdout, sys.stderr = OUT, ERR
    signal.signal(signal.SIGINT, _on_sigint)
    _state.timed_out = False
    _state.timeout = timeout
    _state.deadline = time.monotonic() + timeout
    status, result, error, truncated = "Succeeded", None, None, False
    t0 = time.monotonic()
    try:
        try:
            tree = compile(code, name, "exec", ast.PyCF_ONLY_AST | _TLA)
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = ast.Expression(tree.body.pop().value)
            body = compile(tree, name, "exec", _TLA)
            tail = compile(last, name, "eval", _TLA) if last is not None else None
        except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError) as e:
            # Nothing ran: the traceback is the error itself, no frames.
            status = "Failed"
            error = {"type": type(e).__name__, "message": str(e),
                     "traceback": "".join(traceback.format_exception_only(type(e), e))}
        else:
            try:
                _state.armed = True
                try:
                    r = eval(body, _ns)
                    if body.co_flags & _CO_COROUTINE:
                        _run_async(r)
                    if tail is not None:
                        value = eval(tail, _ns)
                        if tail.co_flags & _CO_COROUTINE:
                            value = _run_async(value)
                        if value is not None:
                            _ns["_"] = value
                            result = repr(value)
                            if not isinstance(result, str):
                                result = str(result)
                            if len(result) > MAX_RESULT:
                                result, truncated = result[:MAX_RESULT], True
                finally:
                    _state.armed = False
            except BaseException as e:  # noqa: B902 -- SystemExit and all: the session goes on
                _state.armed = False
                if _state.child:
                    _child_exit(e)
                if _state.timed_out:
                    status = "TimedOut"
                    error = _error(e, "TimeoutError")
                    error["message"] = "the execution exceeded its timeout of %g s" % timeout
                else:
                    status = "Failed"
                    error = _error(e)
                del e
    except BaseException as e:
        _state.armed = False
        if not _state.child:
            raise
        _child_exit(e)
    if _state.child:
        _child_exit(None)
    if _state.timed_out and status == "Succeeded":
        # The code caught our TimeoutError and finished anyway.
        status = "TimedOut"
        error = {"type": "TimeoutError", "traceback": None,
                 "message": "the execution exceeded its timeout of %g s" % timeout}
    return {"op": "done", "n": n, "status": status, "result": result, "resultTruncated": truncated,
            "error": error, "ms": (time.monotonic() - t0) * 1000.0}


_pending_reap = set()


def reap(groups=()):
    """waitpid() our children in the given process groups (what the
    supervisor killed) and those that wrote to REAP_W (forked copies of us
    that are exiting). ECHILD: not ours, or already waited."""
    deadline = time.monotonic() + 0.2
    for g in groups:
        while True:
            try:
                done, _ = os.waitpid(-g, os.WNOHANG)
            except OSError:
                break
            if not done:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.001)
    want = set(_pending_reap)
    while True:
        try:
            data = os.read(REAP_R, 4096)
        except OSError:
            break
        if not data:
            break
        want.update(p for (p,) in struct.iter_unpack("<i", data[: len(data) - len(data) % 4]))
    _pending_reap.clear()
    deadline = time.monotonic() + 0.1
    while want:
        for pid in list(want):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            except OSError:
                done = pid
            if done:
                want.discard(pid)
        if not want or time.monotonic() > deadline:
            break
        time.sleep(0.001)
    _pending_reap.update(want)


def _restore_stdin():
    if sys.stdin is None or sys.stdin.closed:
        try:
            os.dup2(SAVED_IN, 0)
            sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
        except OSError:
            pass


def end_of_output(n):
    """Flush everything and write the end marker of execution n to fds 1, 2."""
    _flush_user_streams()
    reap()
    _restore_stdin()
    sys.stdout, sys.stderr = OUT, ERR
    for s in (OUT, ERR):
        try:
            s.flush()
        except BaseException:
            # The user closed it: make a new one.
            pass
    try:
        os.dup2(SAVED_OUT, 1)
        os.dup2(SAVED_ERR, 2)
    except OSError:
        pass
    if OUT.closed or ERR.closed:
        _reopen_streams()
    mark = b"\0LGM" + MARK + b"%08x" % (n & 0xFFFFFFFF) + b"\0"
    for fd in (1, 2):
        try:
            os.write(fd, mark)
        except OSError:
            pass


def _reopen_streams():
    global OUT, ERR
    OUT, ERR = _streams()
    sys.stdout = sys.__stdout__ = OUT
    sys.stderr = sys.__stderr__ = ERR


def setup(msg):
    for k, v in (msg.get("env") or {}).items():
        os.environ[k] = v
    cwd = msg.get("cwd")
    if cwd:
        try:
            os.chdir(cwd)
        except OSError:
            pass
    # -I ignores PYTHONPATH; an app setting should still count.
    for p in reversed([p for p in os.environ.get("PYTHONPATH", "").split(":") if p]):
        if p not in sys.path:
            sys.path.insert(0, p)
    if "" not in sys.path:
        sys.path.insert(0, "")  # the working directory, as in a notebook


def _preload():
    for name in os.environ.get("LEGION_SESSION_PRELOAD", "").replace(",", " ").split():
        try:
            __import__(name)
        except Exception:
            pass


def main():
    signal.signal(signal.SIGINT, _on_sigint)
    _preload()
    send({"op": "ready", "pid": os.getpid(),
          "ms": (time.monotonic() - T_START) * 1000.0,
          "version": "%d.%d.%d" % sys.version_info[:3]})
    while True:
        msg = recv()
        if msg is None:
            os._exit(0)
        op = msg.get("op")
        if op == "exec":
            reply = run_cell(msg)
            end_of_output(msg["n"])
            send(reply)
        elif op == "reap":
            reap(msg.get("groups") or ())
            send({"op": "ok", "n": msg.get("n", 0)})
        elif op == "setup":
            setup(msg)
            send({"op": "ok", "n": msg.get("n", 0)})
        else:
            send({"op": "error", "message": "unknown op %r" % op})


if __name__ == "__main__":
    main()
