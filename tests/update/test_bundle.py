"""Release bundles: deterministic tarballs, and a real build that runs where it was built for."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from gateway import __version__
from gateway.clock import FakeClock
from gateway.update.bundle import (
    DEFAULT_MTIME,
    BundleError,
    build_bundle,
    read_release_info,
    write_tarball,
)
from tests.update.repofactory import TREE, FakeRelease, build_repo, make_fake_bundle


def _tree(folder: Path) -> Path:
    (folder / "bin").mkdir(parents=True)
    (folder / "lib" / "b").mkdir(parents=True)
    (folder / "bin" / "tool").write_text("#!/bin/sh\necho hi\n")
    (folder / "bin" / "tool").chmod(0o775)
    (folder / "lib" / "b" / "z.py").write_text("z = 1\n")
    (folder / "lib" / "a.py").write_text("a = 1\n")
    (folder / "lib64").symlink_to("lib")
    return folder


def test_same_folder_packs_to_the_same_bytes_whatever_the_file_times(tmp_path: Path) -> None:
    folder = _tree(tmp_path / "venv")
    write_tarball(folder, "dicom-gateway-1.0.0", tmp_path / "one.tar.gz")
    for path in folder.rglob("*"):
        os.utime(path, (1_000_000_000, 1_000_000_000), follow_symlinks=False)
    write_tarball(folder, "dicom-gateway-1.0.0", tmp_path / "two.tar.gz")
    assert (tmp_path / "one.tar.gz").read_bytes() == (tmp_path / "two.tar.gz").read_bytes()


def test_members_are_sorted_owned_by_nobody_and_not_group_writable(tmp_path: Path) -> None:
    folder = _tree(tmp_path / "venv")
    write_tarball(folder, "dicom-gateway-1.0.0", tmp_path / "b.tar.gz")
    with tarfile.open(tmp_path / "b.tar.gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == [
        "dicom-gateway-1.0.0",
        "dicom-gateway-1.0.0/bin",
        "dicom-gateway-1.0.0/bin/tool",
        "dicom-gateway-1.0.0/lib",
        "dicom-gateway-1.0.0/lib/a.py",
        "dicom-gateway-1.0.0/lib/b",
        "dicom-gateway-1.0.0/lib/b/z.py",
        "dicom-gateway-1.0.0/lib64",
    ]
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {
        (0, 0, "", "", DEFAULT_MTIME)
    }
    tool = next(m for m in members if m.name.endswith("bin/tool"))
    assert tool.mode == 0o755
    link = next(m for m in members if m.name.endswith("lib64"))
    assert link.issym() and link.linkname == "lib"


@pytest.mark.parametrize("target", ["/usr/bin/python3.11", "../../outside"])
def test_links_that_leave_the_bundle_are_refused(tmp_path: Path, target: str) -> None:
    folder = _tree(tmp_path / "venv")
    (folder / "bin" / "python").symlink_to(target)
    with pytest.raises(BundleError, match="link"):
        write_tarball(folder, "dicom-gateway-1.0.0", tmp_path / "b.tar.gz")
    assert not (tmp_path / "b.tar.gz").exists()


def test_release_json_is_read_back_from_a_bundle(tmp_path: Path) -> None:
    bundle = make_fake_bundle(FakeRelease("1.4.0", arch="aarch64"), tmp_path)
    info = read_release_info(bundle)
    assert (info.version, info.arch) == ("1.4.0", "aarch64")


def test_a_file_that_is_not_a_bundle_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x1f\x8b not really")
    with pytest.raises(BundleError, match="not a readable bundle"):
        read_release_info(junk)


def test_fake_release_script_reports_its_version(tmp_path: Path) -> None:
    bundle = make_fake_bundle(FakeRelease("2.0.0"), tmp_path)
    with tarfile.open(bundle) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    out = subprocess.run(
        [str(tmp_path / "x" / "dicom-gateway-2.0.0" / "bin" / "dicom-gateway"), "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "dicom-gateway 2.0.0"


def test_wrong_arch_or_version_is_refused_before_building(tmp_path: Path) -> None:
    other = "aarch64" if platform.machine() != "aarch64" else "x86_64"
    with pytest.raises(BundleError, match="build it on an"):
        build_bundle(
            version=__version__,
            arch=other,
            out=tmp_path / "b.tar.gz",
            releases_root=tmp_path / "releases",
            source=TREE,
            clock=FakeClock(),
        )
    with pytest.raises(BundleError, match=r"version 99\.0\.0 asked"):
        build_bundle(
            version="99.0.0",
            arch=platform.machine(),
            out=tmp_path / "b.tar.gz",
            releases_root=tmp_path / "releases",
            source=TREE,
            clock=FakeClock(),
        )
    assert not (tmp_path / "releases").exists()


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel folder as a release machine has it: the gateway's dependencies and build tools."""
    folder = tmp_path_factory.mktemp("wheels")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "-q", "-w", str(folder), str(TREE)], check=True)
    subprocess.run([*pip, "wheel", "-q", "-w", str(folder), "setuptools>=77", "wheel"], check=True)
    for built in folder.glob("dicom_edge_gateway-*.whl"):
        built.unlink()  # the bundle builds its own from the tree
    return folder


