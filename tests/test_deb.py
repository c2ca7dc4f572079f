"""The .deb (issue 12 item 6): its rules and layout fast, then the real package built and installed.

The fast tests (``make test``) check the pure rules (Debian versions, Depends, shared-library
modes, the postinst's ``current`` rule), the maintainer scripts with shellcheck, and a package
built by ``release deb`` from a small fake bundle carrying one real ELF library (seconds).

The ``deb`` tests (``make deb-test``; skipped otherwise, tests/conftest.py) build the package
for real with image-build/deb/build.sh (``release build`` of the real virtualenv, then ``release
deb``: minutes), inspect it with dpkg-deb and lintian, and install it with apt into a fresh
Debian 12 root made by mmdebstrap (tarball cached in DEB_TEST_CACHE, default
/var/tmp/dg-deb-cache): the user, the folders, the enabled units, the gateway reaching READY as
its service user, the updater moving ahead, remove and purge keeping the queue and nothing else.
DEB_TEST_REUSE=1 takes the package the last run left in the cache instead of building one
(only for working on these tests: it is not this tree's code).
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import markupsafe._speedups
import pytest

from gateway import __version__
from gateway.update import symlink
from gateway.update.deb import (
    DEBIAN_ARCH,
    IMAGE_ONLY_UNITS,
    UNITS,
    DebError,
    build_deb,
    debian_version,
    depends_for,
    is_shared_library,
    parse_shlibs,
)
from gateway.update.package import configure, decide_current
from tests.peers import free_port, require_tool
from tests.update.repofactory import HOST_ARCH, FakeRelease, make_fake_bundle

TREE = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("DEB_TEST_CACHE", "/var/tmp/dg-deb-cache"))
SCRIPTS = TREE / "image-build" / "deb"
RELEASES = "opt/dicom-gateway/releases"
JOURNALD_CONF = "etc/systemd/journald.conf.d/dicom-gateway.conf"
MTIME = 1_700_000_000  # any fixed SOURCE_DATE_EPOCH

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
    assert "init-system-helpers (>= 1.54~)" in depends_for("3.11.2")  # deb-systemd-helper


def test_dpkg_shlibdeps_output_is_read_as_a_dependency_list() -> None:
    out = "shlibs:Depends=libc6 (>= 2.35), zlib1g (>= 1:1.2.3.4)\nmisc:Foo=bar\n"
    assert parse_shlibs(out) == ("libc6 (>= 2.35)", "zlib1g (>= 1:1.2.3.4)")
    assert parse_shlibs("") == ()


@pytest.mark.parametrize(
    ("name", "shared"),
    [
        ("libfreetype-57f805ba.so.6.20.6", True),
        ("_imaging.cpython-311-x86_64-linux-gnu.so", True),
        ("libscipy_openblas64_-32a4b2a6.so", True),
        ("python3.11", False),
        ("dicom-gateway", False),
        ("sonar.py", False),
    ],
)
def test_shared_libraries_are_told_by_name(name: str, shared: bool) -> None:
    assert is_shared_library(name) is shared


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


def test_every_unit_of_the_tree_is_in_the_package_or_left_out_on_purpose() -> None:
    units = {
        p.name
        for p in (TREE / "systemd").glob("dicom-gateway*")
        if p.is_file() and p.suffix in (".service", ".timer", ".path", ".socket")
    }
    unplaced = sorted(units - set(UNITS) - set(IMAGE_ONLY_UNITS))
    assert unplaced == [], (
        f"{unplaced}: add each to gateway/update/deb.py UNITS (the .deb carries it) or "
        "IMAGE_ONLY_UNITS (appliance only), with the reason"
    )
    assert set(UNITS) <= units  # the package never names a unit the tree lacks
    assert not set(UNITS) & set(IMAGE_ONLY_UNITS)


def test_maintainer_scripts_and_the_build_script_are_shellcheck_clean() -> None:
    shellcheck = require_tool("shellcheck")
    scripts = [SCRIPTS / name for name in ("preinst", "postinst", "prerm", "postrm", "build.sh")]
    done = _run([shellcheck, "--shell=sh", "--severity=style", *map(str, scripts)])
    assert done.returncode == 0, done.stdout + done.stderr


# -- reading a package ------------------------------------------------------------------------


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload, no-any-return]


def _members(deb: Path) -> dict[str, tarfile.TarInfo]:
    """The package's files by path without the leading ``./`` (folders end in ``/``)."""
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(data.stdout)) as tar:
        return {
            m.name.removeprefix("./") + ("/" if m.isdir() else ""): m
            for m in tar.getmembers()
            if m.name not in (".", "./")
        }


