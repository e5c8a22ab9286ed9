"""Test kit for the sandbox network: a fake outside world made of network
namespaces on this host, so that the NAT path of legiond's sandboxes has
somewhere to go and nothing leaves the machine.

    upstream  netns  198.51.100.1 (HTTP on 80 and 8080), 198.51.100.53 (DNS)
              veth   host 198.51.100.249/30 <-> .250/30; host route
                     198.51.100.0/24 via .250 (the default way out)
    vnet      netns  a second uplink for VNET injection: veth host
                     203.0.113.1/24 <-> 203.0.113.2/24, and 198.51.100.1 on
                     its loopback too (the same service address answering
                     "vnet"): a namespace whose egress goes `via` this link
                     reaches it, everyone else reaches the upstream
    metadata  netns  169.254.169.254:80, host route to it via 198.51.100.254
                     (veth .253/30 <-> .254/30): the host reaches
                     it, sandboxes must not
    host      127.0.0.1 and 0.0.0.0 HTTP servers in this process

Every HTTP server answers JSON {"server": NAME, "client": SOURCE ADDRESS,
"port": PORT, "path": PATH}: the client address is what the far end saw, so
tests read NAT off it. The DNS server answers A records for NAMES and
NXDOMAIN for anything else.

The addresses are fixed (documentation ranges), so two runs cannot share the
host: the fixture holds an exclusive lock for as long as the world exists,
and anything a killed earlier run left is removed when the lock is taken.
Run as a script (`net_kit.py serve ...`) it is the server process started
inside a namespace with `ip netns exec`.
"""
import fcntl
import json
import os
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

UPSTREAM = "198.51.100.1"
UPSTREAM_NET = "198.51.100.0/24"
DNS = "198.51.100.53"
# The links' own addresses are in the upstream's range too: 192.0.2.0/24 is
# taken on our CI hosts (their real uplink).
UP_HOST, UP_PEER = "198.51.100.249", "198.51.100.250"
MD_HOST, MD_PEER = "198.51.100.253", "198.51.100.254"
VNET_HOST, VNET_PEER = "203.0.113.1", "203.0.113.2"
METADATA = "169.254.169.254"
NAMES = {"api.example.test": UPSTREAM, "vnet.example.test": VNET_PEER}

LOCK = "/run/lock/legion-e2e-net.lock"
NETNS_PREFIX = "lgt-"    # ip netns names
LINK_PREFIX = "lgt"      # host ends: lgtu<suffix>, lgtv<suffix>, lgtm<suffix>

def sh(*args, check=True):
    p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: exit {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def ipj(*args):
    """`ip -j ARGS` parsed ([] for an empty answer)."""
    out = sh("ip", "-j", *args)
    return json.loads(out) if out.strip() else []


def free_port_any():
    """A TCP port free on every address (oci_kit.free_port's is free on
    127.0.0.1 only, and may be some connection's on another address)."""
    s = socket.socket()
    try:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]
    finally:
        s.close()


# ---- the servers (in a namespace, or in this process) -----------------------

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        body = json.dumps({"server": self.server.name, "client": self.client_address[0],
                           "port": self.server.server_address[1], "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(ThreadingHTTPServer):
    def server_bind(self):
        # Not HTTPServer's: its getfqdn() of the address waits for the
        # host's resolver, unreachable from the kit's namespaces (10 s each).
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def http_server(name, host, port):
    srv = Server((host, port), Handler)
    srv.daemon_threads = True
    srv.name = name
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def dns_answer(query, names):
    """The reply to one DNS query (bytes), None for garbage. A records from
    names; NXDOMAIN for other names; NOTIMP for anything but one question."""
    if len(query) < 12:
        return None
    qid, flags, qd, an, ns, ar = struct.unpack("!6H", query[:12])
    if flags & 0x8000:  # a response: not ours to answer
        return None
    labels, i = [], 12
    while i < len(query):
        n = query[i]
        if n == 0 or n & 0xC0:
            break
        labels.append(query[i + 1:i + 1 + n].decode("ascii", "replace").lower())
        i += 1 + n
    if qd != 1 or i + 5 > len(query) or query[i] != 0:
        return struct.pack("!6H", qid, 0x8004 | (flags & 0x0100), 0, 0, 0, 0)  # NOTIMP
    question = query[12:i + 5]
    qtype = struct.unpack("!H", query[i + 1:i + 3])[0]
    name = ".".join(labels)
    rd = flags & 0x0100
    if name not in names:
        return struct.pack("!6H", qid, 0x8483 | rd, 1, 0, 0, 0) + question  # NXDOMAIN, authoritative
    answers = b""
    if qtype in (1, 255):  # A, ANY
        answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 30, 4) + socket.inet_aton(names[name])
    return struct.pack("!6H", qid, 0x8480 | rd, 1, 1 if answers else 0, 0, 0) + question + answers


def dns_server(host, port, names):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, port))

    def loop():
        while True:
            data, peer = s.recvfrom(4096)
            reply = dns_answer(data, names)
            if reply:
                s.sendto(reply, peer)

    threading.Thread(target=loop, daemon=True).start()
    return s


