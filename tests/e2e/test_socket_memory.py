"""Socket buffers count against a sandbox's memory limit.

A program that opens TCP connections on its own loopback and sends data
nobody reads makes the kernel hold that data in socket buffers. Without
socket accounting in the sandbox's cgroup nothing but the host-wide tcp_mem
bounds it (a 256 MiB sandbox once held 768 MiB that way). The test runs the
program in a sandbox with a 64 MiB limit, then, to show that the limit is
what stops it, on the host in a network namespace of its own, with no cgroup
limit, where it is allowed to queue three times as much."""
import os
import subprocess
import sys

import pytest

MiB = 1 << 20
LIMIT = 64 * MiB
# What the program may queue at most, in the sandbox and on the host.
CAP = 3 * LIMIT

# argv: the most bytes to queue, and "up" to bring lo up first (a fresh
# network namespace made by unshare has it down). Prints the bytes send()
# took and the connections made, then holds them until stdin is closed.
FILL = r"""
import fcntl, socket, struct, sys
cap = int(sys.argv[1])
if sys.argv[2:] == ["up"]:
    s = socket.socket()
    ifr = struct.pack("16sH", b"lo", 0)
    flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, ifr))[1]  # SIOCGIFFLAGS
    fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 1))  # SIOCSIFFLAGS, IFF_UP
    s.close()
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 30)  # the accepted ends inherit it
srv.bind(("127.0.0.1", 0))
srv.listen(64)
chunk = b"x" * 65536
queued, conns, stop = 0, [], ""
while queued < cap:
    try:
        c = socket.socket()
        conns.append(c)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 30)
        c.connect(srv.getsockname())
        conns.append(srv.accept()[0])
    except OSError as e:  # EMFILE: the nofile limit is the other bound
        stop = e.strerror
        break
    c.setblocking(False)
    while queued < cap:
        try:
            queued += c.send(chunk[:cap - queued])
        except BlockingIOError:
            break
print(queued, len(conns) // 2, stop, flush=True)
sys.stdin.read()
"""


def memory_cgroup(parent, sid):
    """The sandbox's group in the memory hierarchy, and whether it is v1."""
    v1 = f"/sys/fs/cgroup/memory/{parent}/{sid}"
    if os.path.isdir("/sys/fs/cgroup/memory"):
        return v1, True
    return f"/sys/fs/cgroup/{parent}/{sid}", False


def read_int(path):
    with open(path) as f:
        return int(f.read())


def socket_charge(group, v1):
    """(what sockets hold now, what limits them) as the cgroup says."""
    if v1:
        return (read_int(os.path.join(group, "memory.kmem.tcp.usage_in_bytes")),
                read_int(os.path.join(group, "memory.kmem.tcp.limit_in_bytes")))
    with open(os.path.join(group, "memory.stat")) as f:
        sock = next(int(line.split()[1]) for line in f if line.startswith("sock "))
    return sock, read_int(os.path.join(group, "memory.max"))


def parse(report):
    """FILL's report: (bytes queued, connections, why it stopped or "")."""
    queued, conns, stop = (report.rstrip("\n").split(" ", 2) + [""])[:3]
    return int(queued), int(conns), stop.strip()


def tcp_mem_room():
    """Bytes TCP may use host-wide before the kernel starts pressing every
    socket (tcp_mem's first value, in pages)."""
    with open("/proc/sys/net/ipv4/tcp_mem") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def test_socket_buffers_are_charged_to_the_memory_limit(legion):
    # Neither run may bring the host near the point where TCP is pressed
    # for everyone: that would be the harm the test is about.
    if tcp_mem_room() < 4 * CAP:
        pytest.skip("tcp_mem too small to queue %d MiB safely" % (CAP // MiB))

    sid = "socketfill"
    group, v1 = memory_cgroup(legion.env["LEGION_CGROUP_PARENT"], sid)
    p = subprocess.Popen([legion.bin, "sandbox", "run", "--id", sid, "--memory", "%dM" % (LIMIT // MiB),
                          "--", "python3", "-c", FILL, str(CAP)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=legion.env, text=True)
    try:
        report = p.stdout.readline()
        charged, limit = socket_charge(group, v1) if report else (None, None)
    finally:
        _, err = p.communicate("", timeout=60)  # closing stdin lets it exit
    if not report and not v1 and "OOMKilled" in err:
        # v2 charges sockets to memory.current itself, from the sending
        # task, which may be OOM-killed at the limit instead of being told
        # EAGAIN: the limit held all the same.
        queued, conns, stop, charged = 0, 0, "OOMKilled", 0
    else:
        assert report, "the program in the sandbox reported nothing: " + err
        assert p.returncode == 0, err
        queued, conns, stop = parse(report)
        # It filled buffers up to the limit (so it was not stopped by
        # anything else first), no further than the limit allows, and the
        # cgroup saw it.
        assert queued >= LIMIT // 2, (queued, conns, stop)
        assert queued < 2 * LIMIT, (queued, conns, stop)
        assert limit == LIMIT
        assert charged >= queued // 2, (charged, queued)

    # Calibration: the same program with no limit queues all it may.
    host = subprocess.run(["unshare", "--net", "--", sys.executable, "-c", FILL, str(CAP), "up"],
                          input="", capture_output=True, text=True, timeout=60)
    assert host.returncode == 0, host.stderr
    hq, hconns, hstop = parse(host.stdout)
    assert hq == CAP, (hq, hconns, hstop)
    print("queued: sandbox %d MiB in %d connections (socket charge %d MiB, stop: %s); host %d MiB in %d"
          % (queued // MiB, conns, charged // MiB, stop or "-", hq // MiB, hconns))