def test_bundle_built_offline_runs_once_unpacked_at_its_release_path(
    tmp_path: Path, wheels: Path
) -> None:
    if platform.machine() not in ("aarch64", "x86_64"):
        pytest.skip("bundles are built for aarch64 and x86_64 only")
    releases = tmp_path / "releases"
    out = tmp_path / f"dicom-gateway-{__version__}.tar.gz"
    anchor = build_repo(tmp_path / "maint").metadata_dir / "root.json"
    info = build_bundle(
        version=__version__,
        arch=platform.machine(),
        out=out,
        releases_root=releases,
        source=TREE,
        clock=FakeClock(1_700_000_000.0),
        wheels=wheels,
        trusted_root=anchor,
        python=sys._base_executable,
    )
    assert info.built_at == "2023-11-14T22:13:20Z"
    assert info.dependencies["dicom-edge-gateway"] == __version__
    assert {"pydicom", "pynetdicom", "tuf"} <= set(info.dependencies)
    assert read_release_info(out) == info

    # The box: nothing at the release path but what the tarball brings.
    shutil.rmtree(releases / __version__)
    with tarfile.open(out) as tar:
        tar.extractall(releases, filter="data")  # refuses links out of the folder, as on the box
    (releases / f"dicom-gateway-{__version__}").rename(releases / __version__)
    entry = releases / __version__ / "bin" / "dicom-gateway"
    assert entry.read_text().splitlines()[0] == f"#!{releases / __version__ / 'bin' / 'python'}"
    done = subprocess.run(
        [str(entry), "--version"], capture_output=True, text=True, check=True, env={}
    )
    assert done.stdout.strip() == f"dicom-gateway {__version__}"
    # The box trusts the repository's root from its first check on.
    site = releases / __version__ / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    baked = site / "site-packages" / "gateway" / "update" / "trusted_root.json"
    assert baked.read_bytes() == anchor.read_bytes()
    # The units' Documentation= (file:/opt/dicom-gateway/current/share/doc/dicom-gateway/...)
    # names files that the release itself carries.
    doc = releases / __version__ / "share" / "doc" / "dicom-gateway"
    for unit in sorted(p for p in (TREE / "systemd").glob("dicom-gateway*.*") if p.is_file()):
        for line in unit.read_text().splitlines():
            if line.startswith("Documentation=file:/opt/dicom-gateway/current/"):
                named = line.removeprefix("Documentation=file:/opt/dicom-gateway/current/")
                assert (releases / __version__ / named).is_file(), (unit.name, named)
    assert (doc / "operations.md").read_bytes() == (TREE / "docs" / "operations.md").read_bytes()
    assert (doc / "screenshots" / "01-setup.png").is_file()


def test_bundle_built_from_inside_its_source_tree_carries_the_gateway(
    tmp_path: Path, wheels: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image build runs `release build` with the tree as working directory: `pip wheel`
    leaves dicom_edge_gateway.egg-info there, which a non-isolated `pip install` took for an
    installed gateway, so the release lacked its own package."""
    if platform.machine() not in ("aarch64", "x86_64"):
        pytest.skip("bundles are built for aarch64 and x86_64 only")
    source = tmp_path / "src"
    shutil.copytree(
        TREE / "gateway", source / "gateway", ignore=shutil.ignore_patterns("__pycache__")
    )
    # The release carries the docs the units' Documentation= names.
    shutil.copytree(TREE / "docs", source / "docs")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(TREE / name, source / name)
    monkeypatch.chdir(source)
    releases = tmp_path / "releases"
    info = build_bundle(
        version=__version__,
        arch=platform.machine(),
        out=tmp_path / "bundle.tar.gz",
        releases_root=releases,
        source=source,
        clock=FakeClock(1_700_000_000.0),
        wheels=wheels,
        python=sys._base_executable,
    )
    assert info.dependencies["dicom-edge-gateway"] == __version__
    done = subprocess.run(
        [str(releases / __version__ / "bin" / "dicom-gateway"), "--version"],
        capture_output=True,
        text=True,
        check=True,
        env={},
        cwd=tmp_path,
    )
    assert done.stdout.strip() == f"dicom-gateway {__version__}"
