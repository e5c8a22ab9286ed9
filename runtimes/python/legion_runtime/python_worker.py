"""Legion Python language worker (docs/runtimes.md).

Started by legion-init in a placeholder sandbox as

    python3 -I /opt/legion/runtime/python python

with the control channel on fd 3 (LEGION_CONTROL_FD). It imports what every
function needs, says `op=ready phase=placeholder`, and waits for
`op=specialize`. Then it applies the app's env, changes to /code, imports
the handler ("module:function", default "main:main"), says
`op=ready phase=specialized` and serves HTTP/1.1 on the listening socket
that came with specialize (or LEGION_LISTEN_FD): a thread per connection,
keep-alive, async handlers on one shared event loop.

Standard library only: the sandbox sees the host's /usr and nothing else."""
import os
import sys
import time

from legion_runtime import control as lc
from legion_runtime import httpd, serving

# The expensive part of a cold start, done before any app exists. These are
# also the modules functions most often use, so specialization finds them
# in sys.modules.
import asyncio  # noqa: F401
import base64  # noqa: F401
import collections  # noqa: F401
import dataclasses  # noqa: F401
import datetime  # noqa: F401
import hashlib  # noqa: F401
import importlib
import importlib.machinery
import importlib.util
import inspect
import json
import logging  # noqa: F401
import re  # noqa: F401
import signal
import socket
import threading
import traceback  # noqa: F401
import typing  # noqa: F401
import urllib.parse
from http import HTTPStatus

MAX_BODY = int(os.environ.get("LEGION_MAX_BODY", str(64 << 20)))

# The worker's own frames, left out of the tracebacks the app's logs show.
_SELF_FILES = {os.path.abspath(m.__file__) for m in (sys.modules[__name__], lc, httpd, serving)}
_REASONS = {s.value: s.phrase for s in HTTPStatus}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# ---- requests and responses ------------------------------------------------

class Headers(dict):
    """Request headers: keys are lower-case, lookups are case-insensitive.
    A repeated header's values are joined with ", "."""

    def __getitem__(self, key):
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key):
        return dict.__contains__(self, key.lower() if isinstance(key, str) else key)

    def get(self, key, default=None):
        return dict.get(self, key.lower(), default)


class Request:
    __slots__ = ("method", "url", "path", "raw_query", "query", "query_all", "headers", "body",
                 "http_version")

    def json(self):
        """The body parsed as JSON (None for an empty body)."""
        if not self.body:
            return None
        return json.loads(self.body)

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return "<Request %s %s>" % (self.method, self.url)


BadRequest = httpd.BadRequest


class ResponseError(Exception):
    """The function returned something that is not a response."""


def _header_items(headers):
    if headers is None:
        return []
    if isinstance(headers, dict):
        items = headers.items()
    elif isinstance(headers, (list, tuple)):
        items = headers
    else:
        raise ResponseError("response headers must be a dict or a list of pairs, not %s" % type(headers).__name__)
    out = []
    for item in items:
        try:
            k, v = item
        except (TypeError, ValueError):
            raise ResponseError("response header %r is not a (name, value) pair" % (item,))
        if not isinstance(k, str) or not httpd.HTTP_TOKEN.match(k):
            raise ResponseError("invalid response header name %r" % (k,))
        values = v if isinstance(v, (list, tuple)) else (v,)
        for one in values:
            if isinstance(one, bool) or not isinstance(one, (str, int, float)):
                raise ResponseError("response header %s: value %r is not a string" % (k, one))
            s = str(one)
            if "\r" in s or "\n" in s or "\0" in s:
                raise ResponseError("response header %s contains a line break" % k)
            out.append((k, s))
    return out


def normalize(result):
    """The function's return value as (status, [(name, value)], body bytes)."""
    if isinstance(result, dict) and ("status" in result or "body" in result):
        status = result.get("status", 200)
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
            raise ResponseError("response status must be an integer from 200 to 599, not %r" % (status,))
        headers = _header_items(result.get("headers"))
        body = result.get("body")
    elif result is None:
        return 204, [], b""
    else:
        status, headers, body = 200, [], result
    ctype = None
    if body is None:
        data = b""
    elif isinstance(body, str):
        data, ctype = body.encode("utf-8"), "text/plain; charset=utf-8"
    elif isinstance(body, (bytes, bytearray, memoryview)):
        data, ctype = bytes(body), "application/octet-stream"
    else:
        try:
            data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise ResponseError("response body is not JSON-serializable: %s" % e)
        ctype = "application/json"
    if ctype and not any(k.lower() == "content-type" for k, _ in headers):
        headers.append(("Content-Type", ctype))
    return status, headers, data