def _bundle_tree(bundle: Path) -> dict[str, tarfile.TarInfo]:
    """The bundle's release folder, keyed as in the package (``opt/.../releases/<v>/...``)."""
    with tarfile.open(bundle) as tar:
        members = tar.getmembers()
    out: dict[str, tarfile.TarInfo] = {}
    for m in members:
        top, _, rest = m.name.partition("/")
        if rest:
            out[f"{RELEASES}/{top.removeprefix('dicom-gateway-')}/{rest}"] = m
    return out


def _field(deb: Path, name: str) -> str:
    return _run(["dpkg-deb", "--field", str(deb), name]).stdout.strip()


def _check_layout(deb: Path, bundle: Path, version: str) -> dict[str, tarfile.TarInfo]:
    """What every package must be: the release exactly as the bundle holds it (bar shared
    libraries' x bit), dpkg's marker beside it, units, sysusers, tmpfiles, the journald
    conffile, docs and lintian overrides; root-owned; never ``current`` nor state."""
    members = _members(deb)
    release = f"{RELEASES}/{version}/"
    in_bundle = _bundle_tree(bundle)
    in_deb = {
        p.rstrip("/"): m for p, m in members.items() if p.startswith(release) and p != release
    }
    assert set(in_bundle) == set(in_deb)
    for path, theirs in in_bundle.items():
        ours = in_deb[path]
        assert ours.type == theirs.type, path
        if theirs.issym():
            assert ours.linkname == theirs.linkname, path
        elif theirs.isfile():
            want = 0o644 if is_shared_library(Path(path).name) else theirs.mode & 0o777
            assert ours.mode & 0o777 == want, (path, oct(ours.mode), oct(want))
            assert ours.size == theirs.size, path
    assert members[f"{release}bin/dicom-gateway"].mode & 0o777 == 0o755
    assert f"{RELEASES}/{version}.dpkg" in members
    for path in (
        "usr/lib/systemd/system/dicom-gateway.service",
        "usr/lib/systemd/system/dicom-gateway-update.timer",
        "usr/lib/systemd/system/dicom-gateway-update.service",
        "usr/lib/systemd/system/dicom-gateway-healthcheck.service",
        "usr/lib/sysusers.d/dicom-gateway.conf",
        "usr/lib/tmpfiles.d/dicom-gateway.conf",
        JOURNALD_CONF,
        "usr/share/doc/dicom-gateway/copyright",
        "usr/share/doc/dicom-gateway/changelog.gz",
        "usr/share/lintian/overrides/dicom-gateway",
    ):
        assert members[path].mode & 0o777 == 0o644, path
    assert members["usr/bin/dicom-gateway"].linkname == (
        "/opt/dicom-gateway/current/bin/dicom-gateway"
    )
    for path, m in members.items():
        assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "root", "root"), path
    # dpkg owns one release and never `current` (the postinst and the updater switch it).
    assert not any(p.startswith("opt/dicom-gateway/current") for p in members)
    assert not any(p.startswith(("var/", "srv/", "etc/dicom-gateway")) for p in members)
    assert _run(["dpkg-deb", "-I", str(deb), "conffiles"]).stdout.split() == [f"/{JOURNALD_CONF}"]
    postinst = _run(["dpkg-deb", "-I", str(deb), "postinst"]).stdout
    assert f"VERSION={version}\n" in postinst
    return members


# -- the package from a small bundle (fast) -------------------------------------------------


