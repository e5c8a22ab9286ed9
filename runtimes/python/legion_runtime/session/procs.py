"""The sandbox's processes as the session supervisor sees them
(docs/sessions-runtime.md): killing what an interpreter left behind, and
saying why an interpreter died (a signal, running out of memory)."""
import os
import signal
import time

from legion_runtime.session.config import parse_size, size_text

def _in_own_pid_namespace():
    """True inside a Legion sandbox: PID 1 is legion-init, so kill(-1)
    reaches exactly the processes of this sandbox (minus init and us)."""
    if os.getpid() == 1:
        return False
    try:
        with open("/proc/1/comm") as f:
            return f.read().strip() == "legion-init"
    except OSError:
        return False


IN_SANDBOX = _in_own_pid_namespace()


def _others_alive():
    me = os.getpid()
    try:
        names = os.listdir("/proc")
    except OSError:
        return False
    for name in names:
        if not name.isdigit():
            continue
        pid = int(name)
        if pid in (1, me):
            continue
        try:
            with open("/proc/%d/stat" % pid, "rb") as f:
                st = f.read()
        except OSError:
            continue
        state = st[st.rfind(b")") + 2:][:1]
        if state not in (b"Z", b"X"):
            return True
    return False


def kill_everything_else(pgid=None):
    """A fresh interpreter means a fresh process tree: SIGKILL every process
    in the sandbox but init and the supervisor (what the old interpreter
    started, fork bombs included). Outside a sandbox: its process group."""
    if not IN_SANDBOX:
        if pgid:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except OSError:
                pass
        return
    deadline = time.monotonic() + 5.0
    while True:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            return
        except OSError:
            pass
        if not _others_alive() or time.monotonic() > deadline:
            return
        time.sleep(0.002)


def kill_forked_copies(interp_pid):
    """SIGKILL the processes the interpreter forked that still run its code
    (same command line; not what they exec'd): after a timeout they would go
    on running the cell, a fork bomb for one. Each such copy leads a process
    group (interpreter.py sees to it), killed whole: a group kill cannot be
    outrun by fork(). Returns the groups killed."""
    try:
        with open("/proc/%d/cmdline" % interp_pid, "rb") as f:
            cmdline = f.read()
    except OSError:
        return []
    killed = set()
    me = os.getpid()
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        found = False
        try:
            names = os.listdir("/proc")
        except OSError:
            break
        for name in names:
            if not name.isdigit() or int(name) in (1, interp_pid, me):
                continue
            pid = int(name)
            try:
                with open("/proc/%d/stat" % pid, "rb") as f:
                    st = f.read()
                fields = st[st.rfind(b")") + 2:].split()
                if fields[0] in (b"Z", b"X"):
                    continue
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    if f.read() != cmdline:
                        continue
                pgrp = int(fields[2])
                if pgrp in (interp_pid, me, 1):
                    os.kill(pid, signal.SIGKILL)  # it could not make its own group
                else:
                    os.killpg(pgrp, signal.SIGKILL)
                    killed.add(pgrp)
                found = True
            except (OSError, ValueError, IndexError):
                continue
        if not found:
            break
        time.sleep(0.002)
    return sorted(killed)


def _read_first(paths):
    for p in paths:
        try:
            with open(p) as f:
                return f.read()
        except OSError:
            continue
    return None


def memory_limit():
    """The sandbox's memory limit: LEGION_SESSION_MEMORY_LIMIT (bytes, set by
    the host), else the cgroup's if the sandbox can see it."""
    try:
        n = parse_size(os.environ.get("LEGION_SESSION_MEMORY_LIMIT", ""))
    except ValueError:
        v = (_read_first(["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]) or "").strip()
        n = int(v) if v.isdigit() else 0
    return n if 0 < n < (1 << 60) else None


def oom_kills():
    """The memory cgroup's OOM-kill count, when the sandbox can see it."""
    for p in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"):
        v = _read_first([p])
        if v is None:
            continue
        for line in v.splitlines():
            k, _, n = line.partition(" ")
            if k == "oom_kill" and n.strip().isdigit():
                return int(n)
    return None


def describe_death(returncode, oom_before=None, when=""):
    """"the interpreter was killed by SIGSEGV (segmentation fault) during
    the execution" and the like; `when` goes after the verb."""
    when = (" " + when) if when else ""
    if returncode is None:
        return "the interpreter went away" + when
    if returncode < 0:
        sig = -returncode
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = "signal %d" % sig
        if sig == signal.SIGKILL:
            after = oom_kills()
            lim = memory_limit()
            lim_text = " (the session's memory limit is %s)" % size_text(lim) if lim else ""
            sure = oom_before is not None and after is not None and after > oom_before
            return "the interpreter was killed by SIGKILL%s, %s out of memory%s" % (
                when, "because it ran" if sure else "most likely because it ran", lim_text)
        what = {signal.SIGSEGV: "segmentation fault", signal.SIGBUS: "bus error",
                signal.SIGABRT: "aborted", signal.SIGFPE: "floating point exception",
                signal.SIGILL: "illegal instruction"}.get(sig)
        return "the interpreter was killed by %s%s%s" % (name, " (%s)" % what if what else "", when)
    return "the interpreter exited with status %d%s" % (returncode, when)


LOST = ("a fresh interpreter was started: variables, imports and other in-memory state "
        "were lost (files in /mnt/data are kept)")
