"""Legion session worker: the supervisor (docs/sessions-runtime.md).

Started by legion-init in a session placeholder sandbox as

    python3 -I /opt/legion/runtime/session/supervisor.py

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
time out, crash or run out of memory, and starts fresh ones. Standard library
only; the control-channel framing is runtimes/python/legion_control.py."""
import time

T_START = time.monotonic()

import os  # noqa: E402
import sys  # noqa: E402

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(_HERE), "python"))
import legion_control as lc  # noqa: E402
sys.path.pop(0)

import collections  # noqa: E402
import errno  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import stat  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402
import urllib.parse  # noqa: E402

INTERPRETER = os.path.join(_HERE, "interpreter.py")
PYTHON = sys.executable or "/usr/bin/python3"

MAX_PATH_BYTES = 1024
MAX_NAME_BYTES = 255
MAX_LIST = 100000
UPLOAD_PREFIX = ".legion-upload-"
_REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 411: "Length Required",
            413: "Content Too Large", 414: "URI Too Long", 415: "Unsupported Media Type",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
            503: "Service Unavailable", 505: "HTTP Version Not Supported", 507: "Insufficient Storage"}


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(|k|K|Ki|KiB|M|Mi|MiB|G|Gi|GiB|T|Ti|TiB)\s*$")
_UNITS = {"": 1, "k": 1000, "K": 1000, "M": 1000 ** 2, "G": 1000 ** 3, "T": 1000 ** 4,
          "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
          "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def parse_size(v):
    """Bytes: "1048576", "100Mi", "1Gi", "1.5G" (Kubernetes-style units)."""
    m = _SIZE.match(v or "")
    if not m:
        raise ValueError(v)
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def _env_int(name, default, minimum=0):
    v = os.environ.get(name, "")
    try:
        n = parse_size(v) if v.strip() else default
    except ValueError:
        lc.log("%s=%r is not a size; using %d" % (name, v, default))
        n = default
    return max(n, minimum)


def _env_float(name, default):
    try:
        return float(os.environ.get(name, "") or default)
    except ValueError:
        return default


class Config:
    """Read from the environment: the sandbox's, then the specialize env."""

    def load(self):
        self.data_dir = os.environ.get("LEGION_SESSION_DATA_DIR", "/mnt/data")
        self.max_file = _env_int("LEGION_SESSION_MAX_FILE", 100 << 20)
        self.max_bytes = _env_int("LEGION_SESSION_MAX_BYTES", 1 << 30)
        self.max_output = _env_int("LEGION_SESSION_MAX_OUTPUT", 1 << 20, 1024)
        self.max_code = _env_int("LEGION_SESSION_MAX_CODE", 16 << 20, 1024)
        self.default_timeout = _env_float("LEGION_SESSION_DEFAULT_TIMEOUT", 30.0)
        self.max_timeout = _env_float("LEGION_SESSION_MAX_TIMEOUT", 600.0)
        self.kill_grace = _env_float("LEGION_SESSION_KILL_GRACE", 2.0)
        self.start_timeout = _env_float("LEGION_SESSION_START_TIMEOUT", 30.0)
        return self


CONFIG = Config().load()


def size_text(n):
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= (1 << shift) and n % (1 << (shift - 4)) == 0:
            v = n / (1 << shift)
            return ("%d %s" % (v, unit)) if v == int(v) else ("%.2f %s" % (v, unit))
    return "%d bytes" % n


def limit_text(n):
    """"100 MiB (104857600 bytes)", or "2500 bytes"."""
    t = size_text(n)
    return t if t.endswith(" bytes") else "%s (%d bytes)" % (t, n)


def _now_iso(ts):
    t = time.gmtime(ts)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + (".%03dZ" % int((ts % 1) * 1000))


# ---- where we are ------------------------------------------------------------

def _in_own_pid_namespace():
    """True inside a Legion sandbox: PID 1 is legion-init, so kill(-1)
    reaches exactly the processes of this sandbox (minus init and us)."""
    if os.getpid() == 1:
        return False
    try:
        with open("/proc/1/comm") as f:
            return f.read().strip() == "legion-init"
    except OSError:
        return False


IN_SANDBOX = _in_own_pid_namespace()


def _others_alive():
    me = os.getpid()
    try:
        names = os.listdir("/proc")
    except OSError:
        return False
    for name in names:
        if not name.isdigit():
            continue
        pid = int(name)
        if pid in (1, me):
            continue
        try:
            with open("/proc/%d/stat" % pid, "rb") as f:
                st = f.read()
        except OSError:
            continue
        state = st[st.rfind(b")") + 2:][:1]
        if state not in (b"Z", b"X"):
            return True
    return False


def kill_everything_else(pgid=None):
    """A fresh interpreter means a fresh process tree: SIGKILL every process
    in the sandbox but init and the supervisor (what the old interpreter
    started, fork bombs included). Outside a sandbox: its process group."""
    if not IN_SANDBOX:
        if pgid:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except OSError:
                pass
        return
    deadline = time.monotonic() + 5.0
    while True:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            return
        except OSError:
            pass
        if not _others_alive() or time.monotonic() > deadline:
            return
        time.sleep(0.002)


def kill_forked_copies(interp_pid):
    """SIGKILL the processes the interpreter forked that still run its code
    (same command line; not what they exec'd): after a timeout they would go
    on running the cell, a fork bomb for one. Each such copy leads a process
    group (interpreter.py sees to it), killed whole: a group kill cannot be
    outrun by fork(). Returns the groups killed."""
    try:
        with open("/proc/%d/cmdline" % interp_pid, "rb") as f:
            cmdline = f.read()
    except OSError:
        return []
    killed = set()
    me = os.getpid()
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        found = False
        try:
            names = os.listdir("/proc")
        except OSError:
            break
        for name in names:
            if not name.isdigit() or int(name) in (1, interp_pid, me):
                continue
            pid = int(name)
            try:
                with open("/proc/%d/stat" % pid, "rb") as f:
                    st = f.read()
                fields = st[st.rfind(b")") + 2:].split()
                if fields[0] in (b"Z", b"X"):
                    continue
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    if f.read() != cmdline:
                        continue
                pgrp = int(fields[2])
                if pgrp in (interp_pid, me, 1):
                    os.kill(pid, signal.SIGKILL)  # it could not make its own group
                else:
                    os.killpg(pgrp, signal.SIGKILL)
                    killed.add(pgrp)
                found = True
            except (OSError, ValueError, IndexError):
                continue
        if not found:
            break
        time.sleep(0.002)
    return sorted(killed)


def _read_first(paths):
    for p in paths:
        try:
            with open(p) as f:
                return f.read()
        except OSError:
            continue
    return None


def memory_limit():
    """The sandbox's memory limit: LEGION_SESSION_MEMORY_LIMIT (bytes, set by
    the host), else the cgroup's if the sandbox can see it."""
    try:
        n = parse_size(os.environ.get("LEGION_SESSION_MEMORY_LIMIT", ""))
    except ValueError:
        v = (_read_first(["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]) or "").strip()
        n = int(v) if v.isdigit() else 0
    return n if 0 < n < (1 << 60) else None


def oom_kills():
    """The memory cgroup's OOM-kill count, when the sandbox can see it."""
    for p in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"):
        v = _read_first([p])
        if v is None:
            continue
        for line in v.splitlines():
            k, _, n = line.partition(" ")
            if k == "oom_kill" and n.strip().isdigit():
                return int(n)
    return None


def describe_death(returncode, oom_before=None, when=""):
    """"the interpreter was killed by SIGSEGV (segmentation fault) during
    the execution" and the like; `when` goes after the verb."""
    when = (" " + when) if when else ""
    if returncode is None:
        return "the interpreter went away" + when
    if returncode < 0:
        sig = -returncode
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = "signal %d" % sig
        if sig == signal.SIGKILL:
            after = oom_kills()
            lim = memory_limit()
            lim_text = " (the session's memory limit is %s)" % size_text(lim) if lim else ""
            sure = oom_before is not None and after is not None and after > oom_before
            return "the interpreter was killed by SIGKILL%s, %s out of memory%s" % (
                when, "because it ran" if sure else "most likely because it ran", lim_text)
        what = {signal.SIGSEGV: "segmentation fault", signal.SIGBUS: "bus error",
                signal.SIGABRT: "aborted", signal.SIGFPE: "floating point exception",
                signal.SIGILL: "illegal instruction"}.get(sig)
        return "the interpreter was killed by %s%s%s" % (name, " (%s)" % what if what else "", when)
    return "the interpreter exited with status %d%s" % (returncode, when)


LOST = ("a fresh interpreter was started: variables, imports and other in-memory state "
        "were lost (files in /mnt/data are kept)")


# ---- the interpreter process -------------------------------------------------

class Stream:
    """One output pipe of the interpreter, cut into executions at the end
    markers. Each execution keeps at most `cap` bytes; the rest is counted."""

    def __init__(self, mark, cap):
        self.prefix = b"\0LGM" + mark
        self.mark_len = len(self.prefix) + 9
        self.cap = cap
        self.carry = b""
        self.cur = bytearray()
        self.total = 0
        self.segments = {}

    def _emit(self, b):
        if not b:
            return
        self.total += len(b)
        room = self.cap - len(self.cur)
        if room > 0:
            self.cur += b[:room]

    def _end(self, n):
        self.segments[n] = (bytes(self.cur), self.total)
        self.cur = bytearray()
        self.total = 0

    def feed(self, data):
        buf = self.carry + data if self.carry else data
        self.carry = b""
        start = 0
        ended = False
        while True:
            i = buf.find(self.prefix, start)
            if i < 0:
                break
            if len(buf) - i < self.mark_len:
                self._emit(buf[start:i])
                self.carry = bytes(buf[i:])
                return ended
            tail = buf[i + len(self.prefix): i + self.mark_len]
            try:
                n = int(tail[:8], 16) if tail[8:9] == b"\0" else None
            except ValueError:
                n = None
            if n is None:
                self._emit(buf[start:i + 1])
                start = i + 1
                continue
            self._emit(buf[start:i])
            self._end(n)
            ended = True
            start = i + self.mark_len
        rest = buf[start:]
        keep = 0
        for k in range(min(len(rest), len(self.prefix) - 1), 0, -1):
            if rest.endswith(self.prefix[:k]):
                keep = k
                break
        if keep:
            self._emit(rest[:-keep])
            self.carry = bytes(rest[-keep:])
        else:
            self._emit(rest)
        return ended

    def take(self, n):
        """(bytes, total) of execution n, or of what is there (no marker)."""
        if n in self.segments:
            return self.segments.pop(n)
        self._emit(self.carry)
        self.carry = b""
        out = (bytes(self.cur), self.total)
        self.cur = bytearray()
        self.total = 0
        return out


class InterpreterError(Exception):
    pass


class Interpreter:
    """One interpreter process and the thread that reads everything it
    writes: the message channel, stdout, stderr, and its pidfd."""

    def __init__(self, cwd, on_death):
        self.on_death = on_death
        self.cv = threading.Condition()
        self.msgs = collections.deque()
        self.dead = False
        self.returncode = None
        self.killed = False          # by us
        mark = os.urandom(8).hex()
        self.out = Stream(mark.encode(), CONFIG.max_output)
        self.err = Stream(mark.encode(), CONFIG.max_output)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        env = {k: v for k, v in os.environ.items() if k not in ("LEGION_CONTROL_FD", "LEGION_LISTEN_FD")}
        env["LEGION_SESSION_FD"] = str(theirs.fileno())
        env["LEGION_SESSION_MARK"] = mark
        env["LEGION_SESSION_MAX_OUTPUT"] = str(CONFIG.max_output)
        t0 = time.monotonic()
        try:
            self.proc = subprocess.Popen([PYTHON, "-I", INTERPRETER], stdin=subprocess.DEVNULL,
                                         stdout=out_w, stderr=err_w, pass_fds=(theirs.fileno(),),
                                         env=env, cwd=cwd if cwd and os.path.isdir(cwd) else "/",
                                         start_new_session=True)
        except BaseException:
            ours.close()
            for fd in (out_r, err_r):
                os.close(fd)
            raise
        finally:
            theirs.close()
            os.close(out_w)
            os.close(err_w)
        self.pid = self.proc.pid
        self.chan = ours
        self.out_r, self.err_r = out_r, err_r
        try:
            self.pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            self.pidfd = None
        self.thread = threading.Thread(target=self._io, name="interp-io-%d" % self.pid, daemon=True)
        try:
            self.thread.start()
        except RuntimeError as e:  # no thread to be had: the pids limit
            self.proc.kill()
            self.proc.wait()
            for fd in (out_r, err_r) + ((self.pidfd,) if self.pidfd is not None else ()):
                os.close(fd)
            ours.close()
            raise InterpreterError("cannot start a thread: %s" % e)
        ready = self.wait_msg(time.monotonic() + CONFIG.start_timeout)
        if not isinstance(ready, dict) or ready.get("op") != "ready":
            self.kill()
            out, _ = self.err.take(0)
            raise InterpreterError("the interpreter did not start (%s)%s" % (
                describe_death(self.returncode) if self.dead else "no answer",
                (": " + out.decode("utf-8", "replace").strip()[-2000:]) if out else ""))
        self.version = ready.get("version", "")
        self.startup_ms = (time.monotonic() - t0) * 1000.0
        self.own_ms = float(ready.get("ms", 0))

    # -- the io thread --

    def _io(self):
        poller = select.poll()
        fds = {self.chan.fileno(): "chan", self.out_r: "out", self.err_r: "err"}
        if self.pidfd is not None:
            fds[self.pidfd] = "pid"
        for fd in fds:
            poller.register(fd, select.POLLIN)
        rbuf = bytearray()
        open_fds = set(fds)
        died = False
        try:
            while not died:
                try:
                    events = poller.poll()
                except InterruptedError:
                    continue
                kinds = {fds[fd]: ev for fd, ev in events}
                if "chan" in kinds:
                    try:
                        data = self.chan.recv(1 << 20)
                    except InterruptedError:
                        data = None
                    except OSError:
                        data = b""
                    if data:
                        rbuf += data
                        msgs = []
                        while len(rbuf) >= 4:
                            (n,) = struct.unpack_from("<I", rbuf)
                            if len(rbuf) < 4 + n:
                                break
                            try:
                                msgs.append(json.loads(bytes(rbuf[4:4 + n])))
                            except ValueError:
                                msgs.append({"op": "garbage"})
                            del rbuf[:4 + n]
                        if msgs:
                            with self.cv:
                                self.msgs.extend(msgs)
                                self.cv.notify_all()
                    elif data is not None:
                        poller.unregister(self.chan.fileno())
                        open_fds.discard(self.chan.fileno())
                        if self.pidfd is None:
                            died = True
                for kind, fd, stream in (("out", self.out_r, self.out), ("err", self.err_r, self.err)):
                    if kind in kinds:
                        try:
                            data = os.read(fd, 1 << 16)
                        except InterruptedError:
                            continue
                        except OSError:
                            data = b""
                        if data:
                            with self.cv:
                                if stream.feed(data):
                                    self.cv.notify_all()
                        else:
                            poller.unregister(fd)
                            open_fds.discard(fd)
                if "pid" in kinds:
                    died = True
            # The interpreter is gone: what it wrote is in the pipes now.
            rc = self.proc.wait()
            for fd, stream in ((self.out_r, self.out), (self.err_r, self.err)):
                if fd not in open_fds:
                    continue
                os.set_blocking(fd, False)
                for _ in range(256):
                    try:
                        data = os.read(fd, 1 << 16)
                    except OSError:
                        break
                    if not data:
                        break
                    with self.cv:
                        stream.feed(data)
            try:
                data = self.chan.recv(1 << 20, socket.MSG_DONTWAIT)
                rbuf += data
            except OSError:
                pass
            with self.cv:
                while len(rbuf) >= 4:
                    (n,) = struct.unpack_from("<I", rbuf)
                    if len(rbuf) < 4 + n:
                        break
                    try:
                        self.msgs.append(json.loads(bytes(rbuf[4:4 + n])))
                    except ValueError:
                        pass
                    del rbuf[:4 + n]
                self.returncode = rc
                self.dead = True
                self.cv.notify_all()
        finally:
            for fd in (self.out_r, self.err_r):
                try:
                    os.close(fd)
                except OSError:
                    pass
            try:
                self.chan.close()
            except OSError:
                pass
            if self.pidfd is not None:
                try:
                    os.close(self.pidfd)
                except OSError:
                    pass
        try:
            self.on_death(self)
        except Exception:
            lc.log("on interpreter death: %s" % traceback.format_exc())

    # -- used by the session, under its lock --

    def send(self, msg):
        data = json.dumps(msg).encode()
        self.chan.sendall(struct.pack("<I", len(data)) + data)

    def wait_msg(self, deadline):
        """The next message, "dead", or None at the deadline."""
        with self.cv:
            while not self.msgs and not self.dead:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cv.wait(left)
            if self.msgs:
                return self.msgs.popleft()
            return "dead"

    def wait_dead(self, timeout):
        deadline = time.monotonic() + timeout
        with self.cv:
            while not self.dead:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cv.wait(left)
        return True

    def take_output(self, n, wait):
        deadline = time.monotonic() + wait
        with self.cv:
            while not self.dead and (n not in self.out.segments or n not in self.err.segments):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cv.wait(left)
            return self.out.take(n), self.err.take(n)

    def interrupt(self):
        try:
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signal.SIGINT)
            else:
                os.kill(self.pid, signal.SIGINT)
        except OSError:
            pass

    def kill(self):
        """SIGKILL the interpreter and everything else the session runs."""
        self.killed = True
        if not self.dead:
            try:
                if self.pidfd is not None:
                    signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
                else:
                    os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass
        kill_everything_else(self.pid)
        self.wait_dead(5.0)


# ---- the session ---------------------------------------------------------------

class Busy(Exception):
    pass


class Session:
    def __init__(self):
        self.lock = threading.Lock()        # one execution (or restart) at a time
        self.interp = None
        self.bound = False
        self.identifier = ""
        self.pool = ""
        self.executions = 0
        self.restarts = 0
        self.executing = False
        self.lost_note = None                # said with the next execution
        self.start_error = None

    def _cwd(self):
        return CONFIG.data_dir if self.bound else "/"

    def start(self):
        """A new interpreter (the old one, if any, is dead or killed).
        Retries for a while: right after a fork bomb is killed, pids may
        still be short."""
        deadline = time.monotonic() + CONFIG.start_timeout
        delay = 0.01
        while True:
            try:
                interp = Interpreter(self._cwd(), self._on_death)
                if self.bound:
                    interp.send({"op": "setup", "n": 0, "env": self._env(), "cwd": CONFIG.data_dir})
                    ok = interp.wait_msg(time.monotonic() + CONFIG.start_timeout)
                    if not isinstance(ok, dict) or ok.get("op") != "ok":
                        interp.kill()
                        raise InterpreterError("the interpreter did not accept its setup")
                self.interp = interp
                self.start_error = None
                return interp
            except (OSError, InterpreterError) as e:
                self.start_error = str(e)
                if time.monotonic() > deadline:
                    self.interp = None
                    raise InterpreterError("cannot start an interpreter: %s" % e)
                lc.log("starting an interpreter failed (%s); retrying" % e)
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    @staticmethod
    def _env():
        return {k: v for k, v in os.environ.items() if k not in ("LEGION_CONTROL_FD", "LEGION_LISTEN_FD")}

    def bind(self, pool, identifier):
        with self.lock:
            self.pool, self.identifier = pool, identifier
            self.bound = True
            if self.interp is None or self.interp.dead:
                self.start()
                return
            self.interp.send({"op": "setup", "n": 0, "env": self._env(), "cwd": CONFIG.data_dir})
            ok = self.interp.wait_msg(time.monotonic() + CONFIG.start_timeout)
            if not isinstance(ok, dict) or ok.get("op") != "ok":
                self.interp.kill()
                self.start()

    def _on_death(self, interp):
        """From the interpreter's io thread. Outside an execution, start a
        fresh interpreter now and say so with the next execution."""
        if interp.killed or not self.bound:
            return
        if self.executing and self.interp is interp:
            return  # the execution reports it

        def restart():
            with self.lock:
                if self.interp is not interp:
                    return
                why = describe_death(interp.returncode, when="between executions")
                lc.log("%s; starting a fresh one" % why)
                self.lost_note = "%s; %s" % (why, LOST)
                kill_everything_else(interp.pid)
                self.restarts += 1
                try:
                    self.start()
                except InterpreterError as e:
                    lc.log(str(e))

        try:
            threading.Thread(target=restart, daemon=True).start()
        except RuntimeError:
            pass  # no thread now (pids): the next execution restarts it

    def restart(self):
        with self.lock:
            if self.interp is not None:
                self.interp.kill()
            self.restarts += 1
            self.lost_note = None
            self.start()

    def execute(self, code, timeout):
        if not self.lock.acquire(timeout=timeout):
            raise Busy()
        try:
            self.executing = True
            return self._execute(code, timeout)
        finally:
            self.executing = False
            self.lock.release()

    def _execute(self, code, timeout):
        restarted = False
        notes = []
        if self.lost_note:
            notes.append(self.lost_note)
            self.lost_note = None
            restarted = True
        interp = self.interp
        if interp is None or interp.dead:
            if interp is not None and not interp.killed:
                notes.append("%s; %s" % (describe_death(interp.returncode, when="between executions"), LOST))
                kill_everything_else(interp.pid)
            restarted = True
            self.restarts += 1
            self.start()  # InterpreterError -> 503
            interp = self.interp
        self.executions += 1
        n = self.executions  # also the cell's name in tracebacks: <cell N>
        oom_before = oom_kills()
        t0 = time.monotonic()
        try:
            interp.send({"op": "exec", "n": n, "code": code, "timeout": timeout})
        except OSError:
            pass  # it died just now: the wait below says so
        msg = interp.wait_msg(t0 + timeout)
        timed_out = False
        stuck = False
        if msg is None:
            timed_out = True
            interp.interrupt()
            msg = interp.wait_msg(time.monotonic() + CONFIG.kill_grace)
            if msg is None:
                stuck = True
                interp.kill()
                msg = "dead"
        elapsed = (time.monotonic() - t0) * 1000.0
        res = {"status": None, "stdout": "", "stderr": "", "result": None, "error": None,
               "executionTimeMs": round(elapsed, 3), "truncated": {"stdout": False, "stderr": False},
               "interpreterRestarted": False}
        if isinstance(msg, dict) and msg.get("op") == "done":
            (out, out_total), (err, err_total) = interp.take_output(n, 2.0)
            if timed_out:
                # Its forked copies would go on running the cell (a fork
                # bomb): kill them, and have the interpreter reap its own.
                killed = kill_forked_copies(interp.pid)
                if killed:
                    try:
                        interp.send({"op": "reap", "groups": killed})
                        interp.wait_msg(time.monotonic() + 5.0)
                    except OSError:
                        pass
            res["status"] = msg.get("status") or "Failed"
            res["result"] = msg.get("result")
            res["error"] = msg.get("error")
            if msg.get("resultTruncated"):
                res["truncated"]["result"] = True
        else:
            # Dead (by itself, or killed by us because it did not stop).
            if not interp.dead:
                interp.kill()
            (out, out_total), (err, err_total) = interp.take_output(n, 0)
            if stuck:
                res["status"] = "TimedOut"
                what = ("the execution exceeded its timeout of %g s and did not stop within %g s of "
                        "being interrupted (busy in C code, or it ignores KeyboardInterrupt), so the "
                        "interpreter was killed" % (timeout, CONFIG.kill_grace))
                res["error"] = {"type": "TimeoutError", "message": what, "traceback": None}
            else:
                what = describe_death(interp.returncode, oom_before, "during the execution")
                if timed_out:
                    res["status"] = "TimedOut"
                    res["error"] = {"type": "TimeoutError", "message": what, "traceback": None}
                else:
                    res["status"] = "Failed"
                    res["error"] = {"type": "InterpreterDied", "message": what, "traceback": None}
                kill_everything_else(interp.pid)
            notes.append("%s; %s" % (what, LOST))
            restarted = True
            self.restarts += 1
            try:
                self.start()
            except InterpreterError as e:
                notes.append(str(e))
        res["stdout"] = out.decode("utf-8", "replace")
        res["stderr"] = err.decode("utf-8", "replace")
        res["truncated"]["stdout"] = out_total > len(out)
        res["truncated"]["stderr"] = err_total > len(err)
        res["interpreterRestarted"] = restarted
        if notes:
            res["message"] = " ".join(n[:1].upper() + n[1:] + ("" if n.endswith(".") else ".") for n in notes)
        res["execution"] = self.executions
        return res

    def health(self):
        i = self.interp
        state = "running" if i is not None and not i.dead else ("starting" if self.lock.locked() else "dead")
        doc = {"interpreter": state, "executions": self.executions, "restarts": self.restarts,
               "identifier": self.identifier, "pid": i.pid if i is not None else None}
        if state != "running" and self.start_error:
            doc["error"] = self.start_error
        return doc


SESSION = Session()


# ---- files under /mnt/data -------------------------------------------------------

class ApiError(Exception):
    def __init__(self, status, code, message, **extra):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


FILES_LOCK = threading.Lock()  # uploads one at a time: the quota stays exact
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def split_path(raw):
    if not raw:
        raise ApiError(400, "InvalidPath", "empty file path")
    if "\0" in raw:
        raise ApiError(400, "InvalidPath", "file paths may not contain NUL")
    if raw.startswith("/"):
        raise ApiError(400, "InvalidPath", "absolute paths are not allowed; paths are relative to /mnt/data")
    parts = raw.split("/")
    for p in parts:
        if p in ("", ".", ".."):
            raise ApiError(400, "InvalidPath", "file paths may not contain `..`, `.` or empty parts: `%s`" % raw[:200])
        if len(os.fsencode(p)) > MAX_NAME_BYTES:
            raise ApiError(400, "NameTooLong", "a file name is longer than %d bytes" % MAX_NAME_BYTES)
    if len(os.fsencode(raw)) > MAX_PATH_BYTES:
        raise ApiError(400, "NameTooLong", "the file path is longer than %d bytes" % MAX_PATH_BYTES)
    return parts


def _data_root():
    return os.path.realpath(CONFIG.data_dir)


def _inside(root, real):
    if real == root:
        return []
    if not real.startswith(root.rstrip("/") + "/"):
        return None
    return real[len(root.rstrip("/")) + 1:].split("/")


def resolve(parts, follow_last):
    """The path's components below the data root after resolving symbolic
    links (which may point within it, never out of it)."""
    root = _data_root()
    if follow_last:
        comps = _inside(root, os.path.realpath(os.path.join(root, *parts)))
    else:
        parent = _inside(root, os.path.realpath(os.path.join(root, *parts[:-1])))
        comps = None if parent is None else parent + [parts[-1]]
    if comps is None:
        raise ApiError(403, "PathOutsideData",
                       "`%s` leads outside /mnt/data (through a symbolic link)" % "/".join(parts)[:200])
    return root, comps


def open_dir(root, comps, create=False, shown=""):
    """An fd of root/comps..., walked one component at a time with
    O_NOFOLLOW, so no symbolic link can lead out on the way."""
    fd = os.open(root, _O_DIR)
    try:
        for c in comps:
            try:
                nfd = os.open(c, _O_DIR, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise ApiError(404, "NotFound", "no such file: `%s`" % shown)
                try:
                    os.mkdir(c, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                nfd = os.open(c, _O_DIR, dir_fd=fd)
            except NotADirectoryError:
                raise ApiError(409, "NotADirectory", "`%s` is not a directory" % c)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise ApiError(403, "PathOutsideData", "`%s` changed into a symbolic link" % c)
                raise
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _walk(fd, prefix, depth, out, counter):
    """Regular files below fd (not following links): (name, stat)."""
    try:
        it = os.scandir(fd)
    except OSError:
        return
    with it:
        entries = list(it)
    for e in entries:
        if counter[0] >= MAX_LIST:
            return
        name = prefix + e.name
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            out.append((name, st))
            counter[0] += 1
        elif stat.S_ISDIR(st.st_mode) and depth < 64:
            try:
                sub = os.open(e.name, _O_DIR, dir_fd=fd)
            except OSError:
                continue
            try:
                _walk(sub, name + "/", depth + 1, out, counter)
            finally:
                os.close(sub)


def all_files():
    root = _data_root()
    try:
        fd = os.open(root, _O_DIR)
    except OSError as e:
        raise ApiError(503, "NoDataDirectory", "/mnt/data is not available: %s" % e.strerror)
    out = []
    try:
        _walk(fd, "", 0, out, [0])
    finally:
        os.close(fd)
    return out


def usage():
    return sum(st.st_size for _, st in all_files())


def entry(name, st):
    return {"name": name, "size": st.st_size, "modified": _now_iso(st.st_mtime)}


def list_files():
    files = [(n, st) for n, st in all_files() if not n.rsplit("/", 1)[-1].startswith(UPLOAD_PREFIX)]
    files.sort(key=lambda x: x[0])
    return [entry(n, st) for n, st in files]


def open_file(raw):
    parts = split_path(raw)
    root, comps = resolve(parts, True)
    if not comps:
        raise ApiError(400, "IsADirectory", "`%s` is a directory" % raw)
    dfd = open_dir(root, comps[:-1], shown=raw)
    try:
        fd = os.open(comps[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dfd)
    except FileNotFoundError:
        raise ApiError(404, "NotFound", "no such file: `%s`" % raw)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ApiError(403, "PathOutsideData", "`%s` changed into a symbolic link" % raw)
        raise
    finally:
        os.close(dfd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ApiError(400, "IsADirectory", "`%s` is a directory" % raw)
        raise ApiError(400, "NotARegularFile", "`%s` is not a regular file" % raw)
    os.set_blocking(fd, True)
    return fd, st


def delete_file(raw):
    parts = split_path(raw)
    root, comps = resolve(parts, False)
    dfd = open_dir(root, comps[:-1], shown=raw)
    try:
        try:
            st = os.stat(comps[-1], dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            raise ApiError(404, "NotFound", "no such file: `%s`" % raw)
        if stat.S_ISDIR(st.st_mode):
            try:
                os.rmdir(comps[-1], dir_fd=dfd)
            except OSError as e:
                if e.errno == errno.ENOTEMPTY:
                    raise ApiError(409, "DirectoryNotEmpty", "directory `%s` is not empty" % raw)
                raise
        else:
            os.unlink(comps[-1], dir_fd=dfd)
    finally:
        os.close(dfd)


class Upload:
    """Files being written to temporary names, renamed into place at the
    end, all or none; the limits are checked while the bytes arrive."""

    def __init__(self):
        self.used = usage()
        self.pending = []   # (dfd, tmp, name, shown)
        self.added = 0
        self.cur = None     # [fd, shown, old size, size] of the file being written

    def _too_big(self, shown, size):
        if size > CONFIG.max_file:
            raise ApiError(413, "FileTooLarge", "`%s` is larger than the limit per file of %s" % (
                shown, limit_text(CONFIG.max_file)), limit=CONFIG.max_file)

    def _quota(self, shown, size, old, known=False):
        total = self.used + self.added - old + size
        if total > CONFIG.max_bytes:
            raise ApiError(413, "SessionStorageFull",
                           "`%s` (%s bytes) does not fit: the session's files may take %s in all, "
                           "%d bytes are in use" % (shown, ("%d" if known else "at least %d") % size,
                                                    limit_text(CONFIG.max_bytes), self.used + self.added),
                           limit=CONFIG.max_bytes, used=self.used + self.added)

    def begin(self, raw, length=None):
        """Start writing one file; then write() its bytes and end()."""
        parts = split_path(raw)
        if parts[-1].startswith(UPLOAD_PREFIX):
            raise ApiError(400, "InvalidPath", "names starting with `%s` are reserved" % UPLOAD_PREFIX)
        root, comps = resolve(parts, False)
        dfd = open_dir(root, comps[:-1], create=True, shown=raw)
        name = comps[-1]
        try:
            old = 0
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    raise ApiError(409, "IsADirectory", "`%s` is a directory" % raw)
                if stat.S_ISREG(st.st_mode):
                    old = st.st_size
            except FileNotFoundError:
                pass
            if length is not None:
                self._too_big(raw, length)
                self._quota(raw, length, old, known=True)
            tmp = UPLOAD_PREFIX + os.urandom(6).hex()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=dfd)
        except BaseException:
            os.close(dfd)
            raise
        self.pending.append((dfd, tmp, name, raw))
        self.cur = [fd, raw, old, 0]

    def write(self, data):
        fd, raw, old, size = self.cur
        size += len(data)
        self.cur[3] = size
        self._too_big(raw, size)
        self._quota(raw, size, old)
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ApiError(507, "NoSpace", "no space left for `%s` in /mnt/data (the session's disk is full; "
                               "%d bytes in use)" % (raw, self.used + self.added))
            raise

    def end(self):
        fd, raw, old, size = self.cur
        self.cur = None
        os.close(fd)
        self.added += size - old

    def commit(self):
        out = []
        for dfd, tmp, name, shown in self.pending:
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            out.append(entry(shown, st))
        self.close()
        return out

    def abort(self):
        if self.cur is not None:
            try:
                os.close(self.cur[0])
            except OSError:
                pass
            self.cur = None
        for dfd, tmp, _, _ in self.pending:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
        self.close()

    def close(self):
        for dfd, _, _, _ in self.pending:
            try:
                os.close(dfd)
            except OSError:
                pass
        self.pending = []


# ---- HTTP ------------------------------------------------------------------------

BadRequest = lc.BadRequest


class Body:
    """A request body, read as it is needed (Content-Length or chunked)."""

    def __init__(self, conn, rfile, headers, version):
        self.conn = conn
        self.rfile = rfile
        self.chunked, length, self.expect = lc.body_framing(headers, version)
        self.length = None if self.chunked else length or 0
        self.left = self.length or 0
        self.done = not self.chunked and self.left == 0

    def go_ahead(self):
        if self.expect and not self.done:
            self.expect = False
            self.conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

    def read(self, n=1 << 16):
        """Up to n bytes; b"" at the end."""
        if self.done:
            return b""
        self.go_ahead()
        if not self.chunked:
            data = self.rfile.read1(min(n, self.left)) if self.left else b""
            if not data:
                raise BadRequest(400, "the request body ended early")
            self.left -= len(data)
            if self.left == 0:
                self.done = True
            return data
        if self.left == 0:
            size = lc.read_chunk_size(self.rfile)
            if size == 0:
                self.done = True
                return b""
            self.left = size
        data = self.rfile.read1(min(n, self.left))
        if not data:
            raise BadRequest(400, "truncated chunked body")
        self.left -= len(data)
        if self.left == 0:
            self.rfile.readline(lc.HTTP_MAX_LINE + 1)  # the CRLF after the chunk
        return data

    def chunks(self):
        while True:
            data = self.read()
            if not data:
                return
            yield data

    def read_all(self, limit, what):
        if self.length is not None and self.length > limit:
            raise ApiError(413, "BodyTooLarge", "%s larger than %d bytes" % (what, limit), limit=limit)
        parts, size = [], 0
        for c in self.chunks():
            size += len(c)
            if size > limit:
                raise ApiError(413, "BodyTooLarge", "%s larger than %d bytes" % (what, limit), limit=limit)
            parts.append(c)
        return b"".join(parts)


class Request:
    __slots__ = ("method", "target", "path", "query", "version", "headers", "body", "keep")


def _json_bytes(obj):
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


def error_doc(code, message, **extra):
    e = {"code": code, "message": message}
    e.update(extra)
    return {"error": e}


class Connection:
    def __init__(self, sock):
        self.sock = sock
        self.rfile = sock.makefile("rb", 65536)

    def serve(self):
        try:
            while self.one():
                pass
        except (OSError, ValueError):
            pass
        finally:
            try:
                self.rfile.close()
                self.sock.close()
            except OSError:
                pass

    def head(self, status, headers, length, keep, version):
        lines = ["HTTP/1.1 %d %s" % (status, _REASONS.get(status, "Unknown"))]
        lines += ["%s: %s" % kv for kv in headers]
        lines.append("Content-Length: %d" % length)
        if not keep:
            lines.append("Connection: close")
        elif version == "HTTP/1.0":
            lines.append("Connection: keep-alive")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def send(self, req, status, body=b"", headers=(("Content-Type", "application/json"),), obj=None):
        if obj is not None:
            body = _json_bytes(obj)
        keep = req.keep if req is not None else False
        if req is not None and req.body is not None and not req.body.done:
            keep = False  # the rest of the body was not read
        version = req.version if req is not None else "HTTP/1.1"
        if status == 204:
            body = b""
        self.sock.sendall(self.head(status, list(headers), len(body), keep, version) + body)
        if req is not None and req.body is not None and not req.body.done:
            self.linger(req.body)
        return keep

    def linger(self, body):
        """Before closing on a body we did not read (a refused upload): read
        and drop the rest of it (up to 1 GiB and 5 s), so that a client that
        sends it all before reading gets our answer instead of EPIPE. Not
        when it waits for 100 Continue: it will not send the body."""
        if body.expect:
            return
        try:
            self.sock.settimeout(1.0)
            left = 1 << 30
            deadline = time.monotonic() + 5.0
            while left > 0 and time.monotonic() < deadline:
                data = body.read(min(left, 1 << 18))
                if not data:
                    break
                left -= len(data)
        except (OSError, BadRequest, ValueError):
            pass

    def one(self):
        try:
            req = self.read_request()
        except BadRequest as e:
            self.send(None, e.status, obj=error_doc("BadRequest", str(e)))
            return False
        if req is None:
            return False
        try:
            return route(self, req)
        except ApiError as e:
            return self.send(req, e.status, obj=error_doc(e.code, e.message, **e.extra))
        except BadRequest as e:
            req.keep = False
            return self.send(req, e.status, obj=error_doc("BadRequest", str(e)))
        except (BrokenPipeError, ConnectionResetError):
            return False
        except Exception as e:
            lc.log("internal error in %s %s:\n%s" % (req.method, req.path, traceback.format_exc()))
            req.keep = False
            return self.send(req, 500, obj=error_doc("InternalError", "%s: %s" % (type(e).__name__, e)))

    def read_request(self):
        rfile = self.rfile
        headers = {}
        head = lc.read_head(rfile, headers)
        if head is None:
            return None
        method, target, version = head
        req = Request()
        req.method, req.target, req.version, req.headers = method, target, version, headers
        req.keep = lc.keep_alive(headers, version)
        req.body = Body(self.sock, rfile, headers, version)
        path, _, query = target.partition("?")
        req.path = path.partition("#")[0]
        req.query = query
        return req


def _decode_path(p):
    try:
        return urllib.parse.unquote_to_bytes(p).decode("utf-8", "surrogateescape")
    except Exception:
        raise ApiError(400, "InvalidPath", "malformed percent-encoding in the path")


def _method_not_allowed(conn, req, allow):
    req.keep = False
    return conn.send(req, 405, obj=error_doc("MethodNotAllowed", "use %s" % " or ".join(allow)),
                     headers=(("Content-Type", "application/json"), ("Allow", ", ".join(allow))))


def route(conn, req):
    p = req.path
    if p == "/execute":
        if req.method != "POST":
            return _method_not_allowed(conn, req, ["POST"])
        return do_execute(conn, req)
    if p == "/health":
        if req.method != "GET":
            return _method_not_allowed(conn, req, ["GET"])
        return conn.send(req, 200, obj=SESSION.health())
    if p == "/restart":
        if req.method != "POST":
            return _method_not_allowed(conn, req, ["POST"])
        try:
            SESSION.restart()
        except InterpreterError as e:
            raise ApiError(503, "InterpreterUnavailable", str(e))
        return conn.send(req, 200, obj={"interpreterRestarted": True, "message": LOST[0].upper() + LOST[1:] + "."})
    if p in ("/files", "/files/"):
        if req.method == "GET":
            return conn.send(req, 200, obj=list_files())
        if req.method == "POST":
            return do_multipart(conn, req)
        return _method_not_allowed(conn, req, ["GET", "POST"])
    if p.startswith("/files/"):
        raw = _decode_path(p[len("/files/"):])
        if req.method == "GET":
            return do_download(conn, req, raw)
        if req.method == "PUT":
            with FILES_LOCK:
                up = Upload()
                try:
                    up.begin(raw, req.body.length)
                    for chunk in req.body.chunks():
                        up.write(chunk)
                    up.end()
                    entries = up.commit()
                except BaseException:
                    up.abort()
                    raise
            return conn.send(req, 201, obj=entries[0])
        if req.method == "DELETE":
            delete_file(raw)
            return conn.send(req, 204)
        return _method_not_allowed(conn, req, ["GET", "PUT", "DELETE"])
    return conn.send(req, 404, obj=error_doc("NotFound", "no such endpoint `%s`" % p[:200]))


def do_execute(conn, req):
    raw = req.body.read_all(CONFIG.max_code, "the request body is")
    try:
        doc = json.loads(raw) if raw else None
    except ValueError as e:
        raise ApiError(400, "BadRequest", "the body is not JSON: %s" % e)
    if not isinstance(doc, dict):
        raise ApiError(400, "BadRequest", 'the body must be a JSON object {"code": "...", "timeoutSeconds": 30}')
    code = doc.get("code")
    if not isinstance(code, str):
        raise ApiError(400, "BadRequest", "`code` must be a string")
    timeout = doc.get("timeoutSeconds", CONFIG.default_timeout)
    if timeout is None:
        timeout = CONFIG.default_timeout
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (0 < timeout <= CONFIG.max_timeout):
        raise ApiError(400, "BadRequest", "`timeoutSeconds` must be a number above 0 and at most %g" % CONFIG.max_timeout)
    try:
        res = SESSION.execute(code, float(timeout))
    except Busy:
        raise ApiError(409, "SessionBusy", "another execution held the session for longer than this one's "
                       "timeout (%g s)" % timeout)
    except InterpreterError as e:
        raise ApiError(503, "InterpreterUnavailable", str(e))
    res["id"] = "exec-" + os.urandom(8).hex()
    res["identifier"] = SESSION.identifier
    return conn.send(req, 200, obj=res)


def do_download(conn, req, raw):
    fd, st = open_file(raw)
    with os.fdopen(fd, "rb") as f:
        base = raw.rsplit("/", 1)[-1]
        headers = [("Content-Type", "application/octet-stream"),
                   ("Content-Disposition", "attachment; filename*=UTF-8''%s" % urllib.parse.quote(base, safe="")),
                   ("Last-Modified", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(st.st_mtime)))]
        keep = req.keep and req.body.done
        conn.sock.sendall(conn.head(200, headers, st.st_size, keep, req.version))
        if st.st_size:
            sent = conn.sock.sendfile(f, 0, st.st_size)
            if sent < st.st_size:  # it shrank while we sent it: the client sees a short body
                return False
    return keep


# -- multipart/form-data, streamed --

def _params(value):
    """'form-data; name="a"; filename="b"' -> ("form-data", {"name": "a", ...})."""
    out = {}
    head, _, rest = value.partition(";")
    i = 0
    while i < len(rest):
        m = re.compile(r'\s*([^=;\s]+)\s*=\s*("((?:[^"\\]|\\.)*)"|[^;]*)\s*;?').match(rest, i)
        if not m:
            break
        k = m.group(1).lower()
        v = m.group(3) if m.group(3) is not None else m.group(2).strip()
        if m.group(3) is not None:
            v = re.sub(r"\\(.)", r"\1", v)
        out[k] = v
        i = m.end()
    if "filename*" in out:
        enc, _, rest2 = out["filename*"].partition("'")
        _, _, val = rest2.partition("'")
        try:
            out["filename"] = urllib.parse.unquote(val, encoding=enc or "utf-8", errors="strict")
        except (LookupError, UnicodeDecodeError):
            pass
    return head.strip().lower(), out


class _Scanner:
    def __init__(self, body):
        self.body = body
        self.buf = bytearray(b"\r\n")  # so the first boundary looks like the others

    def fill(self):
        data = self.body.read()
        if not data:
            return False
        self.buf += data
        return True

    def until(self, delim, sink=None, limit=None):
        """Pass bytes up to delim to sink (dropped without one); consume
        delim. False if the body ended first."""
        seen = 0
        while True:
            i = self.buf.find(delim)
            if i >= 0:
                if sink and i:
                    sink(bytes(self.buf[:i]))
                seen += i
                del self.buf[:i + len(delim)]
                return True
            keep = len(delim) - 1
            if len(self.buf) > keep:
                n = len(self.buf) - keep
                seen += n
                if sink:
                    sink(bytes(self.buf[:n]))
                del self.buf[:n]
            if limit is not None and seen > limit:
                raise BadRequest(400, "multipart part headers too large")
            if not self.fill():
                return False

    def need(self, n):
        while len(self.buf) < n:
            if not self.fill():
                return False
        return True


def do_multipart(conn, req):
    ctype, params = _params(req.headers.get("content-type", ""))
    boundary = params.get("boundary", "")
    if ctype != "multipart/form-data" or not boundary or len(boundary) > 200:
        raise ApiError(415, "UnsupportedMediaType",
                       "POST /files takes multipart/form-data; upload raw bytes with PUT /files/{path}")
    delim = b"\r\n--" + boundary.encode("latin-1")
    sc = _Scanner(req.body)
    with FILES_LOCK:
        up = Upload()
        try:
            if not sc.until(delim):
                raise BadRequest(400, "no multipart boundary in the body")
            nparts = 0
            while True:
                if not sc.need(2):
                    raise BadRequest(400, "the multipart body ended early")
                if sc.buf[:2] == b"--":
                    while sc.fill():  # the epilogue
                        del sc.buf[:]
                    break
                hdr = bytearray()
                if not sc.until(b"\r\n\r\n", hdr.extend, limit=16384):
                    raise BadRequest(400, "the multipart body ended early")
                nparts += 1
                if nparts > 1000:
                    raise BadRequest(400, "more than 1000 parts")
                disp = {}
                for line in bytes(hdr).split(b"\r\n")[1:]:  # [0]: the rest of the boundary line
                    k, _, v = line.decode("utf-8", "replace").partition(":")
                    if k.strip().lower() == "content-disposition":
                        disp = _params(v)[1]
                filename = disp.get("filename")
                if filename:
                    up.begin(filename)
                    ok = sc.until(delim, up.write)
                    up.end()
                else:
                    ok = sc.until(delim)  # a plain form field: ignored
                if not ok:
                    raise BadRequest(400, "the multipart body ended early")
            if not up.pending:
                raise ApiError(400, "BadRequest", "no file in the multipart body (parts need a filename)")
            entries = up.commit()
        except BaseException:
            up.abort()
            raise
    return conn.send(req, 201, obj=entries)


# ---- the control channel and main ------------------------------------------------

def serve_forever(listener):
    while True:
        try:
            sock, _ = listener.accept()
        except InterruptedError:
            continue
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                lc.log("accept: %s" % e)
                time.sleep(0.05)
                continue
            lc.log("accept: %s; not serving any more" % e)
            return
        c = Connection(sock)
        try:
            threading.Thread(target=c.serve, daemon=True).start()
        except RuntimeError:
            # No thread to be had (the session's code used up the pids):
            # serve this connection here, the others wait.
            c.serve()


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


def main():
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
             ms="%.1f" % lc.now_ms(T_START), interpreter_ms="%.1f" % i.startup_ms)

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
    threading.Thread(target=serve_forever, args=(listener,), name="legion-accept", daemon=True).start()
    lc.log("session bound: pool=%s identifier=%s in %.1f ms" % (pool, identifier, ms))
    ctl.send_fields("ready", [("id", frame.get("id")), ("phase", "specialized"), ("app", pool),
                              ("identifier", identifier), ("ms", "%.1f" % ms)])
    lc.control_loop(ctl)
    threading.Event().wait()


if __name__ == "__main__":
    main()
