#!/bin/bash
# The base root file system: mmdebstrap of Debian 12 minbase arm64 with packages.list, as a
# tarball. Slow (dpkg runs under qemu-user), hence cached by build.sh under a key made of this
# file, packages.list, the mirror and the snapshot.
#
#   base.sh OUT.tar MIRROR_URL SECURITY_URL SNAPSHOT
#
# SNAPSHOT empty: the live archive. The apt lists are kept, so the variants' packages
# (packages-<variant>.list) are installed later from the same Release files.
set -euo pipefail
out=$1 mirror=$2 security=$3 snapshot=$4
here=$(cd "$(dirname "$0")" && pwd)
packages=$(grep -v '^#' "$here/packages.list" | grep -v '^$' | sort | paste -sd, -)
aptopts=()
if [ -n "$snapshot" ]; then
    # snapshot.debian.org's Release files have long expired: that is the point of a snapshot.
    aptopts+=(--aptopt='Acquire::Check-Valid-Until "false"')
fi
tmp=$out.partial
rm -f "$tmp"
mmdebstrap --variant=minbase --architectures=arm64 --mode=root --format=tar \
    --include="$packages" "${aptopts[@]}" \
    --skip=cleanup/apt/lists \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    bookworm "$tmp" \
    "deb $mirror bookworm main non-free-firmware" \
    "deb $mirror bookworm-updates main non-free-firmware" \
    "deb $security bookworm-security main non-free-firmware"
mv "$tmp" "$out"
