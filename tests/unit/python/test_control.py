"""The control channel's worker side (runtimes/python/legion_runtime/control.py):
framing both ways, hostile frames, descriptors that come with frames."""
import array
import os
import socket
import struct
import unittest

from legion_runtime import control as lc


def open_fds():
    return set(os.listdir("/proc/self/fd"))


def frame_bytes(payload):
    return struct.pack("<I", len(payload)) + payload


class Framing(unittest.TestCase):
    def test_round_trip(self):
        data = lc.encode("specialize", [("id", "7"), ("skip", None), ("env", "A=b=c"), ("empty", "")])
        (n,) = struct.unpack_from("<I", data)
        self.assertEqual(n, len(data) - 4)
        self.assertEqual(lc.parse(data[4:]), [("op", "specialize"), ("id", "7"), ("env", "A=b=c"), ("empty", "")])

    def test_nul_in_a_value_cannot_start_a_field(self):
        fields = lc.parse(lc.encode("error", [("message", "a\0op=evil")])[4:])
        self.assertEqual(fields, [("op", "error"), ("message", "a\\0op=evil")])

    def test_long_values_are_cut(self):
        fields = lc.parse(lc.encode("error", [("traceback", "x" * (lc.FIELD_MAX * 2))])[4:])
        self.assertLessEqual(len(fields[1][1]), lc.FIELD_MAX)
        self.assertTrue(fields[1][1].endswith("[... cut by the legion worker]"))

    def test_undecodable_bytes_survive(self):
        fields = lc.parse(b"op=x\0k=\xff\xfe\0")
        self.assertEqual(lc.encode(fields[0][1], fields[1:])[4:], b"op=x\0k=\xff\xfe\0")

    def test_too_large_a_frame_is_refused(self):
        many = [("f%d" % i, "x" * (lc.FIELD_MAX - 100)) for i in range(lc.PROTO_MAX // lc.FIELD_MAX + 2)]
        with self.assertRaises(lc.ProtocolError):
            lc.encode("ready", many)

    def test_hostile_payloads(self):
        for bad in (b"", b"op=x", b"\0", b"op=x\0\0", b"=x\0", b"opx\0", b"id=1\0op=x\0", b"op=x\0novalue\0",
                    b"op=x\0=v\0"):
            with self.subTest(payload=bad), self.assertRaises(lc.ProtocolError):
                lc.parse(bad)

    def test_frame_lookups(self):
        f = lc.Frame(lc.parse(b"op=specialize\0env=A=1\0env=B=2\0id=3\0"), [])
        self.assertEqual((f.op, f.get("id"), f.get("nope", "d")), ("specialize", "3", "d"))
        self.assertEqual(f.getall("env"), ["A=1", "B=2"])


class Channel(unittest.TestCase):
    def setUp(self):
        self.host, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ctl = lc.Control(theirs.detach())

    def tearDown(self):
        self.host.close()
        self.ctl.sock.close()

    def test_frames_in_pieces(self):
        data = frame_bytes(b"op=ping\0id=1\0") + frame_bytes(b"op=pong\0")
        for b in data:
            self.host.send(bytes([b]))
        self.assertEqual(self.ctl.recv().fields, [("op", "ping"), ("id", "1")])
        self.assertEqual(self.ctl.recv().op, "pong")
        self.host.shutdown(socket.SHUT_WR)
        self.assertIsNone(self.ctl.recv())

    def test_send(self):
        self.ctl.send("ready", phase="placeholder")
        self.assertEqual(self.host.recv(100), frame_bytes(b"op=ready\0phase=placeholder\0"))

    def hostile(self, data):
        self.host.sendall(data)
        self.host.shutdown(socket.SHUT_WR)
        with self.assertRaises(lc.ProtocolError):
            self.ctl.recv()

    def test_zero_length(self):
        self.hostile(struct.pack("<I", 0))

    def test_length_over_the_maximum(self):
        self.hostile(struct.pack("<I", lc.PROTO_MAX + 1) + b"op=x\0")

    def test_length_of_all_ones(self):
        self.hostile(b"\xff\xff\xff\xff")

    def test_eof_in_the_header(self):
        self.hostile(b"\x05\x00")

    def test_eof_in_the_payload(self):
        self.hostile(struct.pack("<I", 100) + b"op=x\0")

    def test_garbage_payload(self):
        self.hostile(frame_bytes(b"\xff\xff\xff\xff"))

    def send_fds(self, data, fds):
        self.host.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])

    def test_fds_come_with_the_frame(self):
        r, w = os.pipe()
        self.send_fds(frame_bytes(b"op=specialize\0"), [w])
        os.close(w)
        f = self.ctl.recv()
        self.assertEqual(len(f.fds), 1)
        os.write(f.fds[0], b"hi")
        self.assertEqual(os.read(r, 2), b"hi")
        f.close_fds()
        self.assertEqual(f.fds, [])
        os.close(r)

    def test_too_many_fds_are_refused_and_closed(self):
        pipes = [os.pipe() for _ in range(lc.PROTO_MAX_FDS + 1)]
        before = open_fds()
        self.send_fds(frame_bytes(b"op=specialize\0"), [w for _, w in pipes])
        with self.assertRaises(lc.ProtocolError):
            self.ctl.recv()
        self.assertEqual(open_fds(), before)
        for r, w in pipes:
            os.close(r)
            os.close(w)

    def test_fds_of_a_bad_frame_are_closed(self):
        r, w = os.pipe()
        before = open_fds()
        self.send_fds(frame_bytes(b"no-op\0"), [w])
        with self.assertRaises(lc.ProtocolError):
            self.ctl.recv()
        self.assertEqual(open_fds(), before)
        os.close(r)
        os.close(w)

    def test_wait_for_specialize_answers_other_ops(self):
        self.host.sendall(frame_bytes(b"op=stats\0id=4\0") + frame_bytes(b"op=specialize\0id=5\0"))
        f = lc.wait_for_specialize(self.ctl)
        self.assertEqual(f.get("id"), "5")
        n = struct.unpack("<I", self.host.recv(4))[0]
        self.assertEqual(lc.parse(self.host.recv(n)), [("op", "error"), ("id", "4"), ("message", "unknown op `stats`")])

    def test_second_specialize_is_refused(self):
        self.host.sendall(frame_bytes(b"op=specialize\0id=9\0"))
        self.host.shutdown(socket.SHUT_WR)
        lc.control_loop(self.ctl)  # returns at EOF
        n = struct.unpack("<I", self.host.recv(4))[0]
        self.assertEqual(dict(lc.parse(self.host.recv(n)))["type"], "AlreadySpecialized")


