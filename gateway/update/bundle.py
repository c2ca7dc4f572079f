"""Release bundles: a ready virtualenv of the gateway for one architecture, as one tarball.

A bundle ``dicom-gateway-<version>-<arch>.tar.gz`` holds one top-level folder
``dicom-gateway-<version>/`` whose contents are the virtualenv (``bin/dicom-gateway``,
``lib/python3.X/site-packages/...``, ``pyvenv.cfg``) plus ``RELEASE.json`` and the operator's
documentation of that release in ``share/doc/dicom-gateway/`` (the units' ``Documentation=``
points at ``/opt/dicom-gateway/current/share/doc/dicom-gateway/``, so it is always the running
release's). The box extracts that folder's contents to ``/opt/dicom-gateway/releases/<version>/``.

A virtualenv is not relocatable (its scripts name their interpreter by absolute path), so the
bundle is built at its final path: ``<releases_root>/<version>/`` on the build machine, which
is ``/opt/dicom-gateway/releases`` for real releases. The interpreter is copied, not linked
(``venv --copies``), so the tarball holds no link leaving its folder; the base Python named in
``pyvenv.cfg`` (``/usr/bin/python3.11`` on Debian 12) must exist on the box.

The tarball is deterministic for a given folder: members sorted, one fixed mtime, owner 0/0
without names, a gzip header without time or name. Byte code is compiled with hash-checked
``.pyc`` files (``SOURCE_DATE_EPOCH``), so it does not depend on file times either.
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from packaging.version import Version

from gateway.clock import Clock
from gateway.spool.durable import durable_replace, temp_sibling

RELEASE_FILE = "RELEASE.json"
DOC_DIR = Path("share/doc/dicom-gateway")  # inside the release folder
TRUSTED_ROOT = "trusted_root.json"  # beside gateway/update/client.py, which reads it
# 1980-01-01: the earliest time every archive format (zip included) can hold.
DEFAULT_MTIME = 315_532_800


class BundleError(Exception):
    """A bundle could not be built; the message says what to change (arch, version, wheels)."""


@dataclass(frozen=True)
class ReleaseInfo:
    """What ``RELEASE.json`` says about a bundle."""

    version: str
    arch: str
    built_at: str  # UTC, ISO 8601 with a Z
    python: str  # e.g. "3.11.2"
    dependencies: Mapping[str, str]  # distribution name -> version, as installed

    def to_json(self) -> bytes:
        """The file's bytes (sorted keys, so equal infos are equal files)."""
        body: dict[str, Any] = {
            "version": self.version,
            "arch": self.arch,
            "built_at": self.built_at,
            "python": self.python,
            "dependencies": dict(sorted(self.dependencies.items())),
        }
        return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> ReleaseInfo:
        """Parse ``RELEASE.json``."""
        body = json.loads(data)
        return cls(
            version=str(body["version"]),
            arch=str(body["arch"]),
            built_at=str(body["built_at"]),
            python=str(body["python"]),
            dependencies={str(k): str(v) for k, v in body["dependencies"].items()},
        )


def bundle_folder(version: str) -> str:
    """The top-level folder name inside a bundle."""
    return f"dicom-gateway-{version}"


