"""The session's files under /mnt/data (docs/sessions-runtime.md): path
checks, listing, download, delete, and uploads written to temporary names
and renamed into place, all or none, within the limits per file and per
session.

The session's code runs in the same sandbox and may put symbolic links
anywhere under /mnt/data, or swap a directory for one while we work: paths
are resolved against the data root, then walked a component at a time with
O_NOFOLLOW, so nothing leads out of it."""
import errno
import os
import stat
import threading

from legion_runtime.httpd import ApiError
from legion_runtime.session.config import CONFIG, iso_time, limit_text

MAX_PATH_BYTES = 1024
MAX_NAME_BYTES = 255
MAX_LIST = 100000
UPLOAD_PREFIX = ".legion-upload-"
FILES_LOCK = threading.Lock()  # held by upload()
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def split_path(raw):
    if not raw:
        raise ApiError(400, "InvalidPath", "empty file path")
    if "\0" in raw:
        raise ApiError(400, "InvalidPath", "file paths may not contain NUL")
    if raw.startswith("/"):
        raise ApiError(400, "InvalidPath", "absolute paths are not allowed; paths are relative to /mnt/data")
    parts = raw.split("/")
    for p in parts:
        if p in ("", ".", ".."):
            raise ApiError(400, "InvalidPath", "file paths may not contain `..`, `.` or empty parts: `%s`" % raw[:200])
        if len(os.fsencode(p)) > MAX_NAME_BYTES:
            raise ApiError(400, "NameTooLong", "a file name is longer than %d bytes" % MAX_NAME_BYTES)
    if len(os.fsencode(raw)) > MAX_PATH_BYTES:
        raise ApiError(400, "NameTooLong", "the file path is longer than %d bytes" % MAX_PATH_BYTES)
    return parts


def _data_root():
    return os.path.realpath(CONFIG.data_dir)


def _inside(root, real):
    if real == root:
        return []
    if not real.startswith(root.rstrip("/") + "/"):
        return None
    return real[len(root.rstrip("/")) + 1:].split("/")


def resolve(parts, follow_last):
    """The path's components below the data root after resolving symbolic
    links (which may point within it, never out of it)."""
    root = _data_root()
    if follow_last:
        comps = _inside(root, os.path.realpath(os.path.join(root, *parts)))
    else:
        parent = _inside(root, os.path.realpath(os.path.join(root, *parts[:-1])))
        comps = None if parent is None else parent + [parts[-1]]
    if comps is None:
        raise ApiError(403, "PathOutsideData",
                       "`%s` leads outside /mnt/data (through a symbolic link)" % "/".join(parts)[:200])
    return root, comps


