#!/bin/sh
# Debian 12 with systemd as PID 1, for the package test (cargo xtask package --test):
# mmdebstrap from the host's apt sources, the downloaded .debs kept in $CACHE/debs so a
# rebuild downloads nothing. Usage: build-rootfs.sh CACHE OUT.tar
set -eu
CACHE=$1 OUT=$2
# ioport: outb, to end QEMU through isa-debug-exit with the verdict.
INCLUDE=systemd,systemd-sysv,udev,dbus,ioport
mkdir -p "$CACHE/debs"
SOURCES=/etc/apt/sources.list.d/debian.sources
[ -f "$SOURCES" ] || SOURCES=/etc/apt/sources.list
mmdebstrap --mode=root --format=tar --variant=minbase --include="$INCLUDE" \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --skip=essential/unlink \
  --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
  --setup-hook="sync-in $CACHE/debs /var/cache/apt/archives/" \
  --customize-hook="sync-out /var/cache/apt/archives $CACHE/debs" \
  bookworm "$OUT.tmp" "$SOURCES"
mv "$OUT.tmp" "$OUT"
