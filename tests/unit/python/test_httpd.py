"""HTTP/1.1 shared by the workers (runtimes/python/legion_runtime/httpd.py):
request heads, body framing, chunked bodies and responses, with hostile
input; and the accept and connection loops (serving.py)."""
import contextlib
import errno
import io
import socket
import threading
import unittest

from legion_runtime import httpd, serving
from legion_runtime.httpd import ApiError, BadRequest


def head(data):
    headers = {}
    return httpd.read_head(io.BytesIO(data), headers), headers


class Head(unittest.TestCase):
    def bad(self, data, status):
        with self.assertRaises(BadRequest) as cm:
            head(data)
        self.assertEqual(cm.exception.status, status, data[:80])

    def test_a_request(self):
        h, headers = head(b"\r\nGET /x?a=1 HTTP/1.1\r\nHost: a\r\nX-Two: 1\r\nx-two:  2 \r\nEmpty:\r\n\r\nbody")
        self.assertEqual(h, ("GET", "/x?a=1", "HTTP/1.1"))
        self.assertEqual(headers, {"host": "a", "x-two": "1, 2", "empty": ""})

    def test_bare_newlines(self):
        self.assertEqual(head(b"GET / HTTP/1.0\nA: b\n\n"), (("GET", "/", "HTTP/1.0"), {"a": "b"}))

    def test_the_connection_ends_first(self):
        for data in (b"", b"\r\n\r\n", b"GET / HTTP/1.1\r\n", b"GET / HTTP/1.1\r\nA: b\r\n"):
            self.assertIsNone(head(data)[0], data)

    def test_request_lines(self):
        self.bad(b"\r\n" * 9 + b"GET / HTTP/1.1\r\n\r\n", 400)
        self.bad(b"GET /" + b"a" * httpd.HTTP_MAX_LINE + b" HTTP/1.1\r\n\r\n", 414)
        self.bad(b"GET / HTTP/1.1 x\r\n\r\n", 400)
        self.bad(b"GET /\r\n\r\n", 400)
        self.bad(b"GET / HTTP/2.0\r\n\r\n", 505)
        self.bad(b"GET / FTP/1.0\r\n\r\n", 400)
        self.bad(b"G(T / HTTP/1.1\r\n\r\n", 400)
        self.bad(b"G\xffT / HTTP/1.1\r\n\r\n", 400)

    def test_header_lines(self):
        self.bad(b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400)
        self.bad(b"GET / HTTP/1.1\r\nno colon\r\n\r\n", 400)
        self.bad(b"GET / HTTP/1.1\r\nName : v\r\n\r\n", 400)
        self.bad(b"GET / HTTP/1.1\r\n: v\r\n\r\n", 400)

    def test_header_limits(self):
        many = b"".join(b"h%d: v\r\n" % i for i in range(httpd.HTTP_MAX_HEADER_COUNT + 1))
        self.bad(b"GET / HTTP/1.1\r\n" + many + b"\r\n", 431)
        big = b"".join(b"h%d: %s\r\n" % (i, b"v" * 8000) for i in range(10))
        self.bad(b"GET / HTTP/1.1\r\n" + big + b"\r\n", 431)
        self.bad(b"GET / HTTP/1.1\r\nh: " + b"v" * httpd.HTTP_MAX_HEADERS + b"\r\n\r\n", 431)
        # A line cut at the limit: its tail must not pass for a header.
        line = b"X: " + b"a" * (httpd.HTTP_MAX_LINE - 2)
        self.bad(b"GET / HTTP/1.1\r\n" + line + b"Transfer-Encoding: chunked\r\n\r\n", 431)

    def test_keep_alive(self):
        self.assertTrue(httpd.keep_alive({}, "HTTP/1.1"))
        self.assertFalse(httpd.keep_alive({"connection": "Close"}, "HTTP/1.1"))
        self.assertFalse(httpd.keep_alive({}, "HTTP/1.0"))
        self.assertTrue(httpd.keep_alive({"connection": "keep-alive"}, "HTTP/1.0"))


class Framing(unittest.TestCase):
    def test_framings(self):
        f = httpd.body_framing
        self.assertEqual(f({}, "HTTP/1.1"), (False, None, False))
        self.assertEqual(f({"content-length": "12"}, "HTTP/1.1"), (False, 12, False))
        self.assertEqual(f({"transfer-encoding": " Chunked "}, "HTTP/1.1"), (True, None, False))
        self.assertEqual(f({"content-length": "1", "expect": "100-Continue"}, "HTTP/1.1"), (False, 1, True))
        self.assertEqual(f({"content-length": "1", "expect": "100-continue"}, "HTTP/1.0"), (False, 1, False))

    def test_hostile_framings(self):
        for headers, status in (({"transfer-encoding": "chunked", "content-length": "1"}, 400),
                                ({"transfer-encoding": "gzip, chunked"}, 501),
                                ({"content-length": "-1"}, 400), ({"content-length": "+1"}, 400),
                                ({"content-length": "1, 1"}, 400), ({"content-length": ""}, 400),
                                ({"content-length": "0x10"}, 400), ({"content-length": "١٢"}, 400),
                                ({"content-length": b"\xb2".decode("latin-1")}, 400)):
            with self.subTest(headers=headers), self.assertRaises(BadRequest) as cm:
                httpd.body_framing(headers, "HTTP/1.1")
            self.assertEqual(cm.exception.status, status)

    def test_chunk_sizes(self):
        rf = io.BytesIO(b"1a;ext=1\r\n0\r\nTrailer: x\r\n\r\nnext")
        self.assertEqual(httpd.read_chunk_size(rf), 26)
        self.assertEqual(httpd.read_chunk_size(rf), 0)
        self.assertEqual(rf.read(), b"next")  # the trailers were read

    def test_hostile_chunk_sizes(self):
        for data in (b"", b"zz\r\n", b"-5\r\n", b"+5\r\n", b"0x5\r\n", b"1_0\r\n", b"\r\n", b"5 5\r\n",
                     b"\xb2\r\n", b"1" * 17 + b"\r\n"):
            with self.subTest(data=data), self.assertRaises(BadRequest):
                httpd.read_chunk_size(io.BytesIO(data))


