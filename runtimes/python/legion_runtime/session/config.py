"""The session supervisor's settings (docs/sessions-runtime.md): limits and
timeouts from the environment (the sandbox's, then the specialize env), and
how sizes are read and written."""
import os
import re
import time

from legion_runtime.control import log

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(|k|K|Ki|KiB|M|Mi|MiB|G|Gi|GiB|T|Ti|TiB)\s*$", re.ASCII)
_UNITS = {"": 1, "k": 1000, "K": 1000, "M": 1000 ** 2, "G": 1000 ** 3, "T": 1000 ** 4,
          "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
          "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def parse_size(v):
    """Bytes: "1048576", "100Mi", "1Gi", "1.5G" (Kubernetes-style units)."""
    m = _SIZE.match(v or "")
    if not m:
        raise ValueError(v)
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def _env_int(name, default, minimum=0):
    v = os.environ.get(name, "")
    try:
        n = parse_size(v) if v.strip() else default
    except ValueError:
        log("%s=%r is not a size; using %d" % (name, v, default))
        n = default
    return max(n, minimum)


def _env_float(name, default):
    try:
        return float(os.environ.get(name, "") or default)
    except ValueError:
        return default


class Config:
    """Read from the environment: the sandbox's, then the specialize env."""

    def load(self):
        self.data_dir = os.environ.get("LEGION_SESSION_DATA_DIR", "/mnt/data")
        self.max_file = _env_int("LEGION_SESSION_MAX_FILE", 100 << 20)
        self.max_bytes = _env_int("LEGION_SESSION_MAX_BYTES", 1 << 30)
        self.max_output = _env_int("LEGION_SESSION_MAX_OUTPUT", 1 << 20, 1024)
        self.max_code = _env_int("LEGION_SESSION_MAX_CODE", 16 << 20, 1024)
        self.default_timeout = _env_float("LEGION_SESSION_DEFAULT_TIMEOUT", 30.0)
        self.max_timeout = _env_float("LEGION_SESSION_MAX_TIMEOUT", 600.0)
        self.kill_grace = _env_float("LEGION_SESSION_KILL_GRACE", 2.0)
        self.start_timeout = _env_float("LEGION_SESSION_START_TIMEOUT", 30.0)
        return self


CONFIG = Config().load()


def size_text(n):
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= (1 << shift) and n % (1 << (shift - 4)) == 0:
            v = n / (1 << shift)
            return ("%d %s" % (v, unit)) if v == int(v) else ("%.2f %s" % (v, unit))
    return "%d bytes" % n


def limit_text(n):
    """"100 MiB (104857600 bytes)", or "2500 bytes"."""
    t = size_text(n)
    return t if t.endswith(" bytes") else "%s (%d bytes)" % (t, n)


def iso_time(ts):
    t = time.gmtime(ts)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + (".%03dZ" % int((ts % 1) * 1000))
