"""`legion sandbox run` as a person or a benchmark uses it: output, exit
status, limits, binds, errors for bad input, and nothing left behind."""
import os
import signal
import subprocess
import time

import pytest


def test_runs_command_and_streams_output(legion):
    p = legion("sandbox", "run", "--", "/bin/sh", "-c", "echo out; echo err >&2; exit 3")
    assert p.returncode == 3
    assert p.stdout == "out\n"
    assert p.stderr == "err\n"


def test_identity_and_hostname(legion):
    p = legion("sandbox", "run", "--hostname", "box1", "--", "/bin/sh", "-c",
               "id -u; hostname; cat /proc/self/uid_map | tr -s ' '", check=0)
    lines = p.stdout.splitlines()
    assert lines[0] == "0"
    assert lines[1] == "box1"
    inside, outside, count = lines[2].split()
    assert inside == "0" and int(outside) >= 0x01000000 and count == "65536"


def test_env_cwd_and_stdin(legion):
    p = legion("sandbox", "run", "--env", "FOO=bar baz", "--cwd", "/tmp", "--",
               "/bin/sh", "-c", 'echo "$FOO"; pwd; cat', input=b"from stdin\n", check=0)
    assert p.stdout == "bar baz\n/tmp\nfrom stdin\n"


def test_bind_ro_and_rw(legion, tmp_path):
    os.chmod(tmp_path, 0o777)
    (tmp_path / "in.txt").write_text("data\n")
    out = tmp_path / "outdir"
    out.mkdir()
    os.chmod(out, 0o777)
    p = legion("sandbox", "run", "--bind", f"{tmp_path}/in.txt:/in.txt:ro",
               "--bind", f"{out}:/out", "--", "/bin/sh", "-c",
               "cat /in.txt; echo x >> /in.txt 2>/dev/null || echo denied; echo w > /out/f", check=0)
    assert p.stdout == "data\ndenied\n"
    assert (out / "f").read_text() == "w\n"
    assert (tmp_path / "in.txt").read_text() == "data\n"


def test_relative_paths(legion, tmp_path):
    layer = tmp_path / "layer"
    (layer / "bin").mkdir(parents=True)
    os.chmod(tmp_path, 0o755)
    os.chmod(layer, 0o755)
    (layer / "hello.txt").write_text("from the layer\n")
    os.chmod(layer / "hello.txt", 0o644)
    import shutil
    shutil.copy("/bin/busybox", layer / "bin" / "busybox")
    p = subprocess.run([legion.bin, "sandbox", "run", "--rootfs", "layer", "--bind", "./layer:/mnt/l:ro", "--",
                        "/bin/busybox", "cat", "/hello.txt", "/mnt/l/hello.txt"],
                       cwd=tmp_path, capture_output=True, env=legion.env)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"from the layer\nfrom the layer\n"


def test_read_only_root(legion):
    p = legion("sandbox", "run", "--ro", "--", "/bin/sh", "-c",
               "touch /etc/x 2>/dev/null || echo ro; touch /tmp/x && echo tmp", check=0)
    assert p.stdout == "ro\ntmp\n"


def test_oom_is_reported(legion):
    p = legion("sandbox", "run", "--memory", "32M", "--", "python3", "-c",
               "b = bytearray(512 << 20)")
    assert p.returncode == 137
    assert "OOMKilled" in p.stderr


FORK_BOMB = """
import os, time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(5)
            os._exit(0)
        n += 1
except OSError as e:
    print(n, e.strerror)
"""


def test_pids_limit(legion):
    p = legion("sandbox", "run", "--pids", "8", "--", "python3", "-c", FORK_BOMB, check=0)
    forked, reason = p.stdout.split(" ", 1)
    assert 0 < int(forked) < 8
    assert reason.strip() == "Resource temporarily unavailable"


def test_disk_limit(legion):
    p = legion("sandbox", "run", "--disk", "8M", "--", "/bin/sh", "-c",
               "dd if=/dev/zero of=/tmp/big bs=1M count=64 2>&1 | grep -o 'No space left on device'; "
               "du -m /tmp/big | cut -f1")
    assert "No space left on device" in p.stdout
    assert int(p.stdout.splitlines()[-1]) <= 8


def test_no_network_beyond_loopback(legion):
    p = legion("sandbox", "run", "--", "python3", "-c",
               "import socket\n"
               "s = socket.socket(); s.settimeout(2)\n"
               "try:\n    s.connect(('1.1.1.1', 80)); print('connected')\n"
               "except OSError as e:\n    print(e.strerror)\n")
    assert p.stdout.strip() == "Network is unreachable"


