"""The session's interpreter process as the supervisor runs it
(docs/sessions-runtime.md): starting interpreter.py, the thread that reads
all it writes (messages, stdout, stderr, its pidfd), and the output cut
into executions at the end markers.

Messages both ways are a u32 little-endian length, then that many bytes of
JSON (an object with "op"); see interpreter.py."""
import collections
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

from legion_runtime.control import format_exc, log
from legion_runtime.session.config import CONFIG
from legion_runtime.session.procs import describe_death, kill_everything_else

INTERPRETER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "interpreter.py")
PYTHON = sys.executable or "/usr/bin/python3"


def encode_message(msg):
    data = json.dumps(msg).encode()
    return struct.pack("<I", len(data)) + data


def split_messages(rbuf):
    """The whole messages at the start of the bytearray rbuf, removed from
    it; what is not JSON comes out as {"op": "garbage"}."""
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
    return msgs


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
                        msgs = split_messages(rbuf)
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
                self.msgs.extend(split_messages(rbuf))
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
            log("on interpreter death: %s" % format_exc())

    # -- used by the session, under its lock --

    def send(self, msg):
        self.chan.sendall(encode_message(msg))

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

    def send_signal(self, sig):
        """Through the pidfd when there is one: the pid may be reused."""
        try:
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, sig)
            else:
                os.kill(self.pid, sig)
        except OSError:
            pass

    def interrupt(self):
        self.send_signal(signal.SIGINT)

    def kill(self):
        """SIGKILL the interpreter and everything else the session runs."""
        self.killed = True
        if not self.dead:
            self.send_signal(signal.SIGKILL)
        kill_everything_else(self.pid)
        self.wait_dead(5.0)