def dns_query(server, name, port=53, timeout=2):
    """Ask server for name's A records: the list of addresses (the host's
    calibration of what the sandboxes' resolver should say)."""
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    q = struct.pack("!6H", 0x4c4c, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(q, (server, port))
        r = s.recv(4096)
    finally:
        s.close()
    an = struct.unpack("!H", r[6:8])[0]
    out, i = [], 12 + len(qname) + 4
    for _ in range(an):
        i += 2  # a pointer to the name
        rtype, _, _, rdlen = struct.unpack("!HHIH", r[i:i + 10])
        i += 10
        if rtype == 1:
            out.append(socket.inet_ntoa(r[i:i + 4]))
        i += rdlen
    return out


def serve_main(argv):
    """net_kit.py serve NAME [--http HOST:PORT]... [--dns HOST:PORT]: runs
    until killed; prints `ready` once every socket is bound."""
    name, i = argv[0], 1
    while i < len(argv):
        host, port = argv[i + 1].rsplit(":", 1)
        if argv[i] == "--http":
            http_server(name, host, int(port))
        elif argv[i] == "--dns":
            dns_server(host, int(port), NAMES)
        i += 2
    print("ready", flush=True)
    signal.sigwait([signal.SIGTERM, signal.SIGINT])


# ---- the world ----------------------------------------------------------------

def get(url, timeout=5):
    """GET url from this host: the JSON answer of a kit server, or
    {"status": N, "body": ...} for other servers."""
    with urllib.request.urlopen(url, timeout=timeout) as r:
        body = r.read().decode()
    try:
        return json.loads(body)
    except ValueError:
        return {"status": r.status, "body": body}


def _leftovers():
    """Namespaces and host links of this kit (any run)."""
    ns = [n.split()[0] for n in sh("ip", "netns", "list").splitlines() if n.startswith(NETNS_PREFIX)]
    links = [l["ifname"] for l in ipj("link", "show") if l["ifname"].startswith(LINK_PREFIX)]
    return ns, links


class World:
    """The fake outside world; up() builds it, down() removes all of it (also
    what up() left half-made)."""

    def __init__(self):
        self.suffix = "%04x" % (os.getpid() & 0xFFFF)
        self.ns = {k: f"{NETNS_PREFIX}{k}-{self.suffix}" for k in ("up", "vnet", "md")}
        self.link = {"up": f"{LINK_PREFIX}u{self.suffix}", "vnet": f"{LINK_PREFIX}v{self.suffix}",
                     "md": f"{LINK_PREFIX}m{self.suffix}"}
        self.procs = []
        self.host_servers = []
        self.lock_fd = None

    @property
    def vnet_if(self):
        """The host end of the second uplink (a namespace's via.interface)."""
        return self.link["vnet"]

    def _clean(self):
        ns, links = _leftovers()
        for n in ns:
            sh("ip", "netns", "del", n, check=False)
        for l in links:
            sh("ip", "link", "del", l, check=False)

    def _check_free(self):
        """The kit's ranges are on no link of this host yet (they would be
        hijacked, or would hijack the host's own routes)."""
        import ipaddress
        mine = [ipaddress.ip_network(n) for n in (UPSTREAM_NET, "203.0.113.0/24", f"{METADATA}/32")]
        for link in ipj("-4", "addr", "show"):
            for a in link.get("addr_info", []):
                net = ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False)
                if any(net.overlaps(m) for m in mine):
                    raise AssertionError(f"this host already has {a['local']}/{a['prefixlen']} on {link['ifname']}: "
                                         "net_kit's addresses would clash with it")

    def _netns(self, key, host_addr, peer_addr, prefix_len, local_addrs):
        ns, link = self.ns[key], self.link[key]
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "addr", "add", f"{host_addr}/{prefix_len}", "dev", link)
        sh("ip", "link", "set", link, "up")
        x = ("ip", "-n", ns)
        sh(*x, "link", "set", "lo", "up")
        sh(*x, "addr", "add", f"{peer_addr}/{prefix_len}", "dev", "eth0")
        sh(*x, "link", "set", "eth0", "up")
        for a in local_addrs:
            sh(*x, "addr", "add", f"{a}/32", "dev", "lo")
        # Answers go back through the host whatever their destination (an
        # un-NATed sandbox address shows up as the client, not as a timeout).
        sh(*x, "route", "add", "default", "via", host_addr)

    def _serve(self, key, name, *args):
        kit = os.path.abspath(__file__)
        p = subprocess.Popen(["ip", "netns", "exec", self.ns[key], sys.executable, kit, "serve", name, *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        line = p.stdout.readline()
        if line.strip() != "ready":
            raise AssertionError(f"the {name} server did not start: {line}{p.stderr.read()}")

    def up(self):
        os.makedirs(os.path.dirname(LOCK), exist_ok=True)
        self.lock_fd = os.open(LOCK, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX)  # another run's world: wait for it to go
        self._clean()  # what a killed run left
        self._check_free()
        self._netns("up", UP_HOST, UP_PEER, 30, [UPSTREAM, DNS])
        sh("ip", "route", "add", UPSTREAM_NET, "via", UP_PEER, "dev", self.link["up"])
        self._netns("vnet", VNET_HOST, VNET_PEER, 24, [UPSTREAM])
        self._netns("md", MD_HOST, MD_PEER, 30, [METADATA])
        sh("ip", "route", "add", f"{METADATA}/32", "via", MD_PEER, "dev", self.link["md"])
        self._serve("up", "upstream", "--http", f"{UPSTREAM}:80", "--http", f"{UPSTREAM}:8080",
                    "--dns", f"{DNS}:53")
        self._serve("vnet", "vnet", "--http", f"{UPSTREAM}:80", "--http", f"{VNET_PEER}:80")
        self._serve("md", "metadata", "--http", f"{METADATA}:80")
        lo = http_server("host-lo", "127.0.0.1", 0)
        anyaddr = http_server("host-any", "0.0.0.0", 0)
        self.host_servers = [lo, anyaddr]
        self.lo_port, self.any_port = lo.server_address[1], anyaddr.server_address[1]
        return self

    def down(self):
        for srv in self.host_servers:
            srv.shutdown()
            srv.server_close()
        for p in self.procs:
            p.kill()
            p.wait()
        self._clean()  # deleting a namespace takes its veth, and the host routes go with the host end
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


# ---- legiond's network, seen from the host ----------------------------------

def nft_table(table):
    """{"rules": N, "sets": {name: [elements]}} of inet table (None when it
    does not exist)."""
    p = subprocess.run(["nft", "-j", "list", "table", "inet", table], capture_output=True, text=True)
    if p.returncode != 0:
        return None
    rules, sets = 0, {}
    for obj in json.loads(p.stdout)["nftables"]:
        if "rule" in obj:
            rules += 1
        for kind in ("set", "map"):
            if kind in obj:
                sets[obj[kind]["name"]] = obj[kind].get("elem", [])
    return {"rules": rules, "sets": sets}


def element_addresses(elem):
    """Every IPv4 address string found in one nft JSON set/map element."""
    found = []

    def walk(x):
        if isinstance(x, str):
            parts = x.split(".")
            if len(parts) == 4 and all(p.isdigit() for p in parts):
                found.append(x)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(elem)
    return found


def host_links(prefix):
    """Names of the host's links with the prefix."""
    return sorted(l["ifname"] for l in ipj("link", "show") if l["ifname"].startswith(prefix))


def host_routes(prefix):
    """dst -> dev of the host's routes through links with the prefix."""
    return {r["dst"]: r["dev"] for r in ipj("route", "show") if r.get("dev", "").startswith(prefix)}


def net_rules():
    """The host's ip rules of legiond's protocol (0x4c)."""
    return [r for r in ipj("rule", "show") if str(r.get("protocol")) in ("76", "0x4c")]


def sandbox_address(pid):
    """The IPv4 address of eth0 in pid's network namespace (None: no eth0)."""
    p = subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "-j", "-4", "addr", "show", "dev", "eth0"],
                       capture_output=True, text=True, timeout=30)
    if p.returncode != 0 or not p.stdout.strip():
        return None
    for link in json.loads(p.stdout):
        for a in link.get("addr_info", []):
            return a["local"]
    return None


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    serve_main(sys.argv[2:])
