"""Write requirements-arm64.lock: every wheel the aarch64 release needs, pinned and hash-checked.

    python image-build/lock.py [--out image-build/requirements-arm64.lock]

Resolves pyproject.toml's runtime dependencies (plus setuptools and wheel, which build the
gateway's own wheel inside the chroot) for CPython 3.11 on manylinux aarch64 with glibc up to
Debian 12's 2.36, binary wheels only, by ``pip download`` on this (x86-64) machine; then pins
each downloaded wheel ``name==version --hash=sha256:...``. The image build downloads exactly
these files again with ``--require-hashes`` (``make image`` never resolves anything itself).
Run it when pyproject.toml's dependencies change; tests/image_build checks the lock covers them.

A pure-Python dependency that publishes no wheel at all (``SDIST_ONLY``: pyftpdlib) is pinned
by its sdist's hash instead; the sdist goes into the same wheelhouse, and pip builds it inside
the chroot (setuptools is in the lock) when the release is installed. Nothing else may be an
sdist: a compiled package built under qemu would be slow and not what was tested.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

HERE = Path(__file__).resolve().parent
TREE = HERE.parent
# What pip may pick: manylinux2014 (glibc 2.17) up to glibc 2.36 (Debian 12), aarch64.
PLATFORMS = ["manylinux2014_aarch64"] + [f"manylinux_2_{m}_aarch64" for m in range(17, 37)]
BUILD_TOOLS = ["setuptools>=77", "wheel"]
# Pure Python, on PyPI as an sdist only (no wheel for any version): locked by the sdist's hash.
SDIST_ONLY = frozenset({"pyftpdlib"})


def pip_download_args(dest: Path) -> list[str]:
    """The ``pip download`` options that select aarch64 cp311 binary wheels (build.sh too)."""
    args = ["download", "--only-binary=:all:", "--python-version", "3.11",
            "--implementation", "cp", "--abi", "cp311", "--abi", "abi3", "--abi", "none",
            "-d", str(dest)]
    for platform in PLATFORMS:
        args += ["--platform", platform]
    return args


def sdist_download_args(dest: Path) -> list[str]:
    """The ``pip download`` options for the SDIST_ONLY packages (any platform: pure Python)."""
    return ["download", "--no-binary=:all:", "--no-deps", "-d", str(dest)]


def is_sdist_only(requirement: str) -> bool:
    """Whether a requirement (``name>=x`` or a lock line ``name==x --hash=...``) is SDIST_ONLY."""
    name = requirement.split(";")[0]
    for stop in "<>=!~[ ":
        name = name.split(stop)[0]
    return canonicalize_name(name) in SDIST_ONLY


def runtime_requirements(pyproject: Path) -> list[str]:
    """The ``[project] dependencies`` of pyproject.toml."""
    with pyproject.open("rb") as fh:
        return list(tomllib.load(fh)["project"]["dependencies"])


def lock_lines(wheel_dir: Path) -> list[str]:
    """``name==version --hash=sha256:...`` for every wheel (and SDIST_ONLY sdist) in
    ``wheel_dir``, sorted by name."""
    lines = []
    for wheel in sorted(wheel_dir.glob("*.whl")):
        name, version, _build, _tags = parse_wheel_filename(wheel.name)
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        lines.append(f"{canonicalize_name(name)}=={version} --hash=sha256:{digest}")
    for sdist in sorted(wheel_dir.glob("*.tar.gz")):
        name, version = parse_sdist_filename(sdist.name)
        if canonicalize_name(name) not in SDIST_ONLY:
            raise SystemExit(f"{sdist.name}: only {sorted(SDIST_ONLY)} may come as an sdist")
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
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
        lines = (HERE / "requirements-arm64.lock").read_text().splitlines()
        pinned = [line for line in lines if "==" in line and not line.startswith("#")]
        with tempfile.TemporaryDirectory(prefix="lock-download-") as tmp:
            for part, options in (
                ("wheels", pip_download_args(args.download)),
                ("sdists", sdist_download_args(args.download)),
            ):
                chosen = [line for line in pinned if is_sdist_only(line) == (part == "sdists")]
                if not chosen:
                    continue
                reqs = Path(tmp) / f"{part}.txt"
                reqs.write_text("\n".join(chosen) + "\n")
                cmd = [sys.executable, "-m", "pip", *options, "--require-hashes", "--no-deps",
                       "-r", str(reqs)]
                subprocess.run(cmd, check=True)
        return 0
    with tempfile.TemporaryDirectory(prefix="lock-arm64-") as tmp:
        wanted = runtime_requirements(TREE / "pyproject.toml") + BUILD_TOOLS
        binary = [r for r in wanted if not is_sdist_only(r)]
        cmd = [sys.executable, "-m", "pip", *pip_download_args(Path(tmp)), *binary]
        subprocess.run(cmd, check=True)
        sdists = [r for r in wanted if is_sdist_only(r)]
        if sdists:
            cmd = [sys.executable, "-m", "pip", *sdist_download_args(Path(tmp)), *sdists]
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
