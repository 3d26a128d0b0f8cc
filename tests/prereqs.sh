#!/bin/sh
# Installs what the test suite needs on a Debian machine, as root. Idempotent: a package is
# installed only when its command is missing. Called by `make test` and `make bench`.
#
# No docker engine is started here: the suite starts throwaway engines of its own (private
# namespaces, own data root and socket) and never uses the machine's.
set -eu

# command -> Debian package providing it
need="
docker:docker.io
dockerd:docker.io
busybox:busybox-static
mkfs.ext4:e2fsprogs
mksquashfs:squashfs-tools
losetup:mount
unshare:util-linux
nsenter:util-linux
blkid:util-linux
ip:iproute2
qemu-aarch64-static:qemu-user-static
cloud-init:cloud-init
"
missing=""
for entry in $need; do
    cmd=${entry%%:*}
    pkg=${entry#*:}
    if ! command -v "$cmd" >/dev/null 2>&1; then
        case " $missing " in *" $pkg "*) ;; *) missing="$missing $pkg" ;; esac
    fi
done
# Debian's busybox (dynamic) does not do: the test images need the static one.
if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed'; then
    case " $missing " in *" busybox-static "*) ;; *) missing="$missing busybox-static" ;; esac
fi
if [ -n "$missing" ]; then
    echo "prereqs: installing$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
