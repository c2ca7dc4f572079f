#!/bin/bash
# Build the appliance's SD-card images (make image; as root on Debian 12 x86-64 or arm64).
#
#   image-build/build.sh
#
# Environment (all optional):
#   VARIANTS      which images (default "qemu rpi4"); they differ only in how they boot
#   SNAPSHOT      YYYYMMDDTHHMMSSZ: packages from snapshot.debian.org at that instant, for a
#                 reproducible build (default: the live archive; its Release date is recorded)
#   TRUSTED_ROOT  the update repository's metadata/root.json baked into the release (default:
#                 a development repository made once under $CACHE/dev-repo: NOT for the field)
#   CACHE         base rootfs, wheels and bundles kept between builds (default build/image-cache)
#   OUT           the images (default build/image)
#   WORK          scratch (default build/image-work; removed at the end)
#   HOST_PYTHON   a Python with the gateway's dependencies (default .venv/bin/python)
#
# Stages: base rootfs (mmdebstrap, cached) -> wheels (pip download --require-hashes, cached)
# -> the aarch64 release bundle (`dicom-gateway release build` in the arm64 chroot, cached)
# -> per variant: boot packages, the overlay image-build/rootfs/, the project's units, the
# release unpacked as the updater unpacks it, chroot customisation -> assemble.py -> xz, bmap.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tree=$(cd "$here/.." && pwd)
cd "$tree"
VARIANTS=${VARIANTS:-"qemu rpi4"}
SNAPSHOT=${SNAPSHOT:-}
CACHE=$(realpath -m "${CACHE:-build/image-cache}")
OUT=$(realpath -m "${OUT:-build/image}")
WORK=$(realpath -m "${WORK:-build/image-work}")
HOST_PYTHON=${HOST_PYTHON:-$tree/.venv/bin/python}
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' gateway/__init__.py)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}