class Specialize(unittest.TestCase):
    def test_env(self):
        lc.apply_env(lc.Frame(lc.parse(b"op=specialize\0env=LG_UNIT_TEST=a=b\0"), []))
        self.assertEqual(os.environ.pop("LG_UNIT_TEST"), "a=b")
        for bad in (b"env=NOEQUALS\0", b"env==v\0"):
            with self.subTest(field=bad), self.assertRaises(lc.SpecializeError) as cm:
                lc.apply_env(lc.Frame(lc.parse(b"op=specialize\0" + bad), []))
            self.assertEqual(cm.exception.type, "InvalidEnv")

    def test_listen_socket(self):
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind("\0legion-unit-%d" % os.getpid())
        srv.listen(1)
        r, w = os.pipe()
        f = lc.Frame([("op", "specialize")], [os.dup(srv.fileno()), w])
        s = lc.listen_socket(f)
        self.assertEqual(f.fds, [])
        with self.assertRaises(OSError):  # the extra fd was closed
            os.fstat(w)
        s.close()
        srv.close()
        os.close(r)

    def test_listen_socket_refuses_what_is_not_listening(self):
        a, b = socket.socketpair()
        r, w = os.pipe()
        for fd in (a.detach(), r):
            with self.subTest(fd=fd), self.assertRaises(lc.SpecializeError) as cm:
                lc.listen_socket(lc.Frame([("op", "specialize")], [fd]))
            self.assertEqual(cm.exception.type, "ListenError")
            with self.assertRaises(OSError):  # closed, not leaked
                os.fstat(fd)
        b.close()
        os.close(w)

    def test_listen_socket_needs_one(self):
        saved = os.environ.pop("LEGION_LISTEN_FD", None)
        try:
            with self.assertRaises(lc.SpecializeError):
                lc.listen_socket(lc.Frame([("op", "specialize")], []))
            os.environ["LEGION_LISTEN_FD"] = "not-a-number"
            with self.assertRaises(lc.SpecializeError):
                lc.listen_socket(lc.Frame([("op", "specialize")], []))
        finally:
            os.environ.pop("LEGION_LISTEN_FD", None)
            if saved is not None:
                os.environ["LEGION_LISTEN_FD"] = saved


if __name__ == "__main__":
    unittest.main()