def test_a_bundle_becomes_a_package_laid_out_as_the_updater_lays_it(tmp_path: Path) -> None:
    require_tool("dpkg-deb")
    require_tool("dpkg-shlibdeps")
    # A real ELF library of this machine (a wheel's, as pip installed it: mode 0755).
    library = Path(markupsafe._speedups.__file__).read_bytes()
    release = FakeRelease(
        "1.2.0rc1",
        files=(("lib/python3.11/site-packages/fake.libs/libfake-0a1b2c3d.so.1.0", library, 0o755),),
    )
    bundle = make_fake_bundle(release, tmp_path)

    built = build_deb(bundle, TREE, tmp_path / "out", mtime=MTIME)

    arch = DEBIAN_ARCH[HOST_ARCH]
    assert built.path.name == f"dicom-gateway_1.2.0~rc1_{arch}.deb"
    assert (built.version, built.arch) == ("1.2.0~rc1", arch)
    assert _field(built.path, "Version") == "1.2.0~rc1"
    assert _field(built.path, "Architecture") == arch
    depends = [d.strip() for d in _field(built.path, "Depends").split(",")]
    py = ".".join(sys.version.split(".")[:2])
    assert depends[:3] == [f"python{py}", "systemd (>= 252)", "init-system-helpers (>= 1.54~)"]
    assert any(d.startswith("libc6 (>= ") for d in depends), depends  # from dpkg-shlibdeps
    assert _field(built.path, "Recommends") == "ca-certificates"
    assert _field(built.path, "Suggests") == "samba, avahi-daemon"
    members = _check_layout(built.path, bundle, "1.2.0rc1")
    lib = members[
        f"{RELEASES}/1.2.0rc1/lib/python3.11/site-packages/fake.libs/libfake-0a1b2c3d.so.1.0"
    ]
    assert lib.mode & 0o777 == 0o644  # Debian policy 8.1; loading needs no x bit
    assert {m.mtime for m in members.values()} == {MTIME}
    # md5sums names every regular file, as dpkg --verify reads it.
    sums = _run(["dpkg-deb", "-I", str(built.path), "md5sums"]).stdout.splitlines()
    files = {p for p, m in members.items() if m.isfile()}
    assert {line.split("  ", 1)[1] for line in sums} == files


def test_a_bundle_of_another_architecture_is_refused(tmp_path: Path) -> None:
    other = "aarch64" if HOST_ARCH == "x86_64" else "x86_64"
    bundle = make_fake_bundle(FakeRelease("1.2.0", arch=other), tmp_path)
    with pytest.raises(DebError, match=f"build the {DEBIAN_ARCH[other]} package on"):
        build_deb(bundle, TREE, tmp_path / "out", mtime=MTIME)
    assert not (tmp_path / "out").exists()


# -- the real package, built and installed (make deb-test) ----------------------------------


@dataclass(frozen=True)
class Built:
    deb: Path
    bundle: Path


