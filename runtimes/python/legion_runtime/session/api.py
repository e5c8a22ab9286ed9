"""The session's HTTP API (docs/sessions-runtime.md), served on the host's
listening socket: requests routed to the session (execute, restart, health)
and to its files (list, upload, download, delete)."""
import json
import os
import time
import urllib.parse

from legion_runtime import httpd, serving
from legion_runtime.control import format_exc, log
from legion_runtime.httpd import ApiError, BadRequest, error_doc
from legion_runtime.session import files, multipart, session
from legion_runtime.session.config import CONFIG
from legion_runtime.session.interp import InterpreterError
from legion_runtime.session.procs import LOST

_REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 411: "Length Required",
            413: "Content Too Large", 414: "URI Too Long", 415: "Unsupported Media Type",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
            503: "Service Unavailable", 505: "HTTP Version Not Supported", 507: "Insufficient Storage"}


class Request:
    __slots__ = ("method", "target", "path", "query", "version", "headers", "body", "keep")


def _json_bytes(obj):
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


class Connection:
    """One connection of the host's: its requests, one after the other."""

    def __init__(self, sock):
        self.sock = sock
        self.rfile = None

    def serve(self):
        serving.serve_connection(self.sock, self.one)

    def head(self, status, headers, length, keep, version):
        return httpd.response_head(status, _REASONS.get(status, "Unknown"), headers, length, keep,
                                   version == "HTTP/1.0")

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

    def one(self, rfile):
        self.rfile = rfile
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
            log("internal error in %s %s:\n%s" % (req.method, req.path, format_exc()))
            req.keep = False
            return self.send(req, 500, obj=error_doc("InternalError", "%s: %s" % (type(e).__name__, e)))

    def read_request(self):
        rfile = self.rfile
        headers = {}
        head = httpd.read_head(rfile, headers)
        if head is None:
            return None
        method, target, version = head
        req = Request()
        req.method, req.target, req.version, req.headers = method, target, version, headers
        req.keep = httpd.keep_alive(headers, version)
        req.body = httpd.Body(self.sock, rfile, headers, version)
        path, _, query = target.partition("?")
        req.path = path.partition("#")[0]
        req.query = query
        return req


def _put(up, raw, body):
    up.begin(raw, body.length)
    for chunk in body.chunks():
        up.write(chunk)
    up.end()


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
        return conn.send(req, 200, obj=session.SESSION.health())
    if p == "/restart":
        if req.method != "POST":
            return _method_not_allowed(conn, req, ["POST"])
        try:
            session.SESSION.restart()
        except InterpreterError as e:
            raise ApiError(503, "InterpreterUnavailable", str(e))
        return conn.send(req, 200, obj={"interpreterRestarted": True, "message": LOST[0].upper() + LOST[1:] + "."})
    if p in ("/files", "/files/"):
        if req.method == "GET":
            return conn.send(req, 200, obj=files.list_files())
        if req.method == "POST":
            return do_multipart(conn, req)
        return _method_not_allowed(conn, req, ["GET", "POST"])
    if p.startswith("/files/"):
        raw = _decode_path(p[len("/files/"):])
        if req.method == "GET":
            return do_download(conn, req, raw)
        if req.method == "PUT":
            return conn.send(req, 201, obj=files.upload(lambda up: _put(up, raw, req.body))[0])
        if req.method == "DELETE":
            files.delete_file(raw)
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
        res = session.SESSION.execute(code, float(timeout))
    except session.Busy:
        raise ApiError(409, "SessionBusy", "another execution held the session for longer than this one's "
                       "timeout (%g s)" % timeout)
    except InterpreterError as e:
        raise ApiError(503, "InterpreterUnavailable", str(e))
    res["id"] = "exec-" + os.urandom(8).hex()
    res["identifier"] = session.SESSION.identifier
    return conn.send(req, 200, obj=res)


def do_download(conn, req, raw):
    fd, st = files.open_file(raw)
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


def do_multipart(conn, req):
    delim = multipart.delimiter(req.headers.get("content-type", ""))
    entries = files.upload(lambda up: multipart.read_files(req.body, delim, up))
    return conn.send(req, 201, obj=entries)


def serve(sock):
    """Serve one connection of the host's listening socket."""
    Connection(sock).serve()
