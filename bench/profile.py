#!/usr/bin/python3
"""Digest `perf script` output of a batch of `legion sandbox run` runs.

  profile.py cpu    PERF_SCRIPT_TXT RUNS HZ   (perf record -e cpu-clock -F HZ -a -g)
  profile.py offcpu PERF_SCRIPT_TXT RUNS      (perf record -e sched:sched_switch -a -g)

cpu: every sample of the benchmark's own processes (lgbench, legion,
legion-init, the workload) is put in the first category whose kernel
function appears in its call chain; CPU milliseconds per run = samples / HZ /
RUNS. Kernel threads (deferred work such as network namespace clean-up,
RCU callbacks) are counted apart: they also serve anything else running.

offcpu: for each time a legion or legion-init process leaves the CPU, the
time until it runs again, summed per kernel stack (blocked) or as
"preempted" (still runnable); milliseconds per run.

Prints one JSON object."""
import collections
import json
import re
import sys

OWN = ("legion", "legion-init", "lgbench", "true")

CATEGORIES = [
    ("network namespace: create", ["copy_net_ns"]),
    ("network namespace: bring up lo", ["devinet_ioctl", "dev_ioctl"]),
    ("seccomp filter load", ["do_seccomp"]),
    ("cgroup: mkdir", ["cgroup_mkdir"]),
    ("cgroup: rmdir", ["cgroup_rmdir"]),
    ("cgroup: attach (cgroup.procs)", ["__cgroup1_procs_write", "cgroup_procs_write", "cgroup_attach_task"]),
    ("user namespace + id maps", ["create_user_ns", "proc_uid_map_write", "proc_gid_map_write", "map_write"]),
    ("mounts, pivot_root, umount", ["path_mount", "__x64_sys_mount", "__x64_sys_move_mount", "__x64_sys_open_tree",
                                    "__x64_sys_mount_setattr", "__x64_sys_umount", "__do_sys_pivot_root",
                                    "__x64_sys_pivot_root", "__x64_sys_fsmount"]),
    ("namespace teardown at exit", ["free_nsproxy", "put_mnt_ns", "cleanup_mnt", "exit_task_namespaces"]),
    ("exec (incl. ELF loading)", ["bprm_execve", "do_execveat_common", "do_execveat_common.isra.0"]),
    ("page faults", ["exc_page_fault", "asm_exc_page_fault"]),
    ("fork/clone", ["copy_process"]),
    ("process exit, munmap", ["do_exit", "exit_mmap", "__x64_sys_munmap", "do_group_exit"]),
    ("other namespaces (unshare/clone)", ["create_new_namespaces", "ksys_unshare", "unshare_nsproxy_namespaces"]),
    ("files: open/mkdir/unlink/read/write", ["do_sys_openat2", "do_unlinkat", "do_mkdirat", "do_rmdir", "vfs_write",
                                             "vfs_read", "ksys_read", "ksys_write", "do_symlinkat", "do_mknodat",
                                             "__x64_sys_close", "__x64_sys_newfstatat", "__x64_sys_getdents64"]),
    ("sockets, poll, wait", ["__sys_sendto", "__sys_recvfrom", "__sys_sendmsg", "__sys_recvmsg", "do_sys_poll",
                             "kernel_wait4", "do_waitid", "__x64_sys_socketpair", "unix_stream_sendmsg"]),
    ("scheduler, softirq, RCU", ["__schedule", "schedule", "handle_softirqs", "rcu_core", "irq_exit_rcu"]),
]


def blocks(path):
    with open(path, errors="replace") as f:
        text = f.read()
    for b in text.split("\n\n"):
        lines = [l for l in b.split("\n") if l.strip()]
        if lines:
            yield lines


def syms_of(lines):
    out = []
    for l in lines[1:]:
        parts = l.split()
        if len(parts) >= 2:
            out.append(parts[1].split("+")[0])
    return out


