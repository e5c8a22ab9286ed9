#!/usr/bin/python3
"""Turn the JSON of one benchmark run (bench/out/results) into RESULTS.md and
a summary on stdout. Every figure comes from those files or from the machine
at report time; nothing here is a typed-in result."""
import argparse
import glob
import json
import math
import os
import platform
import re
import subprocess
import sys

LEGION_CONFIGS = ["legion", "legion-limits", "legion-nonet", "legion-hostroot"]
PROFILED = ["legion", "legion-limits"]
PEERS = ["runc", "runc-userns", "bwrap", "bwrap-sharenet"]
ABLATIONS = ["spawn-static-true", "legion-cli-only", "legion-noseccomp", "legion-nonet-noseccomp"]
ORDER = LEGION_CONFIGS + PEERS + ABLATIONS

DESCRIPTION = {
    "legion": "legion, every namespace (user, pid, mount, ipc, uts, cgroup, net); rootfs R as overlay lower; "
              "no limits, so no cgroup",
    "legion-limits": "as `legion` plus `--memory 128M --pids 64`: a cgroup in each v1 hierarchy legion uses "
                     "(memory, cpu, cpuacct, pids, freezer), as a function instance would have",
    "legion-nonet": "legion, every namespace but net (`--net host`); rootfs R",
    "legion-hostroot": "legion, every namespace; host-rootfs mode (tmpfs root + host /usr read-only, host /bin/true)",
    "bwrap": "bwrap --unshare-all (user, pid, mount, ipc, uts, cgroup, net); R bound read-only",
    "bwrap-sharenet": "bwrap --unshare-all --share-net: every namespace but net",
    "runc": "runc run, `runc spec` defaults",
    "runc-userns": "runc run, `runc spec` defaults plus a user namespace (uid/gid map of 65536 ids)",
    "spawn-static-true": "no sandbox: R/bin/true (static busybox) spawned directly, the floor of the method",
    "legion-cli-only": "`legion sandbox --help`: the CLI process alone (exec, dynamic linking, exit)",
    "legion-noseccomp": "legion as in `legion`, with `--no-seccomp`",
    "legion-nonet-noseccomp": "legion as in `legion-nonet`, with `--no-seccomp`",
}


def pct(sorted_vals, p):
    """Nearest rank, as lgbench computes it."""
    k = max(1, math.ceil(p / 100.0 * len(sorted_vals)))
    return sorted_vals[k - 1]


def load_latency(res):
    """{(label, mode): merged stats} from lat-<label>-<mode>-r<k>.json."""
    groups = {}
    for path in sorted(glob.glob(os.path.join(res, "lat-*.json"))):
        m = re.match(r"lat-(.+)-(seq|par)-r(\d+)\.json$", os.path.basename(path))
        if not m:
            continue
        with open(path) as f:
            d = json.load(f)
        g = groups.setdefault((m.group(1), m.group(2)), {"lat": [], "wall": 0.0, "argv": d["argv"],
                                                          "parallel": d["parallel"], "batches": 0})
        g["lat"].extend(v / 1000.0 for v in d["lat_us"])  # ms
        g["wall"] += d["wall_s"]
        g["batches"] += 1
    out = {}
    for key, g in groups.items():
        s = sorted(g["lat"])
        n = len(s)
        mean = sum(s) / n
        out[key] = {
            "runs": n, "batches": g["batches"], "parallel": g["parallel"], "argv": g["argv"],
            "p50": pct(s, 50), "p90": pct(s, 90), "p99": pct(s, 99), "mean": mean,
            "min": s[0], "max": s[-1],
            "stdev": math.sqrt(sum((x - mean) ** 2 for x in s) / (n - 1)) if n > 1 else 0.0,
            "runs_per_s": n / g["wall"] if g["wall"] > 0 else float("nan"),
        }
    return out


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception as e:  # noqa: BLE001 - informational only
        return f"(failed: {e})"


