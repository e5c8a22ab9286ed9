"""runc as a peer for the benchmarks that start containers (bench/pods,
bench/apps): bundles whose rootfs is an image's extracted layers, copied
(cp -a) lowest first into one directory, one bundle per command line.
Each bench.py puts bench/lib on sys.path and imports this."""
import json
import os
import shutil
import subprocess
import time


class Runc:
    """bundles: {key: argv}; netns: a network namespace path the containers
    join (default: a new one each, with only lo, as `runc spec` has it);
    env ("K=V" list) and cwd: the process's (default `runc spec`'s)."""

    def __init__(self, out, layer_dirs, bundles, netns=None, env=None, cwd=None):
        self.root = os.path.join(out, "runc-root")
        self.rootfs = os.path.join(out, "runc-rootfs")
        shutil.rmtree(self.rootfs, ignore_errors=True)
        os.makedirs(self.rootfs)
        os.makedirs(self.root, exist_ok=True)
        for d in layer_dirs:  # lowest first
            subprocess.run(["cp", "-a", d + "/.", self.rootfs + "/"], check=True)
        self.bundles = {}
        for key, argv in bundles.items():
            b = os.path.join(out, f"runc-bundle-{key}")
            shutil.rmtree(b, ignore_errors=True)
            os.makedirs(b)
            subprocess.run(["runc", "spec"], cwd=b, check=True)
            cfgp = os.path.join(b, "config.json")
            cfg = json.load(open(cfgp))
            cfg["root"] = {"path": self.rootfs, "readonly": False}
            cfg["process"]["args"] = argv
            cfg["process"]["terminal"] = False
            if env is not None:
                cfg["process"]["env"] = env
            if cwd:
                cfg["process"]["cwd"] = cwd
            if netns:
                for ns in cfg["linux"]["namespaces"]:
                    if ns["type"] == "network":
                        ns["path"] = netns
            json.dump(cfg, open(cfgp, "w"), indent=1)
            self.bundles[key] = b
        self.n = 0

    def _id(self):
        self.n += 1
        return f"lgbench-{os.getpid()}-{self.n}"

    def run_exit(self, key):
        """Seconds of `runc run` of bundle key (its process exits)."""
        cid = self._id()
        t0 = time.perf_counter()
        p = subprocess.run(["runc", "--root", self.root, "run", "--bundle", self.bundles[key], cid],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        dt = time.perf_counter() - t0
        if p.returncode:
            raise RuntimeError(f"runc run: {p.returncode} {p.stderr.decode()[:400]}")
        return dt

    def start(self, key):
        """`runc run -d` of bundle key: (its start time.perf_counter(), the
        container id) once runc returned (the process is running)."""
        cid = self._id()
        # The detached container keeps runc's stdio: a file, not a pipe
        # that would never reach EOF.
        with open(os.path.join(self.root, "run-d.err"), "w+b") as err:
            t0 = time.perf_counter()
            p = subprocess.run(["runc", "--root", self.root, "run", "-d", "--bundle", self.bundles[key], cid],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
            if p.returncode:
                err.seek(0)
                raise RuntimeError(f"runc run -d: {p.returncode} {err.read().decode()[:400]}")
        return t0, cid

    def delete(self, cid):
        subprocess.run(["runc", "--root", self.root, "delete", "-f", cid], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def run_running(self, key):
        """Seconds of `runc run -d` of bundle key; the container is deleted after."""
        t0, cid = self.start(key)
        dt = time.perf_counter() - t0
        self.delete(cid)
        return dt

    def cleanup(self):
        p = subprocess.run(["runc", "--root", self.root, "list", "-q"], capture_output=True, text=True)
        for cid in p.stdout.split():
            subprocess.run(["runc", "--root", self.root, "delete", "-f", cid], capture_output=True)