def test_capabilities_dropped_unless_kept(legion):
    p = legion("sandbox", "run", "--", "/bin/sh", "-c", "grep CapEff /proc/self/status", check=0)
    assert p.stdout.split()[1] == "0000000000000000"
    p = legion("sandbox", "run", "--cap", "CAP_CHOWN", "--", "/bin/sh", "-c",
               "grep CapEff /proc/self/status", check=0)
    assert p.stdout.split()[1] == "0000000000000001"


def test_signal_forwarded(legion):
    proc = subprocess.Popen([legion.bin, "sandbox", "run", "--", "/bin/sh", "-c",
                             "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.1; done"],
                            stdout=subprocess.PIPE, env=legion.env)
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert out == b"got-term\n"
    assert proc.returncode == 7


def _leftovers(run_dir):
    d = os.path.join(run_dir, "sandboxes")
    return os.listdir(d) if os.path.isdir(d) else []


def test_killed_cli_leaks_nothing(legion, run_dir):
    proc = subprocess.Popen([legion.bin, "sandbox", "run", "--", "/bin/sh", "-c",
                             "echo ready; exec sleep 1000"], stdout=subprocess.PIPE, env=legion.env)
    assert proc.stdout.readline() == b"ready\n"
    assert len(_leftovers(run_dir)) == 1
    proc.kill()
    proc.wait()
    # The sandbox died with its owner...
    deadline = time.time() + 10
    while time.time() < deadline:
        r = subprocess.run(["pgrep", "-f", "^sleep 1000$"], capture_output=True)
        if r.returncode != 0:
            break
        time.sleep(0.05)
    assert r.returncode != 0, "sandbox process survived its owner"
    # ...and the next run (or `legion sandbox gc`) removes what it left.
    p = legion("sandbox", "gc", check=0)
    assert p.stdout == "cleaned 1 sandbox\n"
    assert _leftovers(run_dir) == []


def test_nothing_left_after_run(legion, run_dir):
    legion("sandbox", "run", "--memory", "64M", "--", "/bin/true", check=0)
    assert _leftovers(run_dir) == []
    with open("/proc/self/mountinfo") as f:
        assert run_dir not in f.read()
    parent = legion.env["LEGION_CGROUP_PARENT"]
    for ctrl in ("memory", "pids", "cpu"):
        d = f"/sys/fs/cgroup/{ctrl}/{parent}"
        if os.path.isdir(d):
            assert [e for e in os.listdir(d) if os.path.isdir(os.path.join(d, e))] == []


def test_bad_input_is_rejected_clearly(legion, run_dir):
    cases = [
        (["--memory", "lots"], "invalid --memory value `lots`"),
        (["--cpus", "-1"], "invalid --cpus value `-1`"),
        (["--bind", "nocolon"], "invalid --bind"),
        (["--bind", "/tmp:/x:maybe"], "invalid --bind"),
        (["--net", "bridge"], "invalid --net"),
        (["--cap", "CAP_NOPE"], "invalid --cap"),
        (["--env", "=x"], "invalid --env"),
        (["--id", "../../etc"], "invalid sandbox id"),
        (["--rootfs", "/does/not/exist"], "/does/not/exist"),
        (["--bind", "/does/not/exist:/x"], "/does/not/exist"),
        (["--cwd", "relative"], "must be absolute"),
    ]
    for args, msg in cases:
        p = legion("sandbox", "run", *args, "--", "/bin/true")
        assert p.returncode in (2, 125), (args, p.returncode, p.stderr)
        assert msg in p.stderr, (args, p.stderr)
        assert _leftovers(run_dir) == [], args
    p = legion("sandbox", "run")
    assert p.returncode == 2 and "no command given" in p.stderr


def test_missing_program(legion):
    p = legion("sandbox", "run", "--", "/no/such/binary")
    assert p.returncode == 127
    assert "/no/such/binary" in p.stderr