@pytest.fixture(scope="module")
def built() -> Built:
    """The package, built once for the module by image-build/deb/build.sh (as `make deb`)."""
    for tool in ("dpkg-deb", "dpkg-shlibdeps", "unshare", "/usr/bin/python3"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} missing")
    work, out = CACHE / "test-work", CACHE / "test-out"
    if os.environ.get("DEB_TEST_REUSE") == "1" and any(out.glob("*.deb")):
        # Working on the tests only: the package the last run built, not this tree's code.
        (deb,) = out.glob("*.deb")
        (bundle,) = work.glob(f"dicom-gateway-{__version__}-*.tar.gz")
        return Built(deb, bundle)
    shutil.rmtree(out, ignore_errors=True)
    env = {
        **os.environ,
        "TRUSTED_ROOT": "lab",
        "WORK": str(work),
        "OUT": str(out),
        "SOURCE_DATE_EPOCH": str(MTIME),
        "GATEWAY": f"env PYTHONPATH={TREE} {sys.executable} -m gateway",
        "PIP": f"{sys.executable} -m pip",
    }
    if (work / "wheels").is_dir() and any((work / "wheels").glob("*.whl")):
        env["WHEELS"] = str(work / "wheels")  # pip's download, kept between runs
    done = _run([str(TREE / "image-build/deb/build.sh")], env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    (deb,) = out.glob("*.deb")
    (bundle,) = work.glob(f"dicom-gateway-{__version__}-*.tar.gz")
    return Built(deb, bundle)


@pytest.mark.deb
def test_the_package_is_named_versioned_and_laid_out_as_the_updater_lays_a_release(
    built: Built,
) -> None:
    arch = _run(["dpkg", "--print-architecture"]).stdout.strip()
    assert built.deb.name == f"dicom-gateway_{debian_version(__version__)}_{arch}.deb"
    assert _field(built.deb, "Version") == debian_version(__version__)
    depends = _field(built.deb, "Depends")
    assert depends.startswith("python3.11, systemd (>= 252), init-system-helpers (>= 1.54~), ")
    # What the copied interpreter and the wheels link against, found by dpkg-shlibdeps.
    for lib in ("libc6 (>= ", "zlib1g", "libexpat1", "libstdc++6"):
        assert lib in depends, depends
    assert _field(built.deb, "Recommends") == "ca-certificates"
    assert _field(built.deb, "Suggests") == "samba, avahi-daemon"  # never pulled in by apt
    members = _check_layout(built.deb, built.bundle, __version__)
    release = f"{RELEASES}/{__version__}/"
    assert f"{release}share/doc/dicom-gateway/operations.md" in members
    assert f"{release}RELEASE.json" in members


@pytest.mark.deb
def test_the_package_builds_reproducibly(built: Built, tmp_path: Path) -> None:
    again = _run(
        [
            *(sys.executable, "-m", "gateway", "release", "deb", str(built.bundle)),
            *("--out", str(tmp_path), "--source", str(TREE), "--mtime", str(MTIME)),
        ],
        env={**os.environ, "PYTHONPATH": str(TREE)},
    )
    assert again.returncode == 0, again.stderr
    assert (tmp_path / built.deb.name).read_bytes() == built.deb.read_bytes()


@pytest.mark.deb
def test_lintian_finds_no_error_and_no_warning(built: Built) -> None:
    lintian = shutil.which("lintian")
    if lintian is None:
        pytest.fail("lintian not installed (apt-get install lintian; make deb-test does it)")
    done = _run([lintian, "--tag-display-limit", "0", str(built.deb)])
    # E: and W: tags only: the package's overrides (each with its reason) silence the ones it
    # has on purpose, and any other tag on any file fails here.
    tags = [line for line in done.stdout.splitlines() if line.startswith(("E:", "W:"))]
    assert tags == [], done.stdout


# -- apt in a fresh Debian 12 root --------------------------------------------------------


@pytest.fixture(scope="module")
def chroot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh Debian 12 (--variant=apt) root, from a tarball cached per machine; apt's
    downloads are kept in the cache too. Bind mounts (apt's archives, /proc) are undone."""
    if os.geteuid() != 0 or not shutil.which("mmdebstrap"):
        pytest.fail("needs root and mmdebstrap (apt-get install mmdebstrap)")
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
    mounts: list[Path] = []
    try:
        for src, dst in [
            (archives, root / "var/cache/apt/archives"),
            (Path("/proc"), root / "proc"),
        ]:
            dst.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", "--bind", str(src), str(dst)], check=True)
            mounts.append(dst)
        yield root
    finally:
        for dst in reversed(mounts):
            if subprocess.run(["umount", str(dst)], check=False).returncode != 0:
                subprocess.run(["umount", "-l", str(dst)], check=False)


def _in(root: Path, *argv: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive"}
    spec = [f"--userspec={user}:{user}"] if user else []
    return _run(["chroot", *spec, str(root), *argv], env=env)


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


# Never compared: apt's and dpkg's own bookkeeping, logs, caches, the mounts.
_VOLATILE = (
    "proc/",
    "tmp/",
    "run/",
    "dev/",
    "var/cache/",
    "var/lib/apt/",
    "var/lib/dpkg/",
    "var/log/",
)


def _paths(root: Path) -> set[str]:
    found: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if rel == "." else f"{rel}/"
        if prefix.startswith(_VOLATILE):
            dirnames[:] = []
            continue
        found.update(prefix + name for name in [*dirnames, *filenames])
    return {p for p in found if not (p + "/").startswith(_VOLATILE)}


SERVICE_CONFIG = """\
[gateway]
ae_title = "EDGE_GW"
state_dir = "/var/lib/dicom-gateway"

[web]
enabled = false

[dicom_listener]
port = {listener}

[[ingest.folder]]
name = "export"
path = "/srv/drop"

[[destination]]
name = "pacs"
ae_title = "PACS"
host = "127.0.0.1"
port = {pacs}
"""


def _ready_as_service_user(root: Path, timeout: float = 60.0) -> list[str]:
    """``dicom-gateway run`` as the unit runs it (the service user, the installed config),
    here without systemd: a notify socket of our own inside the root. Its messages up to
    READY=1, then it is stopped with SIGTERM and must exit 0."""
    folder = root / "run" / "dg-deb-test"
    folder.mkdir(parents=True)
    messages: list[str] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(folder / "notify"))
        (folder / "notify").chmod(0o777)  # the service user sends to it
        proc = subprocess.Popen(
            [
                *("chroot", "--userspec=dicom-gateway:dicom-gateway", str(root)),
                *("/opt/dicom-gateway/current/bin/dicom-gateway", "run"),
                *("--config", "/etc/dicom-gateway/gateway.toml"),
            ],
            env={
                "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                "NOTIFY_SOCKET": "/run/dg-deb-test/notify",
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + timeout
            while not any(m.startswith("READY=1") for m in messages):
                assert proc.poll() is None, proc.communicate()[0].decode()
                assert time.monotonic() < deadline, messages
                notify.settimeout(0.5)
                try:
                    messages.append(notify.recv(65536).decode())
                except TimeoutError:
                    continue
            proc.terminate()
            assert proc.wait(45) == 0, proc.communicate()[0].decode()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
    shutil.rmtree(folder)
    return messages


def _stat(root: Path, path: str) -> str:
    return _ok(_in(root, "stat", "-c", "%a %U:%G", path)).strip()


@pytest.mark.deb
def test_apt_installs_removes_and_purges_it_in_a_debian_12_root_keeping_the_queue(
    built: Built, chroot: Path
) -> None:
    deb = built.deb
    shutil.copy(deb, chroot / "tmp" / deb.name)
    _ok(_in(chroot, "apt-get", "update", "-qq"))
    # What the package needs comes first, so that what it leaves behind after purge can be
    # told from what its dependencies (systemd, python3.11) leave.
    _ok(
        _in(
            chroot,
            "apt-get",
            "satisfy",
            "-y",
            "-q",
            "--no-install-recommends",
            _field(deb, "Depends"),
        )
    )
    before = _paths(chroot)

    # -- install: the one command of docs/operations.md
    out = _ok(
        _in(chroot, "apt-get", "install", "-y", "-q", "--no-install-recommends", f"/tmp/{deb.name}")
    )
    assert "1 newly installed" in out  # nothing else was missing from Depends
    assert "not started" in out and "dicom-gateway setup-token" in out  # no gateway.toml yet
    assert os.readlink(chroot / "opt/dicom-gateway/current") == f"releases/{__version__}"
    assert _ok(_in(chroot, "dicom-gateway", "--version")).strip() == f"dicom-gateway {__version__}"
    passwd = _ok(_in(chroot, "getent", "passwd", "dicom-gateway")).strip().split(":")
    assert (passwd[5], passwd[6]) == ("/var/lib/dicom-gateway", "/usr/sbin/nologin")
    assert "dialout" in _ok(_in(chroot, "id", "-nG", "dicom-gateway")).split()
    # tmpfiles.d applied: owners and modes as docs/operations.md lists them.
    for path, want in [
        ("/opt/dicom-gateway", "755 root:root"),
        ("/opt/dicom-gateway/releases", "755 root:root"),
        ("/var/lib/dicom-gateway", "750 dicom-gateway:dicom-gateway"),
        ("/var/lib/dicom-gateway/update", "770 root:dicom-gateway"),
        ("/etc/dicom-gateway", "770 root:dicom-gateway"),
        ("/etc/credstore", "700 root:root"),
        ("/srv/drop", "2770 dicom-gateway:dicom-gateway"),
    ]:
        assert _stat(chroot, path) == want, path
    wants = chroot / "etc/systemd/system"
    assert (wants / "multi-user.target.wants/dicom-gateway.service").is_symlink()
    assert (wants / "timers.target.wants/dicom-gateway-update.timer").is_symlink()
    assert _ok(_in(chroot, "systemctl", "is-enabled", "dicom-gateway.service")).strip() == "enabled"
    # No systemd runs in a chroot: the units are checked by this Debian's systemd-analyze
    # (syntax, and every ExecStart= binary exists and is executable).
    units = [
        f"/usr/lib/systemd/system/{u}"
        for u in (
            "dicom-gateway.service",
            "dicom-gateway-update.service",
            "dicom-gateway-update.timer",
            "dicom-gateway-healthcheck.service",
        )
    ]
    _ok(_in(chroot, "systemd-analyze", "verify", *units))

    # -- a configuration, checked and run as the service user
    config = chroot / "etc/dicom-gateway/gateway.toml"
    config.write_text(SERVICE_CONFIG.format(listener=free_port(), pacs=free_port()))
    _ok(_in(chroot, "chown", "root:dicom-gateway", "/etc/dicom-gateway/gateway.toml"))
    config.chmod(0o640)
    checked = _ok(
        _in(
            chroot,
            "dicom-gateway",
            "check-config",
            "--config",
            "/etc/dicom-gateway/gateway.toml",
            user="dicom-gateway",
        )
    )
    assert "gateway.toml: OK" in checked
    messages = _ready_as_service_user(chroot)
    assert any("STATUS=pacs: 0 queued, 0 failed" in m for m in messages), messages

    # -- the updater moves the box to a newer release; a reinstall of the package keeps it
    releases = chroot / RELEASES
    newer = releases / "99.0.0"
    shutil.copytree(releases / __version__, newer, symlinks=True)
    symlink.switch(chroot / "opt/dicom-gateway/current", newer)
    # dpkg's files are as it left them: the updater's own next to them change nothing for it.
    assert _ok(_in(chroot, "dpkg", "--verify", "dicom-gateway")) == ""
    _ok(_in(chroot, "apt-get", "install", "-y", "-q", "--reinstall", f"/tmp/{deb.name}"))
    assert os.readlink(chroot / "opt/dicom-gateway/current") == "releases/99.0.0"

    # -- remove: the package's files go, the configuration and the queue stay
    queue = chroot / "var/lib/dicom-gateway"
    (queue / "spool" / "study.dcm").write_bytes(b"waiting for the PACS")
    _ok(_in(chroot, "apt-get", "remove", "-y", "-q", "dicom-gateway"))
    assert not (releases / __version__).exists()  # dpkg's release went with the package
    assert not (releases / f"{__version__}.dpkg").exists()
    assert (newer / "RELEASE.json").is_file()  # the updater's stays, and `current` with it
    assert not (chroot / "usr/lib/systemd/system/dicom-gateway.service").exists()
    assert not (wants / "multi-user.target.wants/dicom-gateway.service").exists()
    assert config.is_file() and (chroot / JOURNALD_CONF).is_file()  # conffiles stay on remove
    status = _ok(_in(chroot, "dpkg-query", "-W", "-f=${db:Status-Abbrev}", "dicom-gateway"))
    assert status.strip() == "rc"  # removed, configuration files kept

    # -- purge: nothing of ours is left but the queue (and the system user, as Debian does)
    out = _ok(_in(chroot, "apt-get", "purge", "-y", "-q", "dicom-gateway"))
    assert "/var/lib/dicom-gateway is kept" in out
    assert (queue / "spool" / "study.dcm").read_bytes() == b"waiting for the PACS"
    left = sorted(_paths(chroot) - before)
    assert left == sorted(
        p for p in left if p == "var/lib/dicom-gateway" or p.startswith("var/lib/dicom-gateway/")
    ), left
    assert "var/lib/dicom-gateway/spool/study.dcm" in left
    assert not (chroot / "etc/dicom-gateway").exists()
    assert not (chroot / "opt/dicom-gateway").exists()
    assert _in(chroot, "dpkg-query", "-W", "dicom-gateway").returncode != 0  # dpkg forgot it
    assert _in(chroot, "getent", "passwd", "dicom-gateway").returncode == 0  # owns the queue

    # -- and installs again over what purge kept: the same user, the queue untouched
    _ok(
        _in(chroot, "apt-get", "install", "-y", "-q", "--no-install-recommends", f"/tmp/{deb.name}")
    )
    assert os.readlink(chroot / "opt/dicom-gateway/current") == f"releases/{__version__}"
    assert (wants / "multi-user.target.wants/dicom-gateway.service").is_symlink()
    assert (queue / "spool" / "study.dcm").read_bytes() == b"waiting for the PACS"