def write_tarball(folder: Path, arcname: str, out: Path, mtime: int = DEFAULT_MTIME) -> None:
    """Pack ``folder`` as ``arcname/`` into the gzip tarball ``out``, deterministically.

    Links that are absolute or leave ``folder`` are refused (the box's installer refuses them
    too, later and farther from the cause). ``out`` appears whole or not at all.
    """
    members = _members(folder)
    tmp = temp_sibling(out)
    try:
        with (
            tmp.open("xb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for path in members:
                rel = path.relative_to(folder).as_posix()
                name = arcname if rel == "." else f"{arcname}/{rel}"
                info = tar.gettarinfo(str(path), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = mtime
                info.mode &= 0o755  # nothing group/other-writable on the box
                if info.isreg():
                    with path.open("rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
        durable_replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _members(folder: Path) -> list[Path]:
    """Every path under ``folder`` (itself first) in a stable order; only files, dirs, links."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):  # never descends into linked folders
        base = Path(dirpath)
        for name in [*dirnames, *filenames]:
            path = base / name
            if path.is_symlink():
                _check_link(folder, path)
            elif not (path.is_dir() or path.is_file()):
                raise BundleError(f"{path}: only files, folders and links go into a bundle")
            found.append(path)
    return [folder, *sorted(found, key=lambda p: p.relative_to(folder).parts)]


def _check_link(folder: Path, link: Path) -> None:
    target = link.readlink()
    if target.is_absolute():
        raise BundleError(f"{link} -> {target}: absolute link in a bundle")
    resolved = os.path.normpath(link.parent / target)
    if not Path(resolved).is_relative_to(folder):
        raise BundleError(f"{link} -> {target}: link leaves the bundle")


def build_bundle(
    *,
    version: str,
    arch: str,
    out: Path,
    releases_root: Path,
    source: Path,
    clock: Clock,
    wheels: Path | None = None,
    trusted_root: Path | None = None,
    python: str = "/usr/bin/python3",
    mtime: int = DEFAULT_MTIME,
) -> ReleaseInfo:
    """Build the virtualenv at ``releases_root/version``, install the gateway, pack it to ``out``.

    ``source`` is the gateway source tree (its ``__version__`` must be ``version``); with
    ``wheels`` every package, build tools included, comes from that folder and no index is
    asked. ``trusted_root`` (the repository's ``metadata/root.json``) is installed as the
    package's ``gateway/update/trusted_root.json``: the root a box trusts first. The
    virtualenv is left in place (it is the release folder on a build machine).
    """
    if Version(version) != Version(_tree_version(source)):
        raise BundleError(
            f"version {version} asked, but {source} is {_tree_version(source)} "
            "(set gateway.__version__ and commit first)"
        )
    machine = platform.machine()
    if arch != machine:
        raise BundleError(f"arch {arch}: build it on an {arch} machine (this one is {machine})")
    venv = releases_root / version
    if venv.exists():
        raise BundleError(f"{venv} exists: remove it or build another version")
    releases_root.mkdir(parents=True, exist_ok=True)
    # Without the builder's PYTHONPATH/PYTHONHOME: pip would take a source tree on it (its
    # egg-info) for the gateway already installed and leave it out of the venv.
    inherited = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env = {**inherited, "SOURCE_DATE_EPOCH": str(mtime), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    index = ["--no-index", "--find-links", str(wheels)] if wheels is not None else []

    _run([python, "-m", "venv", "--copies", str(venv)], env)
    vpython = str(venv / "bin" / "python")
    # pip runs with -I: `python -m` otherwise puts the working directory first on sys.path, and
    # when that is the source tree, the dicom_edge_gateway.egg-info that `pip wheel` leaves there
    # makes `pip install` see the gateway as "already satisfied" and skip it (the image build
    # runs from the tree: a release without its own package).
    pip = [vpython, "-I", "-m", "pip"]
    with tempfile.TemporaryDirectory(prefix="gateway-wheel-") as tmp:
        _run([*pip, "wheel", *index, "--no-deps", "-w", tmp, str(source)], env)
        (wheel,) = Path(tmp).glob("*.whl")
        _run([*pip, "install", *index, str(wheel)], env)
    if trusted_root is not None:
        # -I: the installed package, never a source tree in the working directory.
        package = _capture(
            [vpython, "-I", "-c", "import gateway.update as u; print(u.__path__[0])"]
        )
        (Path(package) / TRUSTED_ROOT).write_bytes(trusted_root.read_bytes())
    info = ReleaseInfo(
        version=version,
        arch=arch,
        built_at=datetime.fromtimestamp(int(clock.now()), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        python=_capture([vpython, "-I", "-c", "import platform; print(platform.python_version())"]),
        dependencies=_installed(vpython),
    )
    (venv / RELEASE_FILE).write_bytes(info.to_json())
    copy_docs(source, venv / DOC_DIR)
    write_tarball(venv, bundle_folder(version), out, mtime)
    return info


def copy_docs(source: Path, dest: Path) -> None:
    """Copy the tree's ``docs/*.md`` and ``docs/screenshots/`` (the guides show them) to ``dest``.

    A tree without ``docs/operations.md`` is refused: every unit names that file.
    """
    docs = source / "docs"
    if not (docs / "operations.md").is_file():
        raise BundleError(f"{docs / 'operations.md'} missing: the units' Documentation= names it")
    dest.mkdir(parents=True, exist_ok=True)
    for page in sorted(docs.glob("*.md")):
        shutil.copyfile(page, dest / page.name)
    shots = docs / "screenshots"
    if shots.is_dir():
        shutil.copytree(shots, dest / "screenshots", copy_function=shutil.copyfile)


def _tree_version(source: Path) -> str:
    for line in (source / "gateway" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    raise BundleError(f"{source}/gateway/__init__.py has no __version__")


def _installed(vpython: str) -> dict[str, str]:
    listed = json.loads(_capture([vpython, "-I", "-m", "pip", "list", "--format", "json"]))
    return {str(d["name"]): str(d["version"]) for d in listed}


def _run(argv: Sequence[str], env: Mapping[str, str]) -> None:
    done = subprocess.run(argv, env=dict(env), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise BundleError(f"{' '.join(argv[:5])} ... failed ({done.returncode}):\n{tail}")


def _capture(argv: Sequence[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def read_release_info(bundle: Path) -> ReleaseInfo:
    """The ``RELEASE.json`` of a bundle, checked against the folder it sits in."""
    try:
        with tarfile.open(bundle, "r:gz") as tar:
            for member in tar:
                parts = member.name.split("/")
                if len(parts) == 2 and parts[1] == RELEASE_FILE and member.isreg():
                    fh = tar.extractfile(member)
                    assert fh is not None  # a regular member always has contents
                    info = ReleaseInfo.from_json(fh.read())
                    if parts[0] != bundle_folder(info.version):
                        raise BundleError(f"{bundle}: {member.name} is not in the right folder")
                    return info
    except (tarfile.TarError, OSError, ValueError, KeyError) as exc:
        raise BundleError(f"{bundle}: not a readable bundle ({exc})") from None
    raise BundleError(f"{bundle}: no {RELEASE_FILE} in its top folder")