def comm_kind(comm):
    if comm in OWN or comm.startswith("legion"):
        return "own"
    if comm.startswith(("kworker", "ksoftirqd", "rcu", "migration", "kthreadd", "kswapd", "kcompactd")):
        return "kthread"
    return "other"


def cpu(path, runs, hz):
    cat = collections.Counter()
    kth = collections.Counter()
    other = 0
    total_own = 0
    for lines in blocks(path):
        comm = lines[0].split()[0]
        kind = comm_kind(comm)
        syms = syms_of(lines)
        if kind == "other":
            other += 1
            continue
        name = None
        for cname, keys in CATEGORIES:
            if any(s in keys for s in syms):
                name = cname
                break
        if name is None:
            in_kernel = any(s.startswith(("entry_SYSCALL", "asm_", "ret_from_fork", "do_syscall_64")) for s in syms)
            name = "other kernel" if in_kernel else "user space (ld.so, libc, legion, init, workload)"
        if kind == "own":
            cat[name] += 1
            total_own += 1
        else:
            # What the kernel threads did, by the first recognisable function.
            key = next((c for c, keys in [("network namespace clean-up", ["cleanup_net"]),
                                          ("cgroup release/free", ["css_killed_work_fn", "css_free_rwork_fn",
                                                                   "css_release_work_fn", "cgroup_free"]),
                                          ("RCU callbacks", ["rcu_do_batch", "rcu_core"]),
                                          ("mount/namespace release", ["cleanup_mnt", "delayed_mntput",
                                                                       "free_nsproxy"])]
                        if any(s in keys for s in syms)), "other kernel-thread work")
            kth[key] += 1
    per = lambda n: n / hz / runs * 1000.0  # noqa: E731 - ms per run
    return {
        "runs": runs, "hz": hz, "own_ms_per_run": per(total_own),
        "categories": [[k, per(v), v / total_own if total_own else 0] for k, v in cat.most_common()],
        "kernel_threads": [[k, per(v)] for k, v in kth.most_common()],
        "other_processes_ms_per_run": per(other),
    }


HDR = re.compile(r"^\s*(\S.*?)\s+(\d+)\s+(?:\[\d+\]\s+)?(\d+\.\d+):\s+sched:sched_switch:\s+prev_comm=(.*) prev_pid=(\d+) "
                 r"prev_prio=\d+ prev_state=(\S+) ==> next_comm=(.*) next_pid=(\d+)")


def offcpu(path, runs):
    pending = {}
    tot = collections.defaultdict(float)
    cnt = collections.Counter()
    skip = ("__schedule", "schedule", "__traceiter_sched_switch", "__probestub_sched_switch",
            "schedule_timeout", "schedule_preempt_disabled", "io_schedule")
    for lines in blocks(path):
        m = HDR.match(lines[0])
        if not m:
            continue
        t = float(m.group(3))
        prev, state, nxt, pcomm = int(m.group(5)), m.group(6), int(m.group(8)), m.group(4)
        if pcomm in ("legion", "legion-init"):
            syms = [s for s in syms_of(lines) if not s.startswith(skip)]
            if state.startswith("R"):
                key = "(preempted, still runnable)"
            else:
                key = " < ".join(syms[:6])
            pending[prev] = (t, pcomm, key)
        if nxt in pending:
            t0, comm, key = pending.pop(nxt)
            tot[(comm, key)] += t - t0
            cnt[(comm, key)] += 1
    rows = sorted(tot.items(), key=lambda kv: -kv[1])
    return {"runs": runs, "stacks": [[c, k, v / runs * 1000.0, cnt[(c, k)]] for (c, k), v in rows[:20]]}


def main():
    mode, path, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "cpu":
        out = cpu(path, runs, float(sys.argv[4]))
    elif mode == "offcpu":
        out = offcpu(path, runs)
    else:
        sys.exit("usage: profile.py cpu|offcpu FILE RUNS [HZ]")
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
