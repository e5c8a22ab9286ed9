"""HTTP/1.1 shared by the Python worker and the session supervisor
(docs/runtimes.md, docs/sessions-runtime.md): request heads and body
framing read with limits, bodies streamed, response heads. The connections
come from serving.py.

Every parser here takes hostile input: what it does not take it answers
with BadRequest(status), and the connection is closed after the answer."""
import re

HTTP_MAX_LINE = 16 * 1024       # request line or one header line
HTTP_MAX_HEADERS = 64 * 1024    # all header lines together
HTTP_MAX_HEADER_COUNT = 200
HTTP_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class BadRequest(Exception):
    """A request answered with `status` (and the connection closed)."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class ApiError(Exception):
    """A request answered with `status` and error_doc(code, message,
    **extra); the connection may stay open."""

    def __init__(self, status, code, message, **extra):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def error_doc(code, message, **extra):
    """The JSON document of an error: {"error": {"code", "message", ...}}."""
    e = {"code": code, "message": message}
    e.update(extra)
    return {"error": e}


def read_head(rfile, headers):
    """Read a request line and its headers into the dict `headers` (names
    lower-case, a repeated header's values joined with ", "). Returns
    (method, target, version), or None if the connection ends first."""
    line = rfile.readline(HTTP_MAX_LINE + 1)
    blank = 0
    while line in (b"\r\n", b"\n"):
        blank += 1
        if blank > 8:
            raise BadRequest(400, "blank lines before the request")
        line = rfile.readline(HTTP_MAX_LINE + 1)
    if not line:
        return None
    if len(line) > HTTP_MAX_LINE:
        raise BadRequest(414, "request line too long")
    parts = line.split()
    if len(parts) != 3:
        raise BadRequest(400, "malformed request line")
    method, target, version = (p.decode("latin-1") for p in parts)
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(505 if version.startswith("HTTP/") else 400, "unsupported HTTP version")
    if not HTTP_TOKEN.match(method):
        raise BadRequest(400, "malformed method")
    total = 0
    while True:
        h = rfile.readline(HTTP_MAX_LINE + 1)
        if not h:
            return None
        total += len(h)
        if total > HTTP_MAX_HEADERS or len(headers) >= HTTP_MAX_HEADER_COUNT:
            raise BadRequest(431, "request headers too large")
        if len(h) > HTTP_MAX_LINE:  # else its tail would be read as a header line of its own
            raise BadRequest(431, "request header line too long")
        if h in (b"\r\n", b"\n"):
            return method, target, version
        if h[:1] in (b" ", b"\t"):
            raise BadRequest(400, "folded header lines are not supported")
        name, sep, value = h.partition(b":")
        if not sep or not name or name != name.strip():
            raise BadRequest(400, "malformed header line")
        k = name.decode("latin-1").lower()
        v = value.strip().decode("latin-1")
        # dict's own methods: headers may be a subclass with lookups of its own.
        if dict.__contains__(headers, k):
            v = dict.__getitem__(headers, k) + ", " + v
        dict.__setitem__(headers, k, v)


def keep_alive(headers, version):
    """Whether the connection stays open after this request."""
    conn = dict.get(headers, "connection", "").lower()
    return "close" not in conn if version == "HTTP/1.1" else "keep-alive" in conn


def body_framing(headers, version):
    """(chunked, Content-Length or None, expects 100-continue) of a request;
    BadRequest for a framing we do not take."""
    te = dict.get(headers, "transfer-encoding")
    cl = dict.get(headers, "content-length")
    expect = dict.get(headers, "expect", "").lower() == "100-continue" and version == "HTTP/1.1"
    if te is not None:
        if cl is not None:
            raise BadRequest(400, "both Transfer-Encoding and Content-Length")
        if te.strip().lower() != "chunked":
            raise BadRequest(501, "unsupported Transfer-Encoding")
        return True, None, expect
    if cl is not None:
        if not (cl.isascii() and cl.isdigit()):  # "²" is a digit to isdigit(), not to int()
            raise BadRequest(400, "malformed Content-Length")
        return False, int(cl), expect
    return False, None, expect


def read_chunk_size(rfile):
    """The size of the next chunk of a chunked body; after the last one (0)
    the trailers are read and ignored."""
    line = rfile.readline(HTTP_MAX_LINE + 1)
    if not line:
        raise BadRequest(400, "truncated chunked body")
    size = line.split(b";", 1)[0].strip()
    # Hex digits only: int() also takes "+5", "0x5" and "1_0".
    if not size or len(size) > 16 or size.strip(b"0123456789abcdefABCDEF"):
        raise BadRequest(400, "malformed chunk size")
    n = int(size, 16)
    if n == 0:
        while True:
            t = rfile.readline(HTTP_MAX_LINE + 1)
            if not t or t in (b"\r\n", b"\n"):
                break
    return n


# ---- request bodies -----------------------------------------------------------

class Body:
    """A request body, read as it is needed (Content-Length or chunked)."""

    def __init__(self, conn, rfile, headers, version):
        self.conn = conn
        self.rfile = rfile
        self.chunked, length, self.expect = body_framing(headers, version)
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
            size = read_chunk_size(self.rfile)
            if size == 0:
                self.done = True
                return b""
            self.left = size
        data = self.rfile.read1(min(n, self.left))
        if not data:
            raise BadRequest(400, "truncated chunked body")
        self.left -= len(data)
        if self.left == 0:
            self.rfile.readline(HTTP_MAX_LINE + 1)  # the CRLF after the chunk
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


# ---- responses ----------------------------------------------------------------

def response_head(status, reason, headers, length, keep, http10):
    """The status line and header block of a response. `length` None: no
    Content-Length (204, 304). Connection: close unless `keep`; an
    HTTP/1.0 client that keeps the connection is told keep-alive."""
    lines = ["HTTP/1.1 %d %s\r\n" % (status, reason)]
    lines += ["%s: %s\r\n" % kv for kv in headers]
    if length is not None:
        lines.append("Content-Length: %d\r\n" % length)
    if not keep:
        lines.append("Connection: close\r\n")
    elif http10:
        lines.append("Connection: keep-alive\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1", "replace")
