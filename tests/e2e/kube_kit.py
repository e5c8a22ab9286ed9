"""kubectl against legiond: which kubectls to run, kubeconfigs, and a runner.

kubectl sends no credentials to a plain-HTTP server (client-go applies a
kubeconfig's user only over TLS), so legiond takes the token in the server
URL instead: http://127.0.0.1:PORT/k8s/<token> (docs/pods.md).
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


def write_kubeconfig(path, port, token, namespace="default"):
    server = f"http://127.0.0.1:{port}/k8s/{token}"
    with open(path, "w") as f:
        f.write(f"""apiVersion: v1
kind: Config
clusters:
- name: legion
  cluster:
    server: "{server}"
users:
- name: legion
  user: {{}}
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