def meminfo_kb(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def machine(build):
    cg = []
    with open("/proc/self/mounts") as f:
        for line in f:
            dev, mnt, fstype, opts = line.split()[:4]
            if fstype in ("cgroup", "cgroup2"):
                ctrl = [o for o in opts.split(",") if o not in ("rw", "ro", "relatime", "nosuid", "nodev", "noexec")]
                cg.append((mnt, fstype, ",".join(ctrl)))
    v1 = [c for c in cg if c[1] == "cgroup"]
    v2 = [c for c in cg if c[1] == "cgroup2"]
    if v1 and v2:
        layout = "hybrid: cgroup v1 controllers plus a cgroup2 mount"
    elif v1:
        layout = "cgroup v1 only"
    else:
        layout = "unified (cgroup v2 only)"
    v2ctl = ""
    for mnt, _, _ in v2:
        p = os.path.join(mnt, "cgroup.controllers")
        if os.path.exists(p):
            v2ctl = open(p).read().strip() or "(none)"
    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-").strip()
    info = {
        "kernel": platform.release() + " " + platform.version(),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_total_mib": meminfo_kb("MemTotal") // 1024,
        "debian": sh("cat /etc/debian_version"),
        "cgroup_layout": layout,
        "cgroup_mounts": cg,
        "cgroup2_controllers": v2ctl,
        "runc": sh("runc --version").replace("\n", "; "),
        "bwrap": sh("bwrap --version"),
        "busybox": sh("busybox 2>&1 | head -1"),
        "cc": sh("cc --version | head -1"),
        "legion_libs": sh(f"ldd {build}/legion | awk '/=>/ {{print $1}}' | paste -sd, -"),
        "git": sh(f"git -C {os.path.dirname(os.path.abspath(__file__))} rev-parse --short HEAD"),
        "git_dirty": bool(sh(f"git -C {os.path.dirname(os.path.abspath(__file__))} status --porcelain --untracked-files=no")),
    }
    try:
        with open(os.path.join(build, "meson-info", "intro-projectinfo.json")) as f:
            info["legion_version"] = json.load(f)["version"]
        with open(os.path.join(build, "meson-info", "intro-buildoptions.json")) as f:
            opts = {o["name"]: o["value"] for o in json.load(f)}
        info["buildtype"] = opts.get("buildtype")
        info["sanitize"] = opts.get("sanitize")
    except (OSError, KeyError, ValueError):
        info["legion_version"] = "?"
    return info


def runc_namespaces(rootfs_dir):
    out = {}
    base = os.path.dirname(rootfs_dir)
    for label, bundle in (("runc", "runc-bundle"), ("runc-userns", "runc-bundle-userns")):
        try:
            with open(os.path.join(base, bundle, "config.json")) as f:
                c = json.load(f)
            out[label] = {
                "namespaces": [n["type"] for n in c["linux"]["namespaces"]],
                "mounts": [m["destination"] for m in c["mounts"]],
                "readonly": c["root"].get("readonly", False),
                "caps": c["process"].get("capabilities", {}).get("bounding", []),
                "seccomp": "seccomp" in c["linux"],
            }
        except (OSError, KeyError, ValueError):
            pass
    return out


def f2(x):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def cmdline(argv):
    return " ".join(argv)


def density_rows(d, n_key="started"):
    n = d.get(n_key) or 0
    if n == 0:
        return None
    b, a, z = d["before"], d["after"], d["after_destroy"]

    def per(key):  # kB added per sandbox (positive = more used)
        if key == "MemAvailable":
            return (b[key] - a[key]) / n
        return (a[key] - b[key]) / n

    def back(key):  # kB still missing after destroy, per sandbox
        if key == "MemAvailable":
            return (b[key] - z[key]) / n
        return (z[key] - b[key]) / n

    return per, back, n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with open(os.path.join(args.results, "meta.json")) as f:
        meta = json.load(f)
    a = argparse.Namespace(results=args.results, out=args.out, build=meta["build"], rootfs=meta["rootfs"],
                           n=meta["n"], rounds=meta["rounds"], warmup=meta["warmup"],
                           elapsed=meta["elapsed_s"], load_start=meta["load_start"],
                           load_end=meta["load_end"], shared_run_dir=meta["shared_run_dir"], date=meta["date"])

    lat = load_latency(a.results)
    m = machine(a.build)
    if "git" in meta:  # as it was when the benchmark ran
        m["git"], m["git_dirty"] = meta["git"], meta["git_dirty"]
    rn = runc_namespaces(a.rootfs)
    # bench/phases batches, one per round: merge every run's figures.
    raw = {}
    for path in sorted(glob.glob(os.path.join(a.results, "phases-*-r*.json"))):
        with open(path) as f:
            d = json.load(f)
        r = raw.setdefault(d["label"], {})
        for step, vals in d["raw_us"].items():
            r.setdefault(step, []).extend(v / 1000.0 for v in vals)
    phases = {}
    for label, steps in raw.items():
        phases[label] = {"n": len(steps.get("total", []))}
        for step, vals in steps.items():
            s = sorted(vals)
            phases[label][step] = {"p50_ms": pct(s, 50), "p90_ms": pct(s, 90), "p99_ms": pct(s, 99),
                                   "mean_ms": sum(s) / len(s)}
    prof = {}
    for label in PROFILED:
        for name in ("cpu", "offcpu", "lat-cpu", "lat-sched"):
            path = os.path.join(a.results, f"profile-{label}-{name}.json")
            if os.path.exists(path):
                with open(path) as f:
                    prof.setdefault(label, {})[name] = json.load(f)
    probes = {}
    for path in sorted(glob.glob(os.path.join(a.results, "memcg-probe-*.json"))):
        with open(path) as f:
            d = json.load(f)
        probes[d["when"]] = d
    dens = {}
    for who in ("legion", "legion-nonet", "bwrap"):
        p = os.path.join(a.results, f"density-{who}.json")
        if os.path.exists(p):
            try:
                with open(p) as f:
                    dens[who] = json.load(f)
            except ValueError as e:
                dens[who] = {"error": f"unreadable output: {e}", "started": 0}

    def get(label, mode, key):
        s = lat.get((label, mode))
        return s[key] if s else None

    def ratio(peer, legion, mode):
        x, y = get(peer, mode, "p50"), get(legion, mode, "p50")
        return x / y if x and y else None

    # ---- goals -------------------------------------------------------------
    goals = []
    for label, what in (("legion-nonet", "p50 create-to-exit <= 5 ms, every namespace but net"),
                        ("legion", "p50 create-to-exit <= 5 ms, every namespace incl. net")):
        v = get(label, "seq", "p50")
        goals.append((what, f"{f2(v)} ms sequential, {f2(get(label, 'par', 'p50'))} ms with 2 in parallel",
                      v is not None and v <= 5.0 and (get(label, "par", "p50") or 99) <= 5.0))
    for peer, legion, need, what in (
            ("runc", "legion", 5.0, "at least 5x faster than runc (p50, runc / legion, both with a net namespace)"),
            ("runc", "legion-limits", 5.0, "the same against legion with limits (cgroups, as runc always makes)"),
            ("bwrap", "legion", 1.0, "faster than bwrap (p50, bwrap --unshare-all / legion, both every namespace)"),
            ("bwrap-sharenet", "legion-nonet", 1.0, "faster than bwrap without net (bwrap --share-net / legion --net host)")):
        rs, rp = ratio(peer, legion, "seq"), ratio(peer, legion, "par")
        ok = rs is not None and rp is not None and (rs >= need if need > 1 else rs > need) and \
            (rp >= need if need > 1 else rp > need)
        goals.append((what, f"{f2(rs)}x sequential, {f2(rp)}x parallel", ok))
    dl = dens.get("legion")
    if dl and dl.get("started"):
        per, _, n = density_rows(dl)
        ok = dl.get("error") is None and n >= 2000 and per("MemAvailable") <= 1024
        goals.append(("2,000 idle sandboxes at <= 1 MiB each (MemAvailable delta)",
                      f"{n} started, {per('MemAvailable'):.0f} KiB each"
                      + (f"; error: {dl['error']}" if dl.get("error") else ""), ok))
    elif dl:
        goals.append(("2,000 idle sandboxes at <= 1 MiB each", f"failed: {dl.get('error')}", False))

    L = []
    w = L.append
    now = a.date
    w("# Sandbox benchmark results")
    w("")
    w(f"Generated by `make bench` (bench/run.sh, bench/report.py) on {now}; "
      f"the whole run took {a.elapsed} s. Every figure below is read from that run's "
      f"measurements in `bench/out/results/`; rerun `make bench` to regenerate this file.")
    w("")
    w("## Goals")
    w("")
    w("| goal | measured | met |")
    w("|---|---|---|")
    for what, val, ok in goals:
        w(f"| {what} | {val} | {'yes' if ok else '**no**'} |")
    w("")
    w("## Machine")
    w("")
    w(f"- kernel: `{m['kernel']}`")
    w(f"- CPU: {m['cpu']}, nproc = {m['nproc']}; memory: {m['mem_total_mib']} MiB; Debian {m['debian']}")
    w(f"- load average (1, 5, 15 min) at the start: {a.load_start}; at the end: {a.load_end} (anything "
      "else running on the machine competes with the benchmark for its CPUs; the thousands of density "
      "sandboxes and processes starting at once raise it themselves)")
    w(f"- cgroups: {m['cgroup_layout']}; cgroup2 controllers enabled: {m['cgroup2_controllers'] or '(none)'}")
    w("  - " + "; ".join(f"`{mnt}` {t} {c}" for mnt, t, c in m["cgroup_mounts"]))
    w("")
    w("## Tools")
    w("")
    w(f"- legion {m.get('legion_version')} at git {m['git']}{' (with uncommitted changes)' if m['git_dirty'] else ''}, "
      f"meson buildtype `{m.get('buildtype')}`, sanitize = {m.get('sanitize')}; {m['cc']}; "
      f"`legion` links {m.get('legion_libs') or '(none)'} (`ldd`, besides the loader and vDSO)")
    w(f"- runc: {m['runc']}")
    w(f"- bubblewrap: {m['bwrap']}")
    w(f"- rootfs R: {m['busybox']} (static), `/bin/true`, `/bin/sh` → busybox; empty /proc /dev /tmp /etc /sys; 0755")
    w("")
    w("## Method")
    w("")
    w("- Each run is one whole command, started with `posix_spawn` and reaped with `waitpid` by "
      "`bench/lgbench`, timed with CLOCK_MONOTONIC: CLI start-up, sandbox creation, the workload "
      "(`/bin/true`), teardown and exit all count. Every run must exit 0 (lgbench aborts and shows the "
      "output otherwise); stdout/stderr go to a memfd.")
    w(f"- {a.n} timed runs per configuration sequentially, and {a.n} in each of 2 parallel workers "
      f"({2 * a.n} runs, runs/s = all runs / wall time). The runs are split into {a.rounds} rounds; each "
      f"round runs every configuration in turn, so drift hits all alike. {a.warmup} untimed warm-up runs "
      f"precede each batch. Percentiles are nearest-rank over all runs of a configuration.")
    w("- legion runs with `LEGION_CGROUP_PARENT=legion-bench`, `LEGION_RUN_DIR=bench/out/run` and "
      "`LEGION_UID_DIR=bench/out/uids`; each "
      "run also does the CLI's `gc` scan of that directory, takes a uid range, loads the seccomp filter "
      "and runs legion-init as PID 1, which forks the workload. A sandbox gets cgroups only when it has "
      "a limit: `legion-limits` is the one that does, like every runc container and every density "
      "placeholder below.")
    if a.shared_run_dir != "1":
        w("- In the parallel runs each legion worker has its own `LEGION_RUN_DIR` (`bench/out/run-w0`, "
          "`-w1`), so that neither worker's `gc` scan walks the other's sandboxes. "
          "`BENCH_SHARED_RUN_DIR=1` shares one.")
    w("- runc: `runc spec` with root = R (read-only), args `/bin/true`, terminal false; a unique "
      "container id per run (`%ID%` below); no cgroupsPath, so runc makes `/<id>` in each hierarchy.")
    for label, c in rn.items():
        w(f"  - {label}: namespaces {', '.join(c['namespaces'])}; mounts {', '.join(c['mounts'])}; "
          f"read-only root {c['readonly']}; bounding caps {', '.join(c['caps'])}; seccomp "
          f"{'yes' if c['seccomp'] else 'none'}")
    w("- bwrap as root with `--unshare-all` makes a user namespace (root mapped to host root, 1 id), "
      "pid, mount, ipc, uts, cgroup and net namespaces; no cgroup (resource limits) and no seccomp.")
    w("")
    w("| configuration | what | command |")
    w("|---|---|---|")
    for label in ORDER:
        s = lat.get((label, "seq"))
        if s:
            w(f"| {label} | {DESCRIPTION.get(label, '')} | `{cmdline(s['argv'])}` |")
    w("")
    w("## Latency, create to exit")
    w("")
    for mode, title in (("seq", "Sequential"), ("par", "2 parallel workers")):
        w(f"### {title}")
        w("")
        w("| configuration | runs | p50 ms | p90 ms | p99 ms | mean ms | min ms | max ms | runs/s |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for label in LEGION_CONFIGS + PEERS:
            s = lat.get((label, mode))
            if s:
                w(f"| {label} | {s['runs']} | {f2(s['p50'])} | {f2(s['p90'])} | {f2(s['p99'])} | "
                  f"{f2(s['mean'])} | {f2(s['min'])} | {f2(s['max'])} | {s['runs_per_s']:.1f} |")
        w("")
    w("### Ratios (peer p50 / legion p50; above 1 = legion faster)")
    w("")
    w("| peer | " + " | ".join(f"{l} seq | {l} par" for l in LEGION_CONFIGS) + " |")
    w("|---|" + "---:|" * (2 * len(LEGION_CONFIGS)))
    for peer in PEERS:
        w(f"| {peer} | " + " | ".join(f"{f2(ratio(peer, l, 'seq'))} | {f2(ratio(peer, l, 'par'))}"
                                      for l in LEGION_CONFIGS) + " |")
    w("")
    w("### Where legion's time goes (sequential, same rounds)")
    w("")
    w("| configuration | what | p50 ms | mean ms | p50 vs `legion` |")
    w("|---|---|---:|---:|---:|")
    base = get("legion", "seq", "p50")
    for label in ["legion", "legion-limits", "legion-nonet"] + ABLATIONS:
        s = lat.get((label, "seq"))
        if s:
            d = s["p50"] - base if base else None
            w(f"| {label} | {DESCRIPTION.get(label, '')} | {f2(s['p50'])} | {f2(s['mean'])} | "
              f"{'' if d is None else f'{d:+.2f}'} |")
    w("")

    def d50(x, y):
        vx, vy = get(x, "seq", "p50"), get(y, "seq", "p50")
        return vx - vy if vx is not None and vy is not None else None

    lib = phases.get("legion", {}).get("total", {}).get("p50_ms")
    parts = [
        ("network namespace (create, lo up, deferred clean-up)", "`legion` − `legion-nonet`", d50("legion", "legion-nonet")),
        ("seccomp (load; filtered syscalls after)", "`legion` − `legion-noseccomp`", d50("legion", "legion-noseccomp")),
        ("cgroups (mkdir, limits, attach, rmdir in each v1 hierarchy)", "`legion-limits` − `legion`",
         d50("legion-limits", "legion")),
        ("the CLI process beyond a static exec (ld.so, libc, argument parsing)", "`legion-cli-only` − `spawn-static-true`",
         d50("legion-cli-only", "spawn-static-true")),
        ("sandbox create + start + wait + destroy in the library", "`bench/phases` total p50, `legion`", lib),
        ("the rest of the CLI (gc scan, signal set-up, the run itself beyond the library)",
         "`legion` − phases total − `legion-cli-only`",
         (get("legion", "seq", "p50") - lib - get("legion-cli-only", "seq", "p50"))
         if lib is not None and get("legion", "seq", "p50") is not None and get("legion-cli-only", "seq", "p50") is not None
         else None),
        ("bwrap's network namespace, for comparison", "`bwrap` − `bwrap-sharenet`", d50("bwrap", "bwrap-sharenet")),
    ]
    w("Differences of sequential p50s (approximate: medians do not add exactly):")
    w("")
    w("| part | from | ms |")
    w("|---|---|---:|")
    for what, how, v in parts:
        w(f"| {what} | {how} | {f2(v)} |")
    w("")
    if phases:
        w("### The same run through the library, step by step (`bench/phases`)")
        w("")
        w("What `legion sandbox run` does after its own process start, timed per library call over "
          f"{a.n} runs each (in the same rounds as the rest): create = state, uid range, cgroups, user namespace, clone, rootfs, "
          "namespaces, seccomp, up to ready; start = until legion-init is executed; wait = legion-init "
          "forks and execs `/bin/true`, it exits, legion-init reports and exits; destroy = cgroups and "
          "state removed.")
        w("")
        w("| configuration | create p50 | start p50 | wait p50 | destroy p50 | total p50 | total mean | total p99 |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|")
        for label in ("legion", "legion-limits", "legion-nonet", "legion-noseccomp", "legion-hostroot"):
            d = phases.get(label)
            if d:
                w(f"| {label} | " + " | ".join(f2(d[k]["p50_ms"]) for k in ("create", "start", "wait", "destroy", "total"))
                  + f" | {f2(d['total']['mean_ms'])} | {f2(d['total']['p99_ms'])} |")
        w("")
        w("All in ms (`legion-limits` here: `--limits`, memory 128M and pids 64). The CLI's own process "
          "start and exit come on top (`legion-cli-only` above).")
        w("")

    cpu_labels = [l for l in PROFILED if "cpu" in prof.get(l, {})]
    if cpu_labels:
        c0 = prof[cpu_labels[0]]["cpu"]
        w(f"### Where a legion run spends CPU (perf, {c0['runs']} runs each)")
        w("")
        w(f"`perf record -e cpu-clock -F {c0['hz']:.0f} -a -g` around `lgbench` running the configuration "
          "(p50 under perf: " + ", ".join(f"{l} {f2(prof[l].get('lat-cpu', {}).get('p50_ms'))} ms" for l in cpu_labels)
          + "). Samples of lgbench, legion, legion-init and the workload, each put in the first category "
          "whose kernel function is on its call chain (`bench/profile.py`); CPU ms per run.")
        w("")
        w("| category | " + " | ".join(f"{l} ms/run" for l in cpu_labels) + " |")
        w("|---|" + "---:|" * len(cpu_labels))
        names = []
        for l in cpu_labels:
            for name, _, _ in prof[l]["cpu"]["categories"]:
                if name not in names:
                    names.append(name)
        for name in names:
            vals = []
            for l in cpu_labels:
                d = {n: ms for n, ms, _ in prof[l]["cpu"]["categories"]}
                vals.append(f"{d[name]:.3f}" if name in d else "")
            w(f"| {name} | " + " | ".join(vals) + " |")
        w("| **total, the benchmark's own processes** | "
          + " | ".join(f"**{prof[l]['cpu']['own_ms_per_run']:.3f}**" for l in cpu_labels) + " |")
        w("")
        for l in cpu_labels:
            c = prof[l]["cpu"]
            if c["kernel_threads"]:
                w(f"Kernel threads meanwhile, {l} (deferred work: ours, but anything else's too): "
                  + "; ".join(f"{k} {v:.3f} ms/run" for k, v in c["kernel_threads"])
                  + f". Other processes on the machine: {c['other_processes_ms_per_run']:.3f} ms per run.")
                w("")
    for l in PROFILED:
        o = prof.get(l, {}).get("offcpu")
        if not o:
            continue
        w(f"### Where a `{l}` run waits (perf sched_switch, {o['runs']} runs)")
        w("")
        w("Time from a legion or legion-init process leaving the CPU to running again, summed per kernel "
          "stack (innermost first); waits on the sync socket and on children are the other side working.")
        w("")
        w("| process | blocked in | ms per run | times |")
        w("|---|---|---:|---:|")
        for comm, stack, ms, n in o["stacks"][:10]:
            w(f"| {comm} | `{stack}` | {ms:.3f} | {n} |")
        w("")

    w("## Density: idle sandboxes")
    w("")
    if not dens:
        w("Not measured (DENSITY_N=0).")
    for who, d in dens.items():
        if who.startswith("legion"):
            nonet = who == "legion-nonet"
            w(f"### {who}: {d.get('requested')} placeholders via the library"
              + (" without a network namespace" if nonet else ""))
            w("")
            w(f"`bench/density {'-H ' if nonet else ''}legion R`: `lg_sandbox_create` + `lg_sandbox_start` "
              "with no argv (legion-init idles), rootfs R as the layer, "
              + ("the host's network (`share_net`, as `--net host`)" if nonet else "own network namespace (the default)")
              + ", memory limit 128M, pids 64, one after another; held by "
              f"{d.get('owners')} owner process(es) with RLIMIT_NOFILE {d.get('owner_nofile')} "
              "(the hard limit here; raising it needs CAP_SYS_RESOURCE, which this machine's root lacks), "
              "which start their shares in turn.")
        else:
            w(f"### bwrap: {d.get('requested')} idle sandboxes (peer)")
            w("")
            w(f"`bench/density -c sleep cmd -- {cmdline(d.get('argv', []))}`: each in its own "
              "process group; started = all the `sleep` processes exist.")
        w("")
        if d.get("error"):
            w(f"**Failure:** {d['error']}")
            w("")
        rows = density_rows(d)
        if not rows:
            continue
        per, back, n = rows
        w(f"- started {n} in {d['start_wall_s']:.2f} s ({d['start_per_s']:.1f}/s)"
          + (f"; per start p50 {d['start_p50_ms']:.2f} ms, p99 {d['start_p99_ms']:.2f} ms, max "
             f"{d['start_max_ms']:.2f} ms" if who == "legion" and "start_p50_ms" in d else "")
          + f"; destroyed in {d['destroy_wall_s']:.2f} s ({d['destroy_per_s']:.1f}/s)"
          + (f", {d['destroy_errors']} destroy errors" if d.get("destroy_errors") else ""))
        w(f"- processes per sandbox: {d['processes'] / n:.2f}; summed Pss {d['pss_kb'] / n:.0f} KiB "
          f"and Rss {d['rss_kb'] / n:.0f} KiB per sandbox")
        if who.startswith("legion"):
            w(f"- the owners hold {d['owner_fds_added'] / n:.1f} fds and {d['owner_rss_added_kb'] / n:.1f} KiB "
              "of RSS per sandbox")
            if d.get("cgroup_usage_bytes", -1) >= 0:
                w(f"- memory cgroup `legion-bench` charged {d['cgroup_usage_bytes'] / 1024 / n:.0f} KiB per "
                  f"sandbox (of which kmem {d['cgroup_kmem_bytes'] / 1024 / n:.0f} KiB)")
            w(f"- left after destroy: {d['leftover_cgroups']} cgroups, {d['leftover_sandboxes']} state "
              f"directories, {d['leftover_uid_slots']} uid slots")
        if d.get("slab_growth_bytes"):
            w("- biggest slab growth per sandbox: " + ", ".join(
                f"{name} {v / 1024 / n:.1f} KiB" for name, v in d["slab_growth_bytes"][:8]))
        w("")
        w("| /proc/meminfo | added per sandbox, KiB | still missing after destroy + settle, KiB |")
        w("|---|---:|---:|")
        for key in ("MemAvailable", "Slab", "SReclaimable", "SUnreclaim", "Percpu", "PageTables",
                    "KernelStack", "Shmem", "AnonPages", "VmallocUsed"):
            w(f"| {key} | {per(key):.1f} | {back(key):.1f} |")
        w("")
    if probes:
        w("### Memory cgroups and shrinkers")
        w("")
        w("A new memory cgroup costs one kmalloc-1k object per 64 memcg-aware shrinker ids for its "
          "shrinker map (mm/shrinker.c, `shrinker_info_unit`); every superblock registers such a shrinker "
          "and a legion sandbox mounts several (scratch tmpfs, overlay, /dev tmpfs, devpts, /dev/shm "
          "tmpfs, proc). The map is sized by the highest id handed out since boot, so the per-sandbox "
          "cost grows with the number of sandboxes (quadratic in total) and stays at the high-water mark "
          "until reboot. Measured by making 200 empty memory cgroups:")
        w("")
        for when, d in sorted(probes.items(), key=lambda kv: kv[0] != "before"):
            w(f"- {when}: {d['kmalloc_1k_bytes_per_group'] / 1024:.1f} KiB of kmalloc-1k per new memory cgroup")
        w("")
    if "legion" in dens and "bwrap" in dens and density_rows(dens["legion"]) and density_rows(dens["bwrap"]):
        pl = density_rows(dens["legion"])[0]("MemAvailable")
        pb = density_rows(dens["bwrap"])[0]("MemAvailable")
        w(f"MemAvailable per sandbox, legion / bwrap: {pl:.0f} / {pb:.0f} KiB = {pl / pb:.2f}." if pb else "")
        w("")
    w("## Notes on the comparison")
    w("")
    w("- The three do different amounts of work per run. bwrap makes namespaces, binds R read-only, "
      "mounts /proc and a /dev, and runs the command under a small PID 1; no cgroup, no seccomp, no "
      "writable layer. runc (a Go binary that re-executes itself as `runc init`) makes a cgroup in "
      "each of the host's v1 hierarchies and the cgroup2 mount, the default OCI mounts (/proc, /dev, "
      "/dev/pts, /dev/shm, /dev/mqueue, /sys, /sys/fs/cgroup) and drops capabilities; no seccomp in "
      "`runc spec`'s default. legion makes a user namespace with a 65536-id range, a cgroup in 5 v1 "
      "hierarchies only when limits are set (`legion-limits`), an overlay with a tmpfs upper over an idmapped R, /proc with masked "
      "paths, a /dev tmpfs with devpts and /dev/shm, drops every capability, loads a seccomp filter, "
      "and runs legion-init as PID 1, which forks the workload and reports its exit over a socket.")
    rcu = [(c, st, ms, n) for l in PROFILED for c, st, ms, n in prof.get(l, {}).get("offcpu", {}).get("stacks", [])
           if "rcu_sync_enter" in st]
    seen = ("; in this run's profile: " + ", ".join(f"{n} of {prof[l]['offcpu']['runs']} runs waited there, "
                                                     f"{ms:.3f} ms per run on average"
                                                     for l in PROFILED
                                                     for c, st, ms, n in prof.get(l, {}).get("offcpu", {}).get("stacks", [])
                                                     if "rcu_sync_enter" in st)) if rcu else \
        "; it did not occur in this run's profile"
    w("- On cgroup v1 a process can only be moved into a cgroup by writing `cgroup.procs` (there is "
      "no `CLONE_INTO_CGROUP`), which takes the cgroup threadgroup rwsem for writing; when that "
      "rwsem's fast path is active the writer waits for a normal RCU grace period (`rcu_sync_enter`, "
      "milliseconds): a rare long wait that shows in the tail of `legion-limits` (runc pays the same)"
      + seen + ". Sandboxes without limits skip cgroups altogether; on cgroup v2 legion clones straight "
      "into the cgroup instead.")
    w("- Network namespaces are torn down asynchronously by a kernel worker (`cleanup_net`), so part "
      "of their cost lands on whatever runs next on the CPU; with 2 CPUs and 2 parallel workers it "
      "shows in the parallel figures of every configuration that makes one.")
    w("")
    w("MemAvailable is the kernel's estimate of what can still be allocated; its drop covers user "
      "memory, page tables, kernel stacks, slab (counting reclaimable slab as partly available), percpu "
      "allocations and tmpfs. It is system-wide, so anything else on the machine in those seconds shows "
      "up too; the runs are long enough (thousands of sandboxes) for that to average out.")
    w("")

    with open(a.out, "w") as f:
        f.write("\n".join(L).rstrip() + "\n")

    # ---- summary on stdout -------------------------------------------------
    print("\n=== latency, create to exit (ms) ===")
    print(f"{'configuration':24} {'mode':4} {'runs':>5} {'p50':>7} {'p99':>7} {'mean':>7} {'runs/s':>8}")
    for label in ORDER:
        for mode in ("seq", "par"):
            s = lat.get((label, mode))
            if s:
                print(f"{label:24} {mode:4} {s['runs']:5} {s['p50']:7.2f} {s['p99']:7.2f} {s['mean']:7.2f} "
                      f"{s['runs_per_s']:8.1f}")
    print("\n=== ratios, p50 peer / legion (seq, par) ===")
    for peer in PEERS:
        print(f"{peer:16} " + "  ".join(f"{l}: {f2(ratio(peer, l, 'seq'))} {f2(ratio(peer, l, 'par'))}"
                                         for l in LEGION_CONFIGS))
    for who, d in dens.items():
        rows = density_rows(d)
        print(f"\n=== density: {who} ===")
        if d.get("error"):
            print(f"error: {d['error']}")
        if rows:
            per, _, n = rows
            print(f"{n} started in {d['start_wall_s']:.2f} s, destroyed in {d['destroy_wall_s']:.2f} s; per "
                  f"sandbox: MemAvailable {per('MemAvailable'):.0f} KiB, Slab {per('Slab'):.0f} KiB, "
                  f"Percpu {per('Percpu'):.0f} KiB, Pss {d['pss_kb'] / n:.0f} KiB")
    print("\n=== goals ===")
    for what, val, ok in goals:
        print(f"[{'met' if ok else 'NOT met'}] {what}: {val}")
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