def open_dir(root, comps, create=False, shown=""):
    """An fd of root/comps..., walked one component at a time with
    O_NOFOLLOW, so no symbolic link can lead out on the way."""
    fd = os.open(root, _O_DIR)
    try:
        for c in comps:
            try:
                nfd = os.open(c, _O_DIR, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise ApiError(404, "NotFound", "no such file: `%s`" % shown)
                try:
                    os.mkdir(c, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                nfd = os.open(c, _O_DIR, dir_fd=fd)
            except NotADirectoryError:
                raise ApiError(409, "NotADirectory", "`%s` is not a directory" % c)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise ApiError(403, "PathOutsideData", "`%s` changed into a symbolic link" % c)
                raise
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _walk(fd, prefix, depth, out, counter):
    """Regular files below fd (not following links): (name, stat)."""
    try:
        it = os.scandir(fd)
    except OSError:
        return
    with it:
        entries = list(it)
    for e in entries:
        if counter[0] >= MAX_LIST:
            return
        name = prefix + e.name
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            out.append((name, st))
            counter[0] += 1
        elif stat.S_ISDIR(st.st_mode) and depth < 64:
            try:
                sub = os.open(e.name, _O_DIR, dir_fd=fd)
            except OSError:
                continue
            try:
                _walk(sub, name + "/", depth + 1, out, counter)
            finally:
                os.close(sub)


def all_files():
    root = _data_root()
    try:
        fd = os.open(root, _O_DIR)
    except OSError as e:
        raise ApiError(503, "NoDataDirectory", "/mnt/data is not available: %s" % e.strerror)
    out = []
    try:
        _walk(fd, "", 0, out, [0])
    finally:
        os.close(fd)
    return out


def usage():
    return sum(st.st_size for _, st in all_files())


def entry(name, st):
    return {"name": name, "size": st.st_size, "modified": iso_time(st.st_mtime)}


def list_files():
    files = [(n, st) for n, st in all_files() if not n.rsplit("/", 1)[-1].startswith(UPLOAD_PREFIX)]
    files.sort(key=lambda x: x[0])
    return [entry(n, st) for n, st in files]


def open_file(raw):
    parts = split_path(raw)
    root, comps = resolve(parts, True)
    if not comps:
        raise ApiError(400, "IsADirectory", "`%s` is a directory" % raw)
    dfd = open_dir(root, comps[:-1], shown=raw)
    try:
        fd = os.open(comps[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dfd)
    except FileNotFoundError:
        raise ApiError(404, "NotFound", "no such file: `%s`" % raw)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ApiError(403, "PathOutsideData", "`%s` changed into a symbolic link" % raw)
        if e.errno == errno.ENXIO:  # a Unix socket
            raise ApiError(400, "NotARegularFile", "`%s` is not a regular file" % raw)
        raise
    finally:
        os.close(dfd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ApiError(400, "IsADirectory", "`%s` is a directory" % raw)
        raise ApiError(400, "NotARegularFile", "`%s` is not a regular file" % raw)
    os.set_blocking(fd, True)
    return fd, st


def delete_file(raw):
    parts = split_path(raw)
    root, comps = resolve(parts, False)
    dfd = open_dir(root, comps[:-1], shown=raw)
    try:
        try:
            st = os.stat(comps[-1], dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            raise ApiError(404, "NotFound", "no such file: `%s`" % raw)
        if stat.S_ISDIR(st.st_mode):
            try:
                os.rmdir(comps[-1], dir_fd=dfd)
            except OSError as e:
                if e.errno == errno.ENOTEMPTY:
                    raise ApiError(409, "DirectoryNotEmpty", "directory `%s` is not empty" % raw)
                raise
        else:
            os.unlink(comps[-1], dir_fd=dfd)
    finally:
        os.close(dfd)


class Upload:
    """Files being written to temporary names, renamed into place at the
    end, all or none; the limits are checked while the bytes arrive."""

    def __init__(self):
        self.used = usage()
        self.pending = []   # (dfd, tmp, name, shown)
        self.added = 0
        self.cur = None     # [fd, shown, old size, size] of the file being written

    def _too_big(self, shown, size):
        if size > CONFIG.max_file:
            raise ApiError(413, "FileTooLarge", "`%s` is larger than the limit per file of %s" % (
                shown, limit_text(CONFIG.max_file)), limit=CONFIG.max_file)

    def _quota(self, shown, size, old, known=False):
        total = self.used + self.added - old + size
        if total > CONFIG.max_bytes:
            raise ApiError(413, "SessionStorageFull",
                           "`%s` (%s bytes) does not fit: the session's files may take %s in all, "
                           "%d bytes are in use" % (shown, ("%d" if known else "at least %d") % size,
                                                    limit_text(CONFIG.max_bytes), self.used + self.added),
                           limit=CONFIG.max_bytes, used=self.used + self.added)

    def begin(self, raw, length=None):
        """Start writing one file; then write() its bytes and end()."""
        parts = split_path(raw)
        if parts[-1].startswith(UPLOAD_PREFIX):
            raise ApiError(400, "InvalidPath", "names starting with `%s` are reserved" % UPLOAD_PREFIX)
        root, comps = resolve(parts, False)
        dfd = open_dir(root, comps[:-1], create=True, shown=raw)
        name = comps[-1]
        try:
            old = 0
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    raise ApiError(409, "IsADirectory", "`%s` is a directory" % raw)
                if stat.S_ISREG(st.st_mode):
                    old = st.st_size
            except FileNotFoundError:
                pass
            if length is not None:
                self._too_big(raw, length)
                self._quota(raw, length, old, known=True)
            tmp = UPLOAD_PREFIX + os.urandom(6).hex()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=dfd)
        except BaseException:
            os.close(dfd)
            raise
        self.pending.append((dfd, tmp, name, raw))
        self.cur = [fd, raw, old, 0]

    def write(self, data):
        fd, raw, old, size = self.cur
        size += len(data)
        self.cur[3] = size
        self._too_big(raw, size)
        self._quota(raw, size, old)
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ApiError(507, "NoSpace", "no space left for `%s` in /mnt/data (the session's disk is full; "
                               "%d bytes in use)" % (raw, self.used + self.added))
            raise

    def end(self):
        fd, raw, old, size = self.cur
        self.cur = None
        os.close(fd)
        self.added += size - old

    def commit(self):
        out = []
        for dfd, tmp, name, shown in self.pending:
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            out.append(entry(shown, st))
        self.close()
        return out

    def abort(self):
        if self.cur is not None:
            try:
                os.close(self.cur[0])
            except OSError:
                pass
            self.cur = None
        for dfd, tmp, _, _ in self.pending:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
        self.close()

    def close(self):
        for dfd, _, _, _ in self.pending:
            try:
                os.close(dfd)
            except OSError:
                pass
        self.pending = []


def upload(fill):
    """fill(Upload) writes the files of one request; they are renamed into
    place together, or none is. Returns their entries. Uploads take turns:
    the quota stays exact."""
    with FILES_LOCK:
        up = Upload()
        try:
            fill(up)
            return up.commit()
        except BaseException:
            up.abort()
            raise