log() { printf '\n=== %s: %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { printf 'image-build: %s\n' "$*" >&2; exit 1; }
hash_of() { sha256sum | cut -c1-16; }

[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap --mode=root, chroot, file ownership)"
[ -n "$version" ] || die "no __version__ in gateway/__init__.py"
[ -x "$HOST_PYTHON" ] || die "$HOST_PYTHON missing: make venv first"
"$HOST_PYTHON" "$here/checks.py" || die "the recipe is inconsistent (image-build/checks.py)"
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    echo "image-build: the tree has uncommitted changes; the release is built from HEAD" >&2
fi

# --- qemu-user for arm64 programs (binfmt_misc) ---------------------------------------------
if [ "$(uname -m)" != aarch64 ]; then
    if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    fi
    if ! grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null; then
        update-binfmts --enable qemu-aarch64
    fi
    grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 ||
        die "qemu-aarch64 is not registered with binfmt_misc (apt install qemu-user-static)"
fi

# --- where packages come from -----------------------------------------------------------------
if [ -n "$SNAPSHOT" ]; then
    [[ $SNAPSHOT =~ ^[0-9]{8}T[0-9]{6}Z$ ]] || die "SNAPSHOT=$SNAPSHOT: want YYYYMMDDTHHMMSSZ"
    mirror=http://snapshot.debian.org/archive/debian/$SNAPSHOT
    security=http://snapshot.debian.org/archive/debian-security/$SNAPSHOT
else
    mirror=http://deb.debian.org/debian
    security=http://deb.debian.org/debian-security
fi

# Run a command in an arm64 root: /proc, /sys, /dev and a /run tmpfs (holding the host's DNS
# for apt) are mounted in a private mount namespace, so they vanish with it, whatever happens.
in_root() {
    local root=$1
    shift
    # shellcheck disable=SC2016  # expanded by the inner shell
    unshare --mount --propagation private -- /bin/sh -ec '
        root=$1; shift
        mount -t proc proc "$root/proc"
        mount -t sysfs sysfs "$root/sys"
        mount --rbind /dev "$root/dev"
        mount -t tmpfs -o mode=0755 tmpfs "$root/run"
        mkdir -p "$root/run/systemd/resolve"
        cp -L /etc/resolv.conf "$root/run/systemd/resolve/stub-resolv.conf"
        [ -L "$root/etc/resolv.conf" ] || cp -L /etc/resolv.conf "$root/etc/resolv.conf"
        exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
            LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" "$@"
    ' sh "$root" "$@"
}

unpack_base() {  # unpack_base DIR: the cached base rootfs, owners and xattrs kept
    rm -rf "$1"
    mkdir -p "$1"
    tar -C "$1" --numeric-owner --xattrs --xattrs-include='*' -xpf "$base"
}

mkdir -p "$CACHE" "$OUT"
rm -rf "$WORK"
mkdir -p "$WORK"

# --- 1. base rootfs ---------------------------------------------------------------------------
base_key=$({ cat "$here/base.sh" "$here/packages.list"; echo "$mirror"; echo "$SNAPSHOT"; } | hash_of)
base=$CACHE/base-$base_key.tar
if [ -f "$base" ]; then
    log "base rootfs: cached $base"
else
    log "base rootfs: mmdebstrap bookworm arm64 from $mirror (slow: dpkg under qemu-user)"
    "$here/base.sh" "$base" "$mirror" "$security" "$SNAPSHOT"
fi
# The archive's own date of the Release file used: what a rebuild with SNAPSHOT= needs.
archive_date=$(tar -xOf "$base" --wildcards './var/lib/apt/lists/*_dists_bookworm_InRelease' |
    sed -n 's/^Date: //p' | head -n1)
archive_note="mirror $mirror (bookworm Release dated $archive_date)${SNAPSHOT:+, snapshot $SNAPSHOT}"
log "packages: $archive_note"

# --- 2. wheels --------------------------------------------------------------------------------
lock=$here/requirements-arm64.lock
wheels=$CACHE/wheels-$(hash_of <"$lock")
if [ ! -d "$wheels" ]; then
    log "wheels: pip download --require-hashes of $(grep -c '==' "$lock") aarch64 wheels"
    "$HOST_PYTHON" "$here/lock.py" --download "$wheels.partial"
    mv "$wheels.partial" "$wheels"
fi

# --- 3. the aarch64 release bundle --------------------------------------------------------------
if [ -z "${TRUSTED_ROOT:-}" ]; then
    TRUSTED_ROOT=$CACHE/dev-repo/repo/metadata/root.json
    if [ ! -f "$TRUSTED_ROOT" ]; then
        PYTHONPATH=$tree "$HOST_PYTHON" -m gateway release init-repo "$CACHE/dev-repo/repo" \
            --keys "$CACHE/dev-repo/keys"
    fi
    echo "image-build: WARNING: the image trusts the development update root $TRUSTED_ROOT" \
        "(keys in $CACHE/dev-repo/keys); set TRUSTED_ROOT for a field image" >&2
fi
# Keyed by what goes into the bundle (the package, pyproject.toml, README.md, and docs/, which the
# release carries as share/doc for the units' Documentation=), not the whole tree: a change to
# image-build/ or tests/ must not cost a rebuild under qemu-user (~6-20 min).
wheel_inputs=$(git rev-parse HEAD:gateway HEAD:pyproject.toml HEAD:README.md HEAD:docs)
bundle_key=$({ echo "$base_key $wheel_inputs"; cat "$lock" "$TRUSTED_ROOT" "$here/chroot-release.sh"; } | hash_of)
bundle_name=dicom-gateway-$version-aarch64.tar.gz
bundle=$CACHE/bundle-$bundle_key/$bundle_name
if [ -f "$bundle" ]; then
    log "release bundle: cached $bundle"
else
    log "release bundle: dicom-gateway release build in the arm64 chroot (pip under qemu-user)"
    broot=$WORK/release
    unpack_base "$broot"
    mkdir -p "$broot/build/src"
    git archive --format=tar HEAD | tar -C "$broot/build/src" -xf -
    cp -a "$wheels" "$broot/build/wheels"
    cp "$lock" "$broot/build/requirements-arm64.lock"
    cp "$TRUSTED_ROOT" "$broot/build/trusted_root.json"
    install -m 0755 "$here/chroot-release.sh" "$broot/build/"
    in_root "$broot" /build/chroot-release.sh "$version"
    mkdir -p "$(dirname "$bundle")"
    cp "$broot/build/out/$bundle_name" "$bundle.partial"
    mv "$bundle.partial" "$bundle"
    rm -rf "$broot"
fi
cp "$bundle" "$OUT/$bundle_name"

# --- 4. the variants --------------------------------------------------------------------------
for variant in $VARIANTS; do
    [ -f "$here/packages-$variant.list" ] || die "variant $variant: no packages-$variant.list"
    name=dicom-gateway-$version-$variant-arm64
    vwork=$WORK/$variant
    root=$vwork/root
    log "$variant: root file system"
    unpack_base "$root"
    mkdir -p "$root/build"
    # The overlay first: the boot packages' hooks read /etc/default/raspi-*, the initramfs hook.
    tar -C "$here/rootfs" --owner=0 --group=0 --numeric-owner -cf - . | tar -C "$root" -xpf -
    grep -v '^#' "$here/packages-$variant.list" | grep -v '^$' >"$root/build/packages" || true
    units=$(python3 "$here/units.py" "$tree/systemd" "$root")
    log "$variant: the release as the updater lays it out"
    PYTHONPATH=$tree "$HOST_PYTHON" - "$bundle" "$root/opt/dicom-gateway" "$version" <<'EOF'
import sys
from pathlib import Path

from gateway.update import symlink
from gateway.update.installer import unpack

bundle, install_root, version = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
release = unpack(bundle, install_root / "releases", version)
symlink.switch(install_root / "current", release)
EOF
    install -m 0755 "$here/customize.sh" "$root/build/"
    log "$variant: customise in the chroot (boot packages, users, units, initramfs)"
    # shellcheck disable=SC2086  # one unit name a word
    in_root "$root" /build/customize.sh "$variant" $units
    cp "$root/build/packages.txt" "$OUT/$name.packages.txt"
    echo "$archive_note" >"$OUT/$name.archive.txt"

    boot=$vwork/boot
    mkdir -p "$boot"
    case $variant in
        qemu)
            # -kernel/-initrd are read off the FAT by the test (mtools); cmdline.txt says how.
            cp -L "$root/vmlinuz" "$boot/vmlinuz"
            cp -L "$root/initrd.img" "$boot/initrd.img"
            echo "root=LABEL=rootA ro rootwait console=ttyAMA0 panic=10" >"$boot/cmdline.txt"
            ;;
        rpi4)
            # raspi-firmware's kernel and initramfs hooks filled /boot/firmware.
            cp -a "$root/boot/firmware/." "$boot/"
            find "$root/boot/firmware" -mindepth 1 -delete
            ;;
    esac
    rm -rf "$root/build"
    mkdir -p "$vwork/data"  # the image ships /data empty; first boot fills it

    log "$variant: assemble $name.img"
    python3 "$here/assemble.py" --version "$version" --variant "$variant" --boot "$boot" \
        --root "$root" --data "$vwork/data" --out "$OUT/$name.img"
    rm -rf "$vwork"
    log "$variant: bmap and xz"
    bmaptool -q create -o "$OUT/$name.img.bmap" "$OUT/$name.img"
    xz -T0 -6 -f -k "$OUT/$name.img"
    if [ "$variant" != qemu ]; then
        rm -f "$OUT/$name.img"  # the field gets the .xz; the tests boot the raw qemu image
    fi
done
rm -rf "$WORK"
log "done"
ls -l "$OUT"
