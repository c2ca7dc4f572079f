#!/bin/sh
# Runs inside the arm64 chroot (qemu-user): build the aarch64 release bundle with the project's
# own `dicom-gateway release build`, offline, from the hash-checked wheelhouse.
#
#   /build/chroot-release.sh VERSION
#
# /build/src: the gateway tree (git archive of HEAD); /build/wheels: the wheels of
# requirements-arm64.lock; /build/trusted_root.json: the root the box trusts first.
# Writes /build/out/dicom-gateway-VERSION-aarch64.tar.gz and leaves the release in
# /opt/dicom-gateway/releases/VERSION.
set -eu
version=$1
# A throwaway virtualenv to run the builder in (it needs the gateway's own dependencies).
python3 -m venv /build/tool
/build/tool/bin/pip install -q --no-index --find-links /build/wheels --require-hashes \
    --no-deps -r /build/requirements-arm64.lock
mkdir -p /build/out
cd /build/src
PYTHONPATH=/build/src /build/tool/bin/python -m gateway release build \
    --version "$version" --arch "$(uname -m)" \
    --out "/build/out/dicom-gateway-$version-$(uname -m).tar.gz" \
    --releases-root /opt/dicom-gateway/releases --source /build/src \
    --python /usr/bin/python3 --wheels /build/wheels --trusted-root /build/trusted_root.json
