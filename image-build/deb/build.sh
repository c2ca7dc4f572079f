#!/bin/sh
# Build dicom-gateway_<version>_<arch>.deb for this machine's architecture (`make deb`).
#
#   TRUSTED_ROOT=REPO/metadata/root.json image-build/deb/build.sh
#
# Environment:
#   TRUSTED_ROOT   the update repository's root.json, baked into the release as the root the box
#                  trusts first (docs/updates.md). Required: a package nobody chose a trust anchor
#                  for is not built. TRUSTED_ROOT=lab makes a throwaway repository under
#                  $WORK/lab-repo (keys in $WORK/lab-keys) for a lab or test package.
#   DEB_ARCH       Debian architecture asked for (default: this machine's); another one is
#                  refused: the release's virtualenv is built here and runs this machine's code.
#   WHEELS         wheel folder for an offline build (default: $WORK/wheels, filled by pip)
#   WORK           build folder (default build/deb); OUT: where the .deb goes (default dist)
#   PYTHON         the box's base interpreter (default /usr/bin/python3, Debian 12's 3.11)
#   GATEWAY, PIP   the dicom-gateway and pip commands (default: this tree's .venv)
#   SOURCE_DATE_EPOCH  file times in the package (default: the last commit's time)
#
# The virtualenv must be built at its path on the box (/opt/dicom-gateway/releases/<version>),
# so `release build` runs in a private mount namespace where /opt is $WORK/opt: nothing on
# this machine's /opt is touched.
set -eu

TREE=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${WORK:-"$TREE/build/deb"}
OUT=${OUT:-"$TREE/dist"}
PYTHON=${PYTHON:-/usr/bin/python3}
GATEWAY=${GATEWAY:-"$TREE/.venv/bin/python -m gateway"}
HOST_ARCH=$(dpkg --print-architecture)
DEB_ARCH=${DEB_ARCH:-$HOST_ARCH}

if [ "$DEB_ARCH" != "$HOST_ARCH" ]; then
    echo "make deb: DEB_ARCH=$DEB_ARCH, but this machine is $HOST_ARCH. The release's virtualenv" >&2
    echo "  is built on the machine it is for: build the $DEB_ARCH package on a $DEB_ARCH" >&2
    echo "  machine (a Raspberry Pi for arm64, or inside the arm64 chroot of make image)." >&2
    exit 2
fi
case "$DEB_ARCH" in
    amd64) MACHINE=x86_64 ;;
    arm64) MACHINE=aarch64 ;;
    *) echo "make deb: no release is built for $DEB_ARCH (amd64 and arm64 only)" >&2; exit 2 ;;
esac
if [ -z "${TRUSTED_ROOT:-}" ]; then
    echo "make deb: set TRUSTED_ROOT to the update repository's metadata/root.json (the root the" >&2
    echo "  box trusts; docs/updates.md), or TRUSTED_ROOT=lab for a throwaway lab repository." >&2
    exit 2
fi

VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$TREE/gateway/__init__.py")
: "${SOURCE_DATE_EPOCH:=$(git -C "$TREE" log -1 --format=%ct 2>/dev/null || echo 315532800)}"
export SOURCE_DATE_EPOCH
mkdir -p "$WORK" "$OUT"

if [ "$TRUSTED_ROOT" = lab ]; then
    if [ ! -f "$WORK/lab-repo/metadata/root.json" ]; then
        # shellcheck disable=SC2086  # GATEWAY may be a command with arguments
        $GATEWAY release init-repo "$WORK/lab-repo" --keys "$WORK/lab-keys" >/dev/null
    fi
    TRUSTED_ROOT="$WORK/lab-repo/metadata/root.json"
    echo "make deb: LAB package: it trusts the throwaway root in $WORK/lab-repo" >&2
fi

if [ -z "${WHEELS:-}" ]; then
    WHEELS="$WORK/wheels"
    mkdir -p "$WHEELS"
    PIP=${PIP:-"$TREE/.venv/bin/python -m pip"}
    # shellcheck disable=SC2086
    $PIP --disable-pip-version-check wheel -q -w "$WHEELS" "$TREE" "setuptools>=77" wheel
    rm -f "$WHEELS"/dicom_edge_gateway-*.whl   # `release build` makes its own from the tree
fi

BUNDLE="$WORK/dicom-gateway-$VERSION-$MACHINE.tar.gz"
rm -rf "$WORK/opt" "$BUNDLE"
mkdir -p "$WORK/opt"
if [ "$(id -u)" = 0 ]; then NS="unshare --mount"; else NS="unshare --map-root-user --mount"; fi
# shellcheck disable=SC2016,SC2086  # $1.. expand in the inner shell; NS/GATEWAY are words
$NS sh -c 'mount --bind "$1" /opt && shift && exec "$@"' build-deb "$WORK/opt" \
    $GATEWAY release build --version "$VERSION" --arch "$MACHINE" --out "$BUNDLE" \
    --releases-root /opt/dicom-gateway/releases --source "$TREE" --python "$PYTHON" \
    --trusted-root "$TRUSTED_ROOT" --wheels "$WHEELS"
# shellcheck disable=SC2086
$GATEWAY release deb "$BUNDLE" --out "$OUT" --source "$TREE"