class FakeConn:
    def __init__(self):
        self.sent = b""

    def sendall(self, data):
        self.sent += data


def body(data, headers, version="HTTP/1.1"):
    conn = FakeConn()
    return httpd.Body(conn, io.BufferedReader(io.BytesIO(data)), headers, version), conn


class Bodies(unittest.TestCase):
    def test_content_length(self):
        b, _ = body(b"hello world", {"content-length": "5"})
        self.assertEqual(b.read_all(100, "body"), b"hello")
        self.assertTrue(b.done)

    def test_no_body(self):
        b, _ = body(b"GET", {})
        self.assertTrue(b.done)
        self.assertEqual(b.read(), b"")

    def test_short_body(self):
        b, _ = body(b"abc", {"content-length": "10"})
        with self.assertRaises(BadRequest):
            b.read_all(100, "body")

    def test_chunked(self):
        b, _ = body(b"3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n", {"transfer-encoding": "chunked"})
        self.assertEqual(b.read_all(100, "body"), b"abcde")

    def test_truncated_chunk(self):
        b, _ = body(b"10\r\nabc", {"transfer-encoding": "chunked"})
        with self.assertRaises(BadRequest):
            b.read_all(100, "body")

    def test_limits(self):
        b, _ = body(b"x" * 50, {"content-length": "50"})
        with self.assertRaises(ApiError) as cm:
            b.read_all(10, "the body is")
        self.assertEqual((cm.exception.status, cm.exception.extra), (413, {"limit": 10}))
        b, _ = body(b"a\r\n" + b"x" * 10 + b"\r\n" + b"a\r\n" + b"x" * 10 + b"\r\n0\r\n\r\n",
                    {"transfer-encoding": "chunked"})
        with self.assertRaises(ApiError):
            b.read_all(15, "the body is")

    def test_continue_only_when_read(self):
        b, conn = body(b"abc", {"content-length": "3", "expect": "100-continue"})
        self.assertEqual(conn.sent, b"")
        self.assertEqual(b.read(), b"abc")
        self.assertEqual(conn.sent, b"HTTP/1.1 100 Continue\r\n\r\n")


class Responses(unittest.TestCase):
    def test_heads(self):
        self.assertEqual(httpd.response_head(200, "OK", [("A", "b")], 3, True, False),
                         b"HTTP/1.1 200 OK\r\nA: b\r\nContent-Length: 3\r\n\r\n")
        self.assertEqual(httpd.response_head(204, "No Content", [], None, False, False),
                         b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        self.assertEqual(httpd.response_head(200, "OK", [], 0, True, True),
                         b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n")

    def test_error_doc(self):
        self.assertEqual(httpd.error_doc("X", "m", limit=1), {"error": {"code": "X", "message": "m", "limit": 1}})


class FakeListener:
    def __init__(self, results):
        self.results = list(results)

    def accept(self):
        r = self.results.pop(0)
        if isinstance(r, BaseException):
            raise r
        return r, None


class Serving(unittest.TestCase):
    def test_accept_loop_rides_out_emfile_and_stops_on_errors(self):
        done = threading.Event()
        got = []

        def handle(sock):
            got.append(sock)
            done.set()

        log = io.StringIO()
        with contextlib.redirect_stderr(log):
            serving.accept_loop(FakeListener([InterruptedError(), OSError(errno.EMFILE, "Too many open files"),
                                            "conn", OSError(errno.EBADF, "Bad file descriptor")]), handle)
        self.assertIn("not serving any more", log.getvalue())
        self.assertTrue(done.wait(5))
        self.assertEqual(got, ["conn"])

    def test_serve_connection(self):
        a, b = socket.socketpair()
        a.sendall(b"one\ntwo\nthree\n")
        lines = []

        def one(rfile):
            lines.append(rfile.readline())
            return len(lines) < 2

        serving.serve_connection(b, one)
        self.assertEqual(lines, [b"one\n", b"two\n"])
        self.assertEqual(b.fileno(), -1)  # closed
        a.close()


if __name__ == "__main__":
    unittest.main()
