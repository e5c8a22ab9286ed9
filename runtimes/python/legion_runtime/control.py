"""The worker side of the legion-init control channel (docs/init-protocol.md,
docs/runtimes.md), shared by the Python and the custom-handler workers and
the session supervisor: framing, the wait for specialize, the specialize
steps every worker takes, and the reports to the host.

A frame is a u32 little-endian payload length, then the payload: NUL
terminated "key=value" fields, the first one "op=<verb>". File descriptors
come as SCM_RIGHTS with the first byte of a frame (at most 3). Standard
library only: this runs inside placeholders before any user code exists."""
import array
import os
import socket
import struct
import sys
import threading
import time

PROTO_MAX = 1 << 20
PROTO_MAX_FDS = 3
# init appends "via=worker\0" to what we send: leave room for it.
SEND_MAX = PROTO_MAX - 64
FIELD_MAX = 64 * 1024  # a message or traceback longer than this is cut

_CMSG_SPACE = socket.CMSG_SPACE(PROTO_MAX_FDS * array.array("i").itemsize)


class ProtocolError(Exception):
    pass


class SpecializeError(Exception):
    """A failure to specialize, reported as op=error phase=specialize."""

    def __init__(self, type_, message, tb=None, exception=None):
        super().__init__(message)
        self.type = type_
        self.message = message
        self.traceback = tb
        self.exception = exception


class Frame:
    __slots__ = ("fields", "fds")

    def __init__(self, fields, fds):
        self.fields = fields  # [(key, value)], in order
        self.fds = fds

    @property
    def op(self):
        return self.fields[0][1]

    def get(self, key, default=None):
        for k, v in self.fields:
            if k == key:
                return v
        return default

    def getall(self, key):
        return [v for k, v in self.fields if k == key]

    def close_fds(self):
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []


def _clean(value):
    s = str(value)
    if "\0" in s:
        s = s.replace("\0", "\\0")
    if len(s) > FIELD_MAX:
        s = s[: FIELD_MAX - 40] + "\n[... cut by the legion worker]"
    return s


def encode(op, fields=()):
    parts = [b"op=" + _clean(op).encode("utf-8", "surrogateescape") + b"\0"]
    for k, v in fields:
        if v is None:
            continue
        parts.append(("%s=%s" % (k, _clean(v))).encode("utf-8", "surrogateescape") + b"\0")
    payload = b"".join(parts)
    if len(payload) > SEND_MAX:
        raise ProtocolError("frame of %d bytes is too large" % len(payload))
    return struct.pack("<I", len(payload)) + payload