# Watches that see a file opened, read and closed (IN_OPEN, IN_ACCESS,
# IN_CLOSE_NOWRITE): inotify, and fanotify's unprivileged kind (inode mark,
# FAN_REPORT_FID) where allowed. Python run as it is by a sandbox (the script
# below), a session (executions) or the test itself (exec).
FILE_WATCH = r'''
import ctypes, os, struct
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
_MASK = 0x1 | 0x20 | 0x10

def watch(path):
    ino = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if ino < 0 or _libc.inotify_add_watch(ino, path.encode(), _MASK) < 0:
        raise OSError(ctypes.get_errno(), "inotify watch on " + path)
    fan = _libc.fanotify_init(0x200 | 0x2 | 0x1, os.O_RDONLY)  # FAN_REPORT_FID|FAN_NONBLOCK|FAN_CLOEXEC
    if fan >= 0 and _libc.fanotify_mark(fan, 1, _MASK, -100, path.encode()) < 0:
        os.close(fan)
        fan = -1
    return ino, fan

def events(fds):
    """What the watches queued so far: ('inotify' or 'fanotify', mask)."""
    seen = []
    for kind, fd in zip(("inotify", "fanotify"), fds):
        while fd >= 0:
            try:
                buf = os.read(fd, 65536)
            except BlockingIOError:
                break
            off = 0
            while off < len(buf):
                if kind == "inotify":
                    _, mask, _, name_len = struct.unpack_from("iIII", buf, off)
                    off += 16 + name_len
                else:
                    event_len, _, _, _, mask = struct.unpack_from("IBBHQ", buf, off)
                    off += event_len
                seen.append((kind, mask))
    return seen
'''

# Watches argv[1], says "ready", and on a line from stdin prints what the
# watches saw meanwhile, then what they see of its own run of argv[1]: the
# proof that they work where it runs.
WATCH_SCRIPT = FILE_WATCH + r'''
import subprocess, sys
fds = watch(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
seen = events(fds)
subprocess.run([sys.argv[1]], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
print(repr((seen, events(fds))), flush=True)
'''


def start_watch(legion, path, *run_args):
    p = subprocess.Popen([legion.bin, "sandbox", "run", *run_args, "--", "/usr/bin/python3", "-c", WATCH_SCRIPT,
                          path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=legion.env)
    assert p.stdout.readline() == "ready\n"
    return p


def watch_result(p):
    out, _ = p.communicate("go\n", timeout=30)
    assert p.returncode == 0, out
    return eval(out)


@pytest.fixture()
def host_watch():
    """host_watch(path): the same watches, set by the test on the host;
    returns a function giving what they queued since it last did."""
    ns, all_fds = {}, []
    exec(FILE_WATCH, ns)

    def watch(path):
        fds = ns["watch"](path)
        all_fds.extend(fd for fd in fds if fd >= 0)
        return lambda: ns["events"](fds)

    yield watch
    for fd in all_fds:
        os.close(fd)


def test_usr_does_not_show_what_the_host_runs(legion, host_watch):
    # The host's /usr is shared read-only, but not its inodes: a watch on
    # /usr/bin/tac inside does not see the host run tac, which a watch on
    # the host does (fsnotify queues events before open and close return).
    on_host = host_watch("/usr/bin/tac")
    inside = start_watch(legion, "/usr/bin/tac")
    subprocess.run(["/usr/bin/tac"], stdin=subprocess.DEVNULL, check=True)
    host_seen = on_host()
    seen, own = watch_result(inside)
    assert {k for k, _ in host_seen} == {"inotify", "fanotify"}, host_seen
    assert seen == []
    assert own, "the watch inside sees nothing at all"


def test_usr_does_not_show_what_other_sandboxes_run(legion, host_watch):
    on_host = host_watch("/usr/bin/tac")
    a = start_watch(legion, "/usr/bin/tac")
    legion("sandbox", "run", "--", "/usr/bin/tac", input=b"", check=0)
    # B ran the host's very file...
    assert on_host() != []
    # ...and A's watch on it saw only A's own run.
    seen, own = watch_result(a)
    assert seen == [] and own


def test_shared_image_layer_does_not_show_what_other_sandboxes_run(legion, host_watch, tmp_path):
    # Every sandbox of an image shares its layer directories (overlay lower
    # layers), yet watches inside one see only that sandbox's own overlay.
    layer = tmp_path / "layer"
    for d in ("usr", "data", "tmp"):
        (layer / d).mkdir(parents=True)
    for link in ("bin", "lib", "lib64"):
        os.symlink("usr/" + link, layer / link)
    import shutil
    shutil.copy("/usr/bin/tac", layer / "data" / "tac")
    for d in (tmp_path, layer, layer / "data"):
        os.chmod(d, 0o755)
    image = ["--rootfs", str(layer), "--bind", "/usr:/usr:ro"]
    on_host = host_watch(str(layer / "data" / "tac"))
    a = start_watch(legion, "/data/tac", *image)
    legion("sandbox", "run", *image, "--", "/data/tac", input=b"", check=0)
    assert on_host() != []
    seen, own = watch_result(a)
    assert seen == [] and own
