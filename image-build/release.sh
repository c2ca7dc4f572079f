#!/bin/sh
# Build one release bundle and publish it into the TUF repository (maintainer machine).
#
#   image-build/release.sh VERSION CHANNEL ROLLOUT MIN_FROM HARDWARE
#
# Environment (all optional but REPO and KEYS):
#   REPO           repository folder (what the update server or USB stick serves)
#   KEYS           keys folder holding the targets, snapshot and timestamp keys (never in REPO)
#   WHEELS         wheel folder for an offline build (dependencies, setuptools, wheel)
#   RELEASES_ROOT  where the virtualenv is built; must be the path on the box
#                  (default /opt/dicom-gateway/releases)
#   PYTHON         base interpreter (default /usr/bin/python3, Debian 12's 3.11)
#   GATEWAY        the dicom-gateway command (default: this tree's .venv, else dicom-gateway)
#   OUT            bundle output folder (default ./dist)
#
# The arch is this machine's: build aarch64 bundles on an aarch64 machine (or a qemu chroot).
set -eu

if [ $# -ne 5 ]; then
    sed -n '2,16p' "$0" >&2
    exit 64
fi
VERSION=$1 CHANNEL=$2 ROLLOUT=$3 MIN_FROM=$4 HARDWARE=$5
: "${REPO:?set REPO to the repository folder}"
: "${KEYS:?set KEYS to the keys folder}"
TREE=$(cd "$(dirname "$0")/.." && pwd)
ARCH=$(uname -m)
OUT=${OUT:-"$TREE/dist"}
RELEASES_ROOT=${RELEASES_ROOT:-/opt/dicom-gateway/releases}
PYTHON=${PYTHON:-/usr/bin/python3}
if [ -z "${GATEWAY:-}" ]; then
    if [ -x "$TREE/.venv/bin/python" ]; then GATEWAY="$TREE/.venv/bin/python -m gateway"
    else GATEWAY=dicom-gateway; fi
fi
BUNDLE="$OUT/dicom-gateway-$VERSION-$ARCH.tar.gz"

mkdir -p "$OUT"
cd "$TREE"
# shellcheck disable=SC2086  # GATEWAY may be a command with arguments
$GATEWAY release build --version "$VERSION" --arch "$ARCH" --out "$BUNDLE" \
    --releases-root "$RELEASES_ROOT" --source "$TREE" --python "$PYTHON" \
    --trusted-root "$REPO/metadata/root.json" \
    ${WHEELS:+--wheels "$WHEELS"}
# shellcheck disable=SC2086
$GATEWAY release publish "$REPO" "$BUNDLE" --keys "$KEYS" --channel "$CHANNEL" \
    --rollout "$ROLLOUT" --min-from "$MIN_FROM" --hardware "$HARDWARE"
# shellcheck disable=SC2086
$GATEWAY release list "$REPO"