def parse(payload):
    if not payload or payload[-1:] != b"\0":
        raise ProtocolError("payload does not end in NUL")
    fields = []
    for raw in payload[:-1].split(b"\0"):
        k, sep, v = raw.partition(b"=")
        if not sep or not k:
            raise ProtocolError("malformed field")
        fields.append((k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape")))
    if fields[0][0] != "op":
        raise ProtocolError("first field is not op=")
    return fields


class Control:
    """fd 3 (LEGION_CONTROL_FD). recv() from one thread; send() from any."""

    def __init__(self, fd):
        self.sock = socket.socket(fileno=fd)
        # Nothing the app starts later inherits the channel.
        self.sock.set_inheritable(False)
        self.sock.setblocking(True)
        self._send_lock = threading.Lock()

    @classmethod
    def from_env(cls):
        v = os.environ.get("LEGION_CONTROL_FD")
        if not v:
            raise SystemExit("legion worker: LEGION_CONTROL_FD is not set (run me under legion-init --worker-control)")
        return cls(int(v))

    def send(self, op, **fields):
        self.send_fields(op, list(fields.items()))

    def send_fields(self, op, fields):
        data = encode(op, fields)
        with self._send_lock:
            self.sock.sendall(data)

    def _read_exact(self, n, first):
        """Read n bytes; with first, also take the fds of the frame."""
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        fds = []
        while got < n:
            if first and got == 0:
                flags = getattr(socket, "MSG_CMSG_CLOEXEC", 0)
                nbytes, anc, mflags, _ = self.sock.recvmsg_into([view[got:]], _CMSG_SPACE, flags)
                for level, type_, data in anc:
                    if level == socket.SOL_SOCKET and type_ == socket.SCM_RIGHTS:
                        a = array.array("i")
                        a.frombytes(data[: len(data) - (len(data) % a.itemsize)])
                        fds.extend(a)
                # CMSG_SPACE rounds up: one fd more than the maximum fits
                # without MSG_CTRUNC.
                if mflags & socket.MSG_CTRUNC or len(fds) > PROTO_MAX_FDS:
                    for fd in fds:
                        os.close(fd)
                    raise ProtocolError("too many fds with a frame")
            else:
                nbytes = self.sock.recv_into(view[got:])
            if nbytes == 0:
                for fd in fds:
                    os.close(fd)
                if got == 0 and first:
                    return None, []
                raise ProtocolError("EOF in the middle of a frame")
            got += nbytes
        return bytes(buf), fds

    def recv(self):
        """The next Frame, or None at EOF."""
        hdr, fds = self._read_exact(4, True)
        if hdr is None:
            return None
        try:
            (n,) = struct.unpack("<I", hdr)
            if n == 0 or n > PROTO_MAX:
                raise ProtocolError("bad frame length %d" % n)
            payload, _ = self._read_exact(n, False)
            return Frame(parse(payload), fds)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise


def listen_socket(frame):
    """The listening socket to serve on: the fd that came with specialize,
    else LEGION_LISTEN_FD (inherited from the sandbox). Other fds are closed."""
    fd = None
    if frame.fds:
        fd = frame.fds[0]
        for extra in frame.fds[1:]:
            os.close(extra)
        frame.fds = []
    else:
        v = os.environ.get("LEGION_LISTEN_FD")
        if v:
            try:
                fd = int(v)
                os.fstat(fd)
            except (ValueError, OSError) as e:
                raise SpecializeError("ListenError", "LEGION_LISTEN_FD=%s is not an open descriptor: %s" % (v, e))
    if fd is None:
        raise SpecializeError("ListenError", "no listening socket: specialize carried no fd and LEGION_LISTEN_FD is unset")
    try:
        s = socket.socket(fileno=fd)
    except OSError as e:
        os.close(fd)
        raise SpecializeError("ListenError", "listening fd %d: %s" % (fd, e))
    s.set_inheritable(False)
    s.setblocking(True)
    try:
        if s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) != socket.SOCK_STREAM or \
                not s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            s.close()
            raise SpecializeError("ListenError", "fd %d is not a listening stream socket" % fd)
    except OSError as e:
        s.close()
        raise SpecializeError("ListenError", "fd %d is not a socket: %s" % (fd, e))
    return s


def apply_env(frame):
    """env=K=V fields into os.environ (and so into child processes)."""
    for item in frame.getall("env"):
        k, sep, v = item.partition("=")
        if not sep or not k or "\0" in k:
            raise SpecializeError("InvalidEnv", "env field `%s` is not K=V" % item)
        os.environ[k] = v


def parse_revision(frame):
    return frame.get("app", ""), frame.get("revision", "")


def prepare_specialize(frame):
    """What an app worker does first on specialize: the socket to serve on,
    the app's env applied, its working directory (/code unless the frame
    says otherwise) entered. Returns (app, revision, listener, workdir)."""
    app, revision = parse_revision(frame)
    listener = listen_socket(frame)
    apply_env(frame)
    workdir = frame.get("workdir") or "/code"
    try:
        os.chdir(workdir)
    except OSError as e:
        raise SpecializeError("EntrypointNotFound", "working directory %s: %s" % (workdir, e.strerror))
    return app, revision, listener, os.getcwd()


def serve_specialized(ctl, frame, app, revision, ms):
    """Tell the host the app worker is specialized, answer the control
    channel until it closes, then keep serving until init ends us."""
    log("specialized app=%s revision=%s in %.1f ms" % (app, revision, ms))
    ctl.send_fields("ready", [("id", frame.get("id")), ("phase", "specialized"), ("app", app),
                              ("revision", revision), ("ms", "%.1f" % ms)])
    control_loop(ctl)
    threading.Event().wait()


def log(msg):
    try:
        sys.stderr.write("legion: %s\n" % msg)
        sys.stderr.flush()
    except Exception:
        pass


def report_specialize_error(ctl, frame, err):
    """Send op=error phase=specialize and log it; the caller then exits."""
    fields = [("id", frame.get("id") if frame else None), ("phase", "specialize"),
              ("type", err.type), ("message", err.message)]
    if err.exception:
        fields.append(("exception", err.exception))
    if err.traceback:
        fields.append(("traceback", err.traceback))
    log("specialize failed: %s: %s" % (err.type, err.message))
    if err.traceback:
        try:
            sys.stderr.write(err.traceback if err.traceback.endswith("\n") else err.traceback + "\n")
            sys.stderr.flush()
        except Exception:
            pass
    try:
        ctl.send_fields("error", fields)
    except OSError:
        pass


# traceback is imported where it is used: with tokenize and textwrap it
# costs every cold start of the custom and session workers 3 ms, and only
# failures use it.

def format_exc():
    """The traceback of the exception being handled."""
    import traceback
    return traceback.format_exc()


def format_exception_for(exc, skip_files=()):
    """Traceback text without the worker's own frames."""
    import traceback
    te = traceback.TracebackException.from_exception(exc)

    def trim(t):
        keep = [f for f in t.stack
                if f.filename not in skip_files and not f.filename.startswith("<frozen importlib")]
        t.stack = traceback.StackSummary.from_list(keep)
        if t.__cause__:
            trim(t.__cause__)
        if t.__context__:
            trim(t.__context__)

    trim(te)
    return "".join(te.format())


def reject_second_specialize(ctl, frame):
    frame.close_fds()
    ctl.send_fields("error", [("id", frame.get("id")), ("phase", "specialize"), ("type", "AlreadySpecialized"),
                              ("message", "this instance is already specialized; a sandbox is specialized once")])


def control_loop(ctl, on_other=None):
    """After specialization: answer what still arrives on the channel."""
    while True:
        try:
            f = ctl.recv()
        except (ProtocolError, OSError) as e:
            log("control channel: %s" % e)
            return
        if f is None:
            return
        if f.op == "specialize":
            reject_second_specialize(ctl, f)
        else:
            f.close_fds()
            ctl.send_fields("error", [("id", f.get("id")), ("message", "unknown op `%s`" % f.op)])


def wait_for_specialize(ctl):
    """Answer the host until `specialize` comes, and return that frame.

    Any other op gets an error; a broken channel or the host going away
    before it specialized us ends the worker."""
    while True:
        try:
            frame = ctl.recv()
        except ProtocolError as e:
            log("control channel: %s" % e)
            sys.exit(1)
        if frame is None:  # the host went away before specializing us
            sys.exit(0)
        if frame.op == "specialize":
            return frame
        frame.close_fds()
        ctl.send_fields("error", [("id", frame.get("id")), ("message", "unknown op `%s`" % frame.op)])


def run_specialize(ctl, frame, specialize):
    """specialize(frame), or report why it failed to the host and exit: a
    worker that could not load its app is never used."""
    try:
        return specialize(frame)
    except SpecializeError as e:
        report_specialize_error(ctl, frame, e)
        os._exit(1)
    except Exception as e:
        report_specialize_error(ctl, frame, SpecializeError(
            "InternalError", "%s: %s" % (type(e).__name__, e), tb=format_exc()))
        os._exit(1)


def now_ms(t0):
    return (time.monotonic() - t0) * 1000.0
