"""Write requirements-arm64.lock: every wheel the aarch64 release needs, pinned and hash-checked.

    python image-build/lock.py [--out image-build/requirements-arm64.lock]

Resolves pyproject.toml's runtime dependencies (plus setuptools and wheel, which build the
gateway's own wheel inside the chroot) for CPython 3.11 on manylinux aarch64 with glibc up to
Debian 12's 2.36, binary wheels only, by ``pip download`` on this (x86-64) machine; then pins
each downloaded wheel ``name==version --hash=sha256:...``. The image build downloads exactly
these files again with ``--require-hashes`` (``make image`` never resolves anything itself).
Run it when pyproject.toml's dependencies change; tests/image_build checks the lock covers them.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

HERE = Path(__file__).resolve().parent
TREE = HERE.parent
# What pip may pick: manylinux2014 (glibc 2.17) up to glibc 2.36 (Debian 12), aarch64.
PLATFORMS = ["manylinux2014_aarch64"] + [f"manylinux_2_{m}_aarch64" for m in range(17, 37)]
BUILD_TOOLS = ["setuptools>=77", "wheel"]


def pip_download_args(dest: Path) -> list[str]:
    """The ``pip download`` options that select aarch64 cp311 binary wheels (build.sh too)."""
    args = ["download", "--only-binary=:all:", "--python-version", "3.11",
            "--implementation", "cp", "--abi", "cp311", "--abi", "abi3", "--abi", "none",
            "-d", str(dest)]
    for platform in PLATFORMS:
        args += ["--platform", platform]
    return args


def runtime_requirements(pyproject: Path) -> list[str]:
    """The ``[project] dependencies`` of pyproject.toml."""
    with pyproject.open("rb") as fh:
        return list(tomllib.load(fh)["project"]["dependencies"])


def lock_lines(wheel_dir: Path) -> list[str]:
    """``name==version --hash=sha256:...`` for every wheel in ``wheel_dir``, sorted by name."""
    lines = []
    for wheel in sorted(wheel_dir.glob("*.whl")):
        name, version, _build, _tags = parse_wheel_filename(wheel.name)
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        lines.append(f"{canonicalize_name(name)}=={version} --hash=sha256:{digest}")
    return sorted(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "requirements-arm64.lock")
    parser.add_argument(
        "--download", type=Path, metavar="DIR",
        help="instead: download the lock's wheels to DIR, hash-checked (the image build)",
    )
    args = parser.parse_args()
    if args.download is not None:
        lock = HERE / "requirements-arm64.lock"
        cmd = [sys.executable, "-m", "pip", *pip_download_args(args.download),
               "--require-hashes", "--no-deps", "-r", str(lock)]
        subprocess.run(cmd, check=True)
        return 0
    with tempfile.TemporaryDirectory(prefix="lock-arm64-") as tmp:
        wanted = runtime_requirements(TREE / "pyproject.toml") + BUILD_TOOLS
        cmd = [sys.executable, "-m", "pip", *pip_download_args(Path(tmp)), *wanted]
        subprocess.run(cmd, check=True)
        header = [
            "# aarch64 CPython 3.11 wheels of the image's release; written by image-build/lock.py",
            "# (do not edit by hand: change pyproject.toml, then run it again).",
        ]
        args.out.write_text("\n".join([*header, *lock_lines(Path(tmp))]) + "\n")
    print(f"{args.out}: written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
