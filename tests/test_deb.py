"""The .deb (issue 12 item 6): its rules as unit tests, then the package built and installed.

The fast tests check the pure rules (Debian versions, Depends, the postinst's ``current``
rule). The ``slow`` ones build the package for real once per module with
image-build/deb/build.sh (``release build`` of a real virtualenv, then ``release deb``),
inspect it with dpkg-deb and lintian, and install it with apt into a Debian 12 chroot made by
mmdebstrap (cached in DEB_TEST_CACHE, default /var/tmp/dg-deb-cache): install, the user, the
enabled units, the updater moving ahead, remove and purge keeping the queue.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import __version__
from gateway.update import symlink
from gateway.update.deb import DebError, debian_version, depends_for
from gateway.update.package import configure, decide_current

TREE = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("DEB_TEST_CACHE", "/var/tmp/dg-deb-cache"))


# -- the rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pep440", "debian"),
    [
        ("1.4.0", "1.4.0"),
        ("1.4.0rc1", "1.4.0~rc1"),
        ("1.4.0a2", "1.4.0~a2"),
        ("1.4.0.dev3", "1.4.0~dev3"),
        ("1.4.0.post1", "1.4.0+post1"),
        ("2!1.0", "2:1.0"),
    ],
)
def test_debian_versions_sort_as_the_releases_do(pep440: str, debian: str) -> None:
    assert debian_version(pep440) == debian
    if shutil.which("dpkg"):
        # A pre-release sorts before its release for dpkg too, a post-release after.
        release = debian_version("1.4.0")
        relation = "lt" if "~" in debian else "ge"
        if debian.startswith("1.4.0"):
            subprocess.run(["dpkg", "--compare-versions", debian, relation, release], check=True)


def test_a_local_version_is_no_package_version() -> None:
    with pytest.raises(DebError, match="local version"):
        debian_version("1.4.0+site")


def test_depends_names_the_interpreter_minor_the_venv_was_built_with() -> None:
    assert depends_for("3.11.2")[0] == "python3.11"


@pytest.mark.parametrize(
    ("in_use", "unfinished", "switch"),
    [
        (None, None, True),  # first install, or dpkg removed the release current named
        ("1.0.0", None, True),  # the package is newer: the administrator's upgrade
        ("1.2.0", None, False),  # the package's own release already in use
        ("1.3.0", None, False),  # the updater moved ahead: never taken back
        ("weird", None, False),
        (None, "1.3.0", False),  # the updater is mid-install: its state machine decides
        ("1.0.0", "1.3.0", False),
    ],
)
def test_current_rule(in_use: str | None, unfinished: str | None, switch: bool) -> None:
    assert decide_current("1.2.0", in_use, unfinished).switch is switch


def test_configure_switches_as_the_updater_does_and_leaves_a_newer_release(
    tmp_path: Path,
) -> None:
    root, state = tmp_path / "opt", tmp_path / "state"
    for version in ("1.2.0", "1.3.0"):
        (root / "releases" / version).mkdir(parents=True)

    assert configure("1.2.0", root, state).switch
    assert os.readlink(root / "current") == "releases/1.2.0"  # relative, like the updater's

    symlink.switch(root / "current", root / "releases" / "1.3.0")  # the updater moves on
    assert not configure("1.2.0", root, state).switch
    assert symlink.current_release(root / "current") == "1.3.0"


# -- the package, built and installed -------------------------------------------------------


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload, no-any-return]


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package, built once for the module by image-build/deb/build.sh."""
    for tool in ("dpkg-deb", "unshare", "/usr/bin/python3"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} missing")
    work = CACHE / "test-work"
    out = tmp_path_factory.mktemp("deb-out")
    env = {
        **os.environ,
        "TRUSTED_ROOT": "lab",
        "WORK": str(work),
        "OUT": str(out),
        "GATEWAY": f"env PYTHONPATH={TREE} {sys.executable} -m gateway",
        "PIP": f"{sys.executable} -m pip",
    }
    if (work / "wheels").is_dir() and any((work / "wheels").glob("*.whl")):
        env["WHEELS"] = str(work / "wheels")
    done = _run([str(TREE / "image-build/deb/build.sh")], env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = out.glob("*.deb")
    return built


@pytest.mark.slow
def test_the_package_is_named_versioned_and_laid_out_as_the_updater_lays_a_release(
    deb: Path,
) -> None:
    assert deb.name == f"dicom-gateway_{debian_version(__version__)}_{_host_arch()}.deb"
    info = _run(["dpkg-deb", "--info", str(deb)]).stdout
    assert f"Version: {debian_version(__version__)}" in info
    assert "Depends: python3.11, systemd (>= 252)" in info
    assert "Recommends: ca-certificates, samba, avahi-daemon" in info
    conffiles = _run(["dpkg-deb", "--field", str(deb), "Package"])
    assert conffiles.stdout.strip() == "dicom-gateway"
    ctrl = _run(["dpkg-deb", "-I", str(deb), "conffiles"]).stdout.split()
    assert ctrl == ["/etc/systemd/journald.conf.d/dicom-gateway.conf"]

    listing = _run(["dpkg-deb", "--contents", str(deb)]).stdout.splitlines()
    entries = {
        line.split()[-1] if " -> " not in line else line.split()[-3]: line for line in listing
    }
    release = f"./opt/dicom-gateway/releases/{__version__}/"
    for path, mode in [
        (f"{release}bin/dicom-gateway", "-rwxr-xr-x"),
        (f"{release}RELEASE.json", "-rw-r--r--"),
        (f"{release}share/doc/dicom-gateway/operations.md", "-rw-r--r--"),
        (f"./opt/dicom-gateway/releases/{__version__}.dpkg", "-rw-r--r--"),
        ("./usr/lib/systemd/system/dicom-gateway.service", "-rw-r--r--"),
        ("./usr/lib/systemd/system/dicom-gateway-update.timer", "-rw-r--r--"),
        ("./usr/lib/sysusers.d/dicom-gateway.conf", "-rw-r--r--"),
        ("./usr/lib/tmpfiles.d/dicom-gateway.conf", "-rw-r--r--"),
        ("./etc/systemd/journald.conf.d/dicom-gateway.conf", "-rw-r--r--"),
        ("./usr/share/doc/dicom-gateway/copyright", "-rw-r--r--"),
    ]:
        assert path in entries, path
        assert entries[path].startswith(mode), entries[path]
        assert " root/root " in entries[path], entries[path]
    # dpkg owns one release and never `current` (the postinst and the updater switch it).
    assert not any(p.startswith("./opt/dicom-gateway/current") for p in entries)
    assert not any("/var/lib/dicom-gateway" in p for p in entries)
    # Exactly the bundle's tree: the updater's own unpack put it there.
    bundle = next((CACHE / "test-work").glob(f"dicom-gateway-{__version__}-*.tar.gz"))
    with tarfile.open(bundle) as tar:
        in_bundle = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    in_deb = {p.removeprefix(release).rstrip("/") for p in entries if p.startswith(release)}
    assert in_bundle == in_deb - {""}


@pytest.mark.slow
def test_the_package_builds_reproducibly(deb: Path, tmp_path: Path) -> None:
    again = _run(
        [
            sys.executable,
            "-m",
            "gateway",
            "release",
            "deb",
            str(next((CACHE / "test-work").glob("dicom-gateway-*.tar.gz"))),
            "--out",
            str(tmp_path),
            "--source",
            str(TREE),
        ],
        env={**os.environ, "PYTHONPATH": str(TREE)},
    )
    assert again.returncode == 0, again.stderr
    assert (tmp_path / deb.name).read_bytes() == deb.read_bytes()


@pytest.mark.slow
def test_lintian_finds_no_error(deb: Path) -> None:
    if not shutil.which("lintian"):
        pytest.skip("lintian not installed (apt-get install lintian)")
    done = _run(["lintian", "--no-tag-display-limit", str(deb)])
    errors = [line for line in done.stdout.splitlines() if line.startswith("E:")]
    assert errors == [], done.stdout


def _host_arch() -> str:
    return _run(["dpkg", "--print-architecture"]).stdout.strip()


@pytest.fixture(scope="module")
def chroot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh Debian 12 (--variant=apt) root from a tarball cached per machine."""
    if os.geteuid() != 0 or not shutil.which("mmdebstrap"):
        pytest.skip("needs root and mmdebstrap")
    tarball = CACHE / "bookworm-apt.tar"
    if not tarball.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        made = _run(["mmdebstrap", "--variant=apt", "bookworm", str(tarball)])
        assert made.returncode == 0, made.stderr
    root = tmp_path_factory.mktemp("bookworm")
    with tarfile.open(tarball) as tar:
        tar.extractall(root, filter="fully_trusted")
    archives = CACHE / "apt-archives"
    (archives / "partial").mkdir(parents=True, exist_ok=True)
    target = root / "var/cache/apt/archives"
    mounts = []
    for src, dst in [(archives, target), (Path("/proc"), root / "proc")]:
        dst.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "--bind", str(src), str(dst)], check=True)
        mounts.append(dst)
    try:
        yield root
    finally:
        for dst in reversed(mounts):
            subprocess.run(["umount", "-l", str(dst)], check=False)


def _in(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive"}
    return _run(["chroot", str(root), *argv], env=env)


@pytest.mark.slow
def test_apt_installs_removes_and_purges_it_in_a_debian_12_root_keeping_the_queue(
    deb: Path, chroot: Path
) -> None:
    shutil.copy(deb, chroot / "tmp" / deb.name)
    assert _in(chroot, "apt-get", "update", "-qq").returncode == 0
    done = _in(
        chroot, "apt-get", "install", "-y", "-q", "--no-install-recommends", f"/tmp/{deb.name}"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dicom-gateway setup-token" in done.stdout  # the postinst says what comes next
    assert "not started" in done.stdout  # no gateway.toml yet

    version = _in(chroot, "/opt/dicom-gateway/current/bin/dicom-gateway", "--version")
    assert version.stdout.strip() == f"dicom-gateway {__version__}", version.stderr
    assert os.readlink(chroot / "opt/dicom-gateway/current") == f"releases/{__version__}"
    assert _in(chroot, "dicom-gateway", "--version").returncode == 0  # /usr/bin link
    assert _in(chroot, "getent", "passwd", "dicom-gateway").stdout.startswith("dicom-gateway:")
    assert "dialout" in _in(chroot, "id", "-nG", "dicom-gateway").stdout
    wants = chroot / "etc/systemd/system"
    assert (wants / "multi-user.target.wants/dicom-gateway.service").is_symlink()
    assert (wants / "timers.target.wants/dicom-gateway-update.timer").is_symlink()
    queue = chroot / "var/lib/dicom-gateway"
    assert queue.is_dir() and (chroot / "etc/dicom-gateway").is_dir()

    # The updater moves the box to a newer release; a reinstall of the package keeps it.
    releases = chroot / "opt/dicom-gateway/releases"
    newer = releases / "99.0.0"
    shutil.copytree(releases / __version__, newer, symlinks=True)
    symlink.switch(chroot / "opt/dicom-gateway/current", newer)
    done = _in(chroot, "apt-get", "install", "-y", "-q", "--reinstall", f"/tmp/{deb.name}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert os.readlink(chroot / "opt/dicom-gateway/current") == "releases/99.0.0"

    # A study waiting for the PACS, and a configuration.
    (queue / "spool").mkdir(exist_ok=True)
    (queue / "spool" / "study.dcm").write_bytes(b"waiting for the PACS")
    (chroot / "etc/dicom-gateway/gateway.toml").write_text("# site config\n")

    done = _in(chroot, "apt-get", "remove", "-y", "-q", "dicom-gateway")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (releases / __version__).exists()  # dpkg's release went with the package
    assert (newer / "RELEASE.json").is_file()  # the updater's stays
    assert not (wants / "multi-user.target.wants/dicom-gateway.service").exists()
    assert (chroot / "etc/dicom-gateway/gateway.toml").is_file()

    done = _in(chroot, "apt-get", "purge", "-y", "-q", "dicom-gateway")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (chroot / "etc/dicom-gateway").exists()
    assert not (chroot / "etc/systemd/journald.conf.d/dicom-gateway.conf").exists()
    assert not (chroot / "opt/dicom-gateway").exists()
    assert (queue / "spool" / "study.dcm").read_bytes() == b"waiting for the PACS"
    assert "/var/lib/dicom-gateway is kept" in done.stdout
