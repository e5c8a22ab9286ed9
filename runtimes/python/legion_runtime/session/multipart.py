"""multipart/form-data, streamed (POST /files of a session,
docs/sessions-runtime.md): each file part goes to the upload as its bytes
arrive; nothing holds a whole body in memory. Hostile input: headers of a
part are bounded, parts are counted, an early end is a BadRequest."""
import re
import urllib.parse

from legion_runtime.httpd import ApiError, BadRequest

_PARAM = re.compile(r'\s*([^=;\s]+)\s*=\s*("((?:[^"\\]|\\.)*)"|[^;]*)\s*;?')


def params(value):
    """'form-data; name="a"; filename="b"' -> ("form-data", {"name": "a", ...})."""
    out = {}
    head, _, rest = value.partition(";")
    i = 0
    while i < len(rest):
        m = _PARAM.match(rest, i)
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


class Scanner:
    """The body read as it is needed, searched for delimiters."""

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


def delimiter(content_type):
    """The delimiter of parts in a multipart/form-data body of this
    Content-Type; ApiError 415 for any other type."""
    ctype, ps = params(content_type)
    boundary = ps.get("boundary", "")
    if ctype != "multipart/form-data" or not boundary or len(boundary) > 200:
        raise ApiError(415, "UnsupportedMediaType",
                       "POST /files takes multipart/form-data; upload raw bytes with PUT /files/{path}")
    return b"\r\n--" + boundary.encode("latin-1")


def read_files(body, delim, up):
    """Each part of the body with a filename into up (begin(name), write(bytes),
    end()), as its bytes arrive; other form fields are skipped. BadRequest
    for a body that is not multipart, ApiError when it holds no file."""
    sc = Scanner(body)
    if not sc.until(delim):
        raise BadRequest(400, "no multipart boundary in the body")
    nparts = nfiles = 0
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
                disp = params(v)[1]
        filename = disp.get("filename")
        if filename:
            nfiles += 1
            up.begin(filename)
            ok = sc.until(delim, up.write)
            up.end()
        else:
            ok = sc.until(delim)  # a plain form field: ignored
        if not ok:
            raise BadRequest(400, "the multipart body ended early")
    if not nfiles:
        raise ApiError(400, "BadRequest", "no file in the multipart body (parts need a filename)")