_HOP = frozenset(("content-length", "transfer-encoding", "connection", "keep-alive"))


def render(status, headers, body, keep, http10, head):
    out = []
    for k, v in headers:
        lk = k.lower()
        if lk in _HOP:
            if lk == "connection" and v.lower() == "close":
                keep = False
            continue
        out.append((k, v))
    if status != 204 and status != 304:
        length = len(body)
    else:
        length, body = None, b""
    head_bytes = httpd.response_head(status, _REASONS.get(status, "Status"), out, length, keep, http10)
    return (head_bytes if head else head_bytes + body), keep


def error_body(code, message):
    return json.dumps(httpd.error_doc(code, message)).encode()


# ---- the server ------------------------------------------------------------

class Server:
    def __init__(self, handler, is_async, listener):
        self.handler = handler
        self.listener = listener
        self.loop = None
        self.loop_lock = threading.Lock()
        if is_async:
            self._event_loop()
        self.active = 0
        self.active_lock = threading.Lock()
        self.draining = False

    def _event_loop(self):
        with self.loop_lock:
            if self.loop is None:
                loop = asyncio.new_event_loop()
                t = threading.Thread(target=loop.run_forever, name="legion-asyncio", daemon=True)
                t.start()
                self.loop = loop
            return self.loop

    def call(self, req):
        result = self.handler(req)
        if inspect.isawaitable(result):
            result = asyncio.run_coroutine_threadsafe(_await(result), self._event_loop()).result()
        return result

    def serve_forever(self):
        serving.accept_loop(self.listener, self.connection, lambda: self.draining)

    def connection(self, conn):
        serving.serve_connection(conn, lambda rfile: self.one_request(conn, rfile))

    def one_request(self, conn, rfile):
        try:
            req, keep = self.read_request(conn, rfile)
        except BadRequest as e:
            out, _ = render(e.status, [("Content-Type", "application/json")],
                            error_body("BadRequest", str(e)), False, False, False)
            conn.sendall(out)
            return False
        if req is None:
            return False
        with self.active_lock:
            self.active += 1
        try:
            try:
                status, headers, body = normalize(self.call(req))
            except BaseException as e:  # sys.exit() in a function fails that request only
                self.report(req, e)
                status, headers = 500, [("Content-Type", "application/json")]
                kind = "InvalidResponse" if isinstance(e, ResponseError) else "FunctionError"
                body = error_body(kind, "the function %s %s (traceback in the app's logs)" % (
                    "returned an invalid response:" if kind == "InvalidResponse" else "raised",
                    str(e) if kind == "InvalidResponse" else type(e).__name__))
            if self.draining:
                keep = False
            out, keep = render(status, headers, body, keep, req.http_version == "HTTP/1.0",
                               req.method == "HEAD")
            conn.sendall(out)
        finally:
            with self.active_lock:
                self.active -= 1
        return keep

    def report(self, req, exc):
        try:
            text = lc.format_exception_for(exc, _SELF_FILES)
            sys.stderr.write("legion: function error in %s %s:\n%s" % (req.method, req.path, text))
            sys.stderr.flush()
        except Exception:
            pass

    def read_request(self, conn, rfile):
        headers = Headers()
        head = httpd.read_head(rfile, headers)
        if head is None:
            return None, False
        method, target, version = head
        keep = httpd.keep_alive(headers, version)
        chunked, n, expect = httpd.body_framing(headers, version)
        if chunked:
            if expect:
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = self.read_chunked(rfile)
        elif n is not None:
            if n > MAX_BODY:
                raise BadRequest(413, "request body larger than %d bytes" % MAX_BODY)
            if expect and n:
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = rfile.read(n) if n else b""
            if len(body) < n:
                return None, False
        else:
            body = b""

        req = Request()
        req.method = method
        req.url = target
        req.http_version = version
        if target.startswith("/"):
            path, _, raw_query = target.partition("?")
        elif "://" in target:
            u = urllib.parse.urlsplit(target)
            path, raw_query = u.path or "/", u.query
        else:
            path, raw_query = target, ""
        path = path.partition("#")[0]
        req.path = urllib.parse.unquote(path) if "%" in path else path
        req.raw_query = raw_query
        if raw_query:
            q, qa = {}, {}
            for k, v in urllib.parse.parse_qsl(raw_query, keep_blank_values=True):
                if k in qa:
                    qa[k].append(v)
                else:
                    qa[k] = [v]
                    q[k] = v
            req.query, req.query_all = q, qa
        else:
            req.query, req.query_all = {}, {}
        req.headers = headers
        req.body = body
        return req, keep

    def read_chunked(self, rfile):
        parts = []
        size = 0
        while True:
            n = httpd.read_chunk_size(rfile)
            if n == 0:
                return b"".join(parts)
            size += n
            if size > MAX_BODY:
                raise BadRequest(413, "request body larger than %d bytes" % MAX_BODY)
            data = rfile.read(n)
            if len(data) < n:
                raise BadRequest(400, "truncated chunked body")
            parts.append(data)
            rfile.readline(httpd.HTTP_MAX_LINE + 1)  # CRLF after the chunk

    def drain_and_exit(self):
        """SIGTERM: stop accepting, finish the requests in flight, exit 0."""
        self.draining = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        while True:
            with self.active_lock:
                if self.active == 0:
                    break
            time.sleep(0.01)
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        os._exit(0)


