"""kubectl against legiond: which kubectls to run, kubeconfigs, and a runner.

kubectl sends a kubeconfig's token only over TLS (client-go applies the user's
credentials only then), so kubeconfigs point at legiond's HTTPS listener
(`--listen-tls`, the harness's tls_port) and trust legiond's CA
(<home>/tls/ca.crt), as `legion kubeconfig` does (docs/pods.md).
"""
import os
import shutil
import subprocess

KUBECTL_120 = "/opt/kubectl-1.20/usr/bin/kubectl"


def kubectls():
    """The kubectl binaries to test with: $KUBECTL, kubectl on PATH (1.32 on
    our hosts) and Debian's 1.20; each once."""
    found, seen = [], set()
    for c in (os.environ.get("KUBECTL"), shutil.which("kubectl"), KUBECTL_120):
        if c and os.path.exists(c) and os.path.realpath(c) not in seen:
            seen.add(os.path.realpath(c))
            found.append(c)
    return found


def kubectl_id(path):
    try:
        out = subprocess.run([path, "version", "--client", "-o", "json"], capture_output=True, text=True,
                             timeout=30).stdout
        import json
        v = json.loads(out)["clientVersion"]
        return f"kubectl-{v['major']}.{v['minor'].rstrip('+')}"
    except Exception:
        return os.path.basename(path)


def write_kubeconfig(path, legiond, token, namespace="default"):
    """A kubeconfig for `legiond` (a test_legiond.Legiond, or the plain port of
    one) with `token` and the context's namespace."""
    if isinstance(legiond, int):
        from test_legiond import Legiond
        legiond = Legiond.by_port[legiond]
    server = f"https://127.0.0.1:{legiond.tls_port}"
    with open(path, "w") as f:
        f.write(f"""apiVersion: v1
kind: Config
clusters:
- name: legion
  cluster:
    server: "{server}"
    certificate-authority: "{legiond.ca_file}"
users:
- name: legion
  user:
    token: "{token}"
contexts:
- name: legion
  context:
    cluster: legion
    user: legion
    namespace: {namespace}
current-context: legion
""")
    return path


class Kubectl:
    """Runs one kubectl binary with a kubeconfig."""

    def __init__(self, binary, kubeconfig):
        self.binary, self.kubeconfig = binary, kubeconfig

    def env(self, kubeconfig=None):
        return dict(os.environ, KUBECONFIG=kubeconfig or self.kubeconfig, HOME=os.path.dirname(self.kubeconfig))

    def __call__(self, *args, check=0, input=None, timeout=60, kubeconfig=None):
        p = subprocess.run([self.binary, *args], capture_output=True, text=True, input=input, timeout=timeout,
                           env=self.env(kubeconfig))
        if check is not None:
            assert p.returncode == check, (args, p.returncode, p.stdout, p.stderr)
        return p

    def popen(self, *args, kubeconfig=None):
        return subprocess.Popen([self.binary, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env(kubeconfig))
