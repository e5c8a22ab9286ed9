#!/bin/sh
# Install the Debian 12 packages Legion needs to build, test and benchmark.
# Idempotent: packages already present are left alone and apt is not run at
# all when nothing is missing. Must run as root on a fresh machine.
set -eu

PACKAGES="
build-essential meson ninja-build pkg-config
libseccomp-dev libjansson-dev libsqlite3-dev libcmocka-dev
libuv1-dev libhttp-parser-dev libarchive-dev libssl-dev libcurl4-openssl-dev
python3 python3-pytest nodejs
busybox-static runc bubblewrap wrk nginx-light
iproute2 procps psmisc valgrind curl zip
docker-registry skopeo zstd apache2-utils
libyaml-dev
libmnl-dev libnftables-dev nftables
erofs-utils
python3-distributed python3-numpy
"

missing=""
for p in $PACKAGES; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
                missing="$missing $p"
        fi
done

# kubectl for the Pod API tests: Debian's kubernetes-client, unless a
# kubectl from another package (Google's apt repository) is installed; the
# two conflict on /usr/bin/kubectl.
if ! command -v kubectl >/dev/null 2>&1; then
        PACKAGES="$PACKAGES kubernetes-client"
        if ! dpkg-query -W -f='${Status}' kubernetes-client 2>/dev/null | grep -q "install ok installed"; then
                missing="$missing kubernetes-client"
        fi
fi

if [ -z "$missing" ]; then
        exit 0
fi

if [ "$(id -u)" != 0 ]; then
        echo "install-deps: missing packages:$missing (run as root to install them)" >&2
        exit 1
fi

echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y --no-install-recommends $missing
