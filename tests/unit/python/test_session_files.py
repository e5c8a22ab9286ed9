"""The session's files under /mnt/data (legion_runtime/session/files.py):
path checks with hostile paths, symbolic links that lead out, uploads
within the limits, all or none."""
import os
import shutil
import socket
import tempfile
import unittest

from legion_runtime.httpd import ApiError
from legion_runtime.session import files
from legion_runtime.session.config import CONFIG


class Paths(unittest.TestCase):
    def refused(self, raw, code):
        with self.assertRaises(ApiError) as cm:
            files.split_path(raw)
        self.assertEqual((cm.exception.status, cm.exception.code), (400, code), raw[:80])

    def test_good_paths(self):
        self.assertEqual(files.split_path("a/b.txt"), ["a", "b.txt"])
        self.assertEqual(files.split_path("€" * 85), ["€" * 85])  # 255 bytes
        self.assertEqual(files.split_path("..a/b..")[0], "..a")

    def test_hostile_paths(self):
        for raw in ("", "/etc/passwd", "a/../../etc", "..", ".", "./a", "a/.", "a//b", "a/", "\0", "a\0b"):
            with self.subTest(raw=raw):
                self.refused(raw, "InvalidPath")
        self.refused("€" * 86, "NameTooLong")
        self.refused("a" * 256, "NameTooLong")
        self.refused("/".join(["a" * 200] * 6), "NameTooLong")


class Data(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="lg-files-")
        self.outside = tempfile.mkdtemp(prefix="lg-outside-")
        with open(os.path.join(self.outside, "secret"), "w") as f:
            f.write("secret")
        self.saved = (CONFIG.data_dir, CONFIG.max_file, CONFIG.max_bytes)
        CONFIG.data_dir, CONFIG.max_file, CONFIG.max_bytes = self.dir, 100, 250

    def tearDown(self):
        CONFIG.data_dir, CONFIG.max_file, CONFIG.max_bytes = self.saved
        shutil.rmtree(self.dir)
        shutil.rmtree(self.outside)

    def path(self, *p):
        return os.path.join(self.dir, *p)

    def put(self, raw, data, length=None):
        def fill(up):
            up.begin(raw, length)
            up.write(data)
            up.end()
        return files.upload(fill)

    def error(self, fn, *args):
        with self.assertRaises(ApiError) as cm:
            fn(*args)
        return cm.exception.status, cm.exception.code

    def test_upload_download_list_delete(self):
        self.assertEqual(self.put("d/e/f.txt", b"hello", 5)[0]["name"], "d/e/f.txt")
        self.put("a.txt", b"x")
        self.assertEqual([(e["name"], e["size"]) for e in files.list_files()], [("a.txt", 1), ("d/e/f.txt", 5)])
        fd, st = files.open_file("d/e/f.txt")
        with os.fdopen(fd, "rb") as f:
            self.assertEqual(f.read(), b"hello")
        files.delete_file("d/e/f.txt")
        self.assertEqual(self.error(files.delete_file, "d/e/f.txt"), (404, "NotFound"))
        self.assertEqual(self.error(files.delete_file, "d"), (409, "DirectoryNotEmpty"))

    def test_symlinks_do_not_lead_out(self):
        os.symlink(self.outside, self.path("out"))
        os.symlink(os.path.join(self.outside, "secret"), self.path("secret"))
        os.symlink("../..", self.path("up"))
        for raw in ("out/secret", "secret", "up/etc/passwd"):
            with self.subTest(raw=raw):
                self.assertEqual(self.error(files.open_file, raw), (403, "PathOutsideData"))
        self.assertEqual(self.error(self.put, "out/new", b"x"), (403, "PathOutsideData"))
        self.assertFalse(os.path.exists(os.path.join(self.outside, "new")))
        files.delete_file("secret")  # the link, not what it points at
        self.assertTrue(os.path.exists(os.path.join(self.outside, "secret")))
        self.assertNotIn("out", [e["name"] for e in files.list_files()])

    def test_a_directory_swapped_for_a_link(self):
        # resolve() saw a directory; by the time it is walked it is a link
        # (O_NOFOLLOW | O_DIRECTORY: ENOTDIR).
        os.symlink(self.outside, self.path("d"))
        with self.assertRaises(ApiError) as cm:
            files.open_dir(os.path.realpath(self.dir), ["d"], create=True, shown="d/x")
        self.assertEqual(cm.exception.code, "NotADirectory")

    def test_links_within_are_followed(self):
        os.mkdir(self.path("real"))
        os.symlink("real", self.path("alias"))
        self.put("alias/f", b"abc")
        self.assertTrue(os.path.isfile(self.path("real", "f")))

    def test_not_regular_files(self):
        os.mkfifo(self.path("fifo"))
        self.assertEqual(self.error(files.open_file, "fifo"), (400, "NotARegularFile"))
        os.mkdir(self.path("dir"))
        self.assertEqual(self.error(files.open_file, "dir"), (400, "IsADirectory"))
        self.assertEqual(self.error(self.put, "dir", b"x"), (409, "IsADirectory"))
        s = socket.socket(socket.AF_UNIX)
        s.bind(self.path("sock"))
        self.assertEqual(self.error(files.open_file, "sock"), (400, "NotARegularFile"))
        s.close()
        self.put("file", b"x")
        self.assertEqual(self.error(self.put, "file/under", b"x"), (409, "NotADirectory"))

    def test_limits_leave_nothing_behind(self):
        self.assertEqual(self.error(self.put, "big", b"x" * 101), (413, "FileTooLarge"))
        self.assertEqual(self.error(self.put, "big", b"x", 101), (413, "FileTooLarge"))
        self.put("a", b"x" * 100)
        self.put("b", b"x" * 100)
        self.assertEqual(self.error(self.put, "c", b"x" * 51), (413, "SessionStorageFull"))
        self.put("a", b"x" * 50)  # replacing a file counts what it frees
        self.put("c", b"x" * 100)
        self.assertEqual(sorted(os.listdir(self.dir)), ["a", "b", "c"])

    def test_all_or_none(self):
        def two(up):
            up.begin("one")
            up.write(b"1")
            up.end()
            up.begin("two")
            up.write(b"x" * 101)
        self.assertEqual(self.error(files.upload, two), (413, "FileTooLarge"))
        self.assertEqual(os.listdir(self.dir), [])

    def test_reserved_names(self):
        self.assertEqual(self.error(self.put, files.UPLOAD_PREFIX + "x", b"x"), (400, "InvalidPath"))
        with open(self.path(files.UPLOAD_PREFIX + "left"), "w"):
            pass
        self.assertEqual(files.list_files(), [])


if __name__ == "__main__":
    unittest.main()
