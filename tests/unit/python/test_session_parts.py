"""The session supervisor's parsers (legion_runtime/session/): multipart
bodies, the interpreter's messages and its output cut at end markers, and
sizes from the environment; hostile input for each."""
import json
import struct
import unittest

from legion_runtime.httpd import ApiError, BadRequest
from legion_runtime.session import multipart
from legion_runtime.session.config import limit_text, parse_size
from legion_runtime.session.interp import Stream, encode_message, split_messages


class Body:
    """Hands out the body in pieces of `step` bytes."""

    def __init__(self, data, step):
        self.data, self.step = data, step

    def read(self):
        out, self.data = self.data[:self.step], self.data[self.step:]
        return out


class Recorder:
    def __init__(self):
        self.files = []

    def begin(self, name):
        self.files.append([name, b""])

    def write(self, data):
        self.files[-1][1] += data

    def end(self):
        pass


def form(*parts, boundary=b"XyZ", epilogue=b""):
    out = b"preamble\r\n"
    for headers, content in parts:
        out += b"--" + boundary + b"\r\n" + headers + b"\r\n\r\n" + content + b"\r\n"
    return out + b"--" + boundary + b"--\r\n" + epilogue


DELIM = b"\r\n--XyZ"


def read(data, step):
    up = Recorder()
    multipart.read_files(Body(data, step), DELIM, up)
    return [tuple(f) for f in up.files]


class Multipart(unittest.TestCase):
    def test_files_in_any_pieces(self):
        content = b"line\r\n--XyWnot\r\n-XyZ\n--XyZ\r\n--Xy" + bytes(range(256))
        data = form((b'Content-Disposition: form-data; name="f"; filename="a.bin"', content),
                    (b'Content-Disposition: form-data; name="field"', b"ignored"),
                    (b"Content-Type: text/plain\r\nContent-Disposition: form-data; name=\"g\"; "
                     b"filename*=UTF-8''%E2%82%AC.txt", b""), epilogue=b"trailing junk")
        for step in (1, 2, 3, 7, 64, 1 << 20):
            with self.subTest(step=step):
                self.assertEqual(read(data, step), [("a.bin", content), ("€.txt", b"")])

    def test_hostile_bodies(self):
        disp = b'Content-Disposition: form-data; name="f"; filename="a"'
        cases = [b"", b"no boundary at all", b"--XyZ\r\n" + disp + b"\r\n\r\nunterminated",
                 b"--XyZ\r\n" + disp,  # headers never end
                 b"--XyZ\r\nX: " + b"h" * 20000 + b"\r\n\r\nx\r\n--XyZ--",
                 b"--XyZ", b"--XyZ\r\n"]
        for data in cases:
            with self.subTest(data=data[:40]), self.assertRaises(BadRequest):
                read(data, 5)
        many = form(*[(b'Content-Disposition: form-data; name="x"', b"")] * 1001)
        with self.assertRaises(BadRequest):
            read(many, 1 << 16)

    def test_no_file(self):
        with self.assertRaises(ApiError):
            read(form((b'Content-Disposition: form-data; name="x"', b"1")), 10)
        with self.assertRaises(ApiError):
            read(form(), 10)

    def test_delimiter(self):
        self.assertEqual(multipart.delimiter('multipart/form-data; boundary="a b"'), b"\r\n--a b")
        for ctype in ("", "application/json", "multipart/form-data", "multipart/form-data; boundary=",
                      "multipart/form-data; boundary=" + "b" * 201, "multipart/mixed; boundary=x"):
            with self.subTest(ctype=ctype), self.assertRaises(ApiError) as cm:
                multipart.delimiter(ctype)
            self.assertEqual(cm.exception.status, 415)

    def test_params(self):
        p = multipart.params
        self.assertEqual(p('form-data; name="a;b"; filename="q\\"uote"'),
                         ("form-data", {"name": "a;b", "filename": 'q"uote'}))
        self.assertEqual(p("Form-Data; NAME=plain ; x"), ("form-data", {"name": "plain"}))
        self.assertEqual(p("form-data; filename=a; filename*=bogus-enc''%41")[1]["filename"], "a")
        self.assertEqual(p("form-data; filename=a; filename*=UTF-8''%ff")[1]["filename"], "a")
        self.assertEqual(p('form-data; name="unterminated')[1], {"name": '"unterminated'})


def marker(mark, n):
    return b"\0LGM" + mark + b"%08x" % n + b"\0"


class Output(unittest.TestCase):
    MARK = b"0123456789abcdef"

    def test_cut_at_markers_in_any_pieces(self):
        data = b"one\n" + marker(self.MARK, 1) + b"two\0LGM" + marker(self.MARK, 2) + b"rest"
        for step in range(1, len(data) + 1):
            s = Stream(self.MARK, 1 << 20)
            for i in range(0, len(data), step):
                s.feed(data[i:i + step])
            with self.subTest(step=step):
                self.assertEqual(s.take(1), (b"one\n", 4))
                self.assertEqual(s.take(2), (b"two\0LGM", 7))
                self.assertEqual(s.take(3), (b"rest", 4))  # no marker: what is there

    def test_forged_markers_are_output(self):
        s = Stream(self.MARK, 1 << 20)
        forged = marker(b"fedcba9876543210", 1) + b"\0LGM" + self.MARK + b"zzzzzzzz\0"
        self.assertFalse(s.feed(forged))
        self.assertEqual(s.take(1), (forged, len(forged)))

    def test_cap(self):
        s = Stream(self.MARK, 10)
        self.assertTrue(s.feed(b"x" * 25 + marker(self.MARK, 1)))
        self.assertEqual(s.take(1), (b"x" * 10, 25))


class Messages(unittest.TestCase):
    def test_split(self):
        data = encode_message({"op": "ready"}) + struct.pack("<I", 3) + b"{x}" + encode_message({"op": "done", "n": 1})
        rbuf = bytearray(data[:-3])
        self.assertEqual(split_messages(rbuf), [{"op": "ready"}, {"op": "garbage"}])
        rbuf += data[-3:]
        self.assertEqual(split_messages(rbuf), [{"op": "done", "n": 1}])
        self.assertEqual(rbuf, b"")

    def test_partial(self):
        rbuf = bytearray(b"\xff\xff\xff\xff{")
        self.assertEqual(split_messages(rbuf), [])
        self.assertEqual(len(rbuf), 5)
        rbuf = bytearray(b"\x01\x00")
        self.assertEqual(split_messages(rbuf), [])

    def test_non_ascii(self):
        msg = {"op": "done", "result": "€\0\ud800"[:2]}
        self.assertEqual(split_messages(bytearray(encode_message(msg))), [json.loads(json.dumps(msg))])


class Sizes(unittest.TestCase):
    def test_sizes(self):
        for text, n in (("1048576", 1 << 20), ("100Mi", 100 << 20), (" 1Gi ", 1 << 30), ("1.5G", 1500000000),
                        ("2KiB", 2048), ("3k", 3000)):
            self.assertEqual(parse_size(text), n, text)
        for text in ("", None, "-1", "1e9", "10 XB", "Mi", "0x10", "1..5", "١"):
            with self.subTest(text=text), self.assertRaises(ValueError):
                parse_size(text)

    def test_limit_text(self):
        self.assertEqual(limit_text(100 << 20), "100 MiB (104857600 bytes)")
        self.assertEqual(limit_text(2500), "2500 bytes")


if __name__ == "__main__":
    unittest.main()
