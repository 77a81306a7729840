#!/bin/sh
# The rootfs tarball as a bootable raw ext4 image (no loop mounts, no partitions), with
# the test hook: ocg-test.service runs /ocg/run.sh from the second disk at boot.
# Usage: make-image.sh ROOTFS.tar OUT.img
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
TAR=$1 OUT=$2
ROOT=$(mktemp -d "${TMPDIR:-/tmp}/ocg-root.XXXXXX")
trap 'rm -rf "$ROOT"' EXIT
tar -C "$ROOT" --numeric-owner --xattrs --xattrs-include='*' -xpf "$TAR"
echo ocg-guest > "$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tocg-guest\n' > "$ROOT/etc/hosts"
# A fixed machine-id: an empty one means first boot (firstboot, preset-all).
echo 0c9a5e5ecb1e4a7c9f3e2d1b0a998877 > "$ROOT/etc/machine-id"
# The kernel mounts / rw (root=/dev/nvme0n1 rw): nothing to mount, nothing to fsck.
printf '# root is mounted rw by the kernel\n' > "$ROOT/etc/fstab"
# No login prompt on the console, no timers that take the dpkg lock mid-test.
systemctl --root="$ROOT" mask --quiet \
    serial-getty@ttyS0.service getty@tty1.service \
    apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer \
    e2scrub_reap.service systemd-pstore.service proc-sys-fs-binfmt_misc.automount
mkdir -p "$ROOT/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\n' > "$ROOT/etc/systemd/journald.conf.d/ocg.conf"
install -m 0755 "$HERE/ocg-test-runner" "$ROOT/usr/local/sbin/ocg-test-runner"
install -m 0644 "$HERE/ocg-test.service" "$ROOT/etc/systemd/system/ocg-test.service"
systemctl --root="$ROOT" enable --quiet ocg-test.service
rm -f "$OUT"
mkfs.ext4 -q -F -L ocgroot -E lazy_itable_init=0 -d "$ROOT" "$OUT" 1G
