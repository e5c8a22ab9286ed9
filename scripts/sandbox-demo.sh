#!/bin/sh
# `make sandbox-demo`: the sandbox runtime at
# work, with a few one-off sandboxes, each command printed before it runs.
set -u
BUILD=${1:-build}
LEGION="$BUILD/legion"
if [ "$(id -u)" != 0 ]; then
        echo "make run needs root: sandboxes use namespaces, cgroups and mounts" >&2
        exit 1
fi

show() {
        printf '\n$ legion %s\n' "$*"
        "$LEGION" "$@"
        printf '[exit status %d]\n' "$?"
}

show sandbox run --hostname demo -- /bin/sh -c 'echo "hello from $(hostname): I am uid $(id -u), host sees uid $(tr -s " " < /proc/self/uid_map | cut -d" " -f3)"'
show sandbox run -- /bin/sh -c 'echo "processes I can see:"; ps -e -o pid,comm 2>/dev/null || ls /proc | grep "^[0-9]"'
show sandbox run -- python3 -c 'import socket; socket.create_connection(("1.1.1.1", 80), timeout=2)'
show sandbox run --memory 32M -- python3 -c 'x = bytearray(256 << 20)'
show sandbox run --pids 16 -- python3 -c '
import os, time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(3); os._exit(0)
        n += 1
except OSError as e:
    print("fork bomb stopped after", n, "forks:", e.strerror)'
show sandbox run --ro -- /bin/sh -c 'touch /etc/x; mount -t tmpfs none /mnt; echo "/tmp is still writable" > /tmp/ok && cat /tmp/ok'
printf '\nTry your own: %s sandbox run --help\n' "$LEGION"
