#!/bin/sh
# Installs and starts what the test suite needs on a Debian machine, as root. Idempotent: each
# step runs only when its check fails. Called by `make test`.
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

if ! docker info >/dev/null 2>&1; then
    echo "prereqs: starting dockerd"
    mkdir -p /var/log
    setsid dockerd >/var/log/hexclave-test-dockerd.log 2>&1 < /dev/null &
    tries=0
    until docker info >/dev/null 2>&1; do
        tries=$((tries + 1))
        if [ "$tries" -ge 60 ]; then
            echo "prereqs: dockerd did not answer within 60s; see /var/log/hexclave-test-dockerd.log" >&2
            tail -20 /var/log/hexclave-test-dockerd.log >&2 || true
            exit 1
        fi
        sleep 1
    done
fi