async def _await(aw):
    return await aw


# ---- specialization --------------------------------------------------------

def load_handler(workdir, entrypoint):
    """Import the app's module and return (function, is_async, module file)."""
    modname, sep, attr = entrypoint.partition(":")
    modname, attr = modname.strip(), (attr.strip() if sep else "main")
    if modname.endswith(".py"):
        modname = modname[:-3]
    modname = modname.replace("/", ".")
    if not modname or not all(_IDENT.match(p) for p in modname.split(".")) or \
            not attr or not all(_IDENT.match(p) for p in attr.split(".")):
        raise lc.SpecializeError("InvalidEntrypoint",
                                 "entrypoint `%s` is not `module:function` (e.g. `main:main`)" % entrypoint)

    base = os.path.join(workdir, *modname.split("."))
    candidates = [base + ".py", os.path.join(base, "__init__.py")]
    candidates += [base + s for s in importlib.machinery.EXTENSION_SUFFIXES]
    path = next((c for c in candidates if os.path.isfile(c)), None)
    if path is None:
        rel = os.path.relpath(base + ".py", workdir)
        raise lc.SpecializeError("EntrypointNotFound",
                                 "entrypoint `%s`: no file `%s` in %s" % (entrypoint, rel, workdir),
                                 exception="FileNotFoundError")

    try:
        if "." in modname:
            module = importlib.import_module(modname)
        else:
            is_pkg = path.endswith("__init__.py")
            spec = importlib.util.spec_from_file_location(
                modname, path, submodule_search_locations=[os.path.dirname(path)] if is_pkg else None)
            module = importlib.util.module_from_spec(spec)
            # A name the worker already imported (say the app has a
            # `json.py`) keeps the real module in sys.modules.
            if modname not in sys.modules:
                sys.modules[modname] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                if sys.modules.get(modname) is module:
                    del sys.modules[modname]
                raise
    except BaseException as e:  # SyntaxError, ImportError, exceptions and exit() at import
        raise lc.SpecializeError("ImportError", "importing `%s` (%s) failed: %s: %s" % (
            modname, os.path.relpath(path, workdir), type(e).__name__, e),
            tb=lc.format_exception_for(e, _SELF_FILES), exception=type(e).__name__)

    fn = module
    for part in attr.split("."):
        try:
            fn = getattr(fn, part)
        except AttributeError:
            raise lc.SpecializeError("HandlerNotFound", "module `%s` (%s) has no `%s`" % (
                modname, os.path.relpath(path, workdir), attr), exception="AttributeError")
    if not callable(fn):
        raise lc.SpecializeError("HandlerNotFound", "`%s` in `%s` is a %s, not a function" % (
            attr, modname, type(fn).__name__), exception="TypeError")
    is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))
    return fn, is_async, path


def specialize(frame):
    t0 = time.monotonic()
    app, revision, listener, workdir = lc.prepare_specialize(frame)
    # App settings may carry PYTHONPATH: the interpreter is already running,
    # so honour it here (package-relative entries are relative to /code).
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(":") if p]
    for p in reversed(extra):
        sys.path.insert(0, os.path.join(workdir, p))
    sys.path.insert(0, workdir)
    importlib.invalidate_caches()
    try:
        sys.stdout.reconfigure(line_buffering=True)
    except Exception:
        pass
    fn, is_async, _ = load_handler(workdir, frame.get("entrypoint") or "main:main")
    return Server(fn, is_async, listener), lc.now_ms(t0), app, revision


def main(t_start):
    ctl = lc.Control.from_env()
    ctl.send("ready", phase="placeholder", runtime="python",
             version="%d.%d.%d" % sys.version_info[:3], ms="%.1f" % lc.now_ms(t_start))

    frame = lc.wait_for_specialize(ctl)

    server, ms, app, revision = lc.run_specialize(ctl, frame, specialize)

    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.drain_and_exit, daemon=True).start())
    threading.Thread(target=server.serve_forever, name="legion-accept", daemon=True).start()
    lc.serve_specialized(ctl, frame, app, revision, ms)

