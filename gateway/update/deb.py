"""The .deb: a release bundle, its units, sysusers and tmpfiles, for a Debian 12 box of the site's.

``build_deb(bundle, source, out_dir)`` wraps a bundle made by ``release build`` (the same
tarball the updater installs) into ``dicom-gateway_<version>_<arch>.deb``. What goes where,
and why (docs/operations.md, "Install on an existing Debian 12 / Raspberry Pi OS machine",
says it for the administrator):

- ``/opt/dicom-gateway/releases/<version>/``: the bundle, unpacked by the updater's own
  ``installer.unpack``, so the tree is exactly what an update would leave. dpkg owns these files
  and nothing else under ``/opt/dicom-gateway``: not ``current`` (the postinst and the updater
  switch it, see gateway/update/package.py) and not the releases the updater adds later.
- ``/opt/dicom-gateway/releases/<version>.dpkg``: a marker (dpkg's, like the release) telling
  the updater that dpkg owns that release, so its pruning leaves it to ``apt remove``.
- ``/usr/lib/systemd/system/``: the units. A package's units belong there; ``/etc/systemd/
  system`` is the administrator's, whose changes go in drop-ins (``systemctl edit``) that dpkg
  never touches, so the units are not conffiles and an upgrade replaces them whole.
- ``/usr/lib/sysusers.d/``, ``/usr/lib/tmpfiles.d/``: the same reasoning (an ``/etc`` file of
  the same name overrides them).
- ``/etc/systemd/journald.conf.d/dicom-gateway.conf``: a conffile. It changes the host's
  journal (persistent, bounded), which on a site's own OS image is the site's call: the
  administrator may edit or delete it, and dpkg keeps that choice across upgrades.
- ``/usr/bin/dicom-gateway`` -> ``/opt/dicom-gateway/current/bin/dicom-gateway``.
- ``/usr/share/doc/dicom-gateway/``: copyright, changelog, README.Debian, ``examples/`` (the
  privileged-port drop-in, the udev rule, the device profiles) and ``manual`` -> the running
  release's documentation (``/opt/dicom-gateway/current/share/doc/dicom-gateway``).
- ``/usr/share/lintian/overrides/dicom-gateway``: the lintian tags the package earns on
  purpose, each with its reason (``LINTIAN_OVERRIDES``).

``Depends:`` is ``python3.X`` (the minor the venv was built with), systemd, and what
``dpkg-shlibdeps`` finds the release's ELF files need from the box (libc6, zlib1g, libexpat1
for the copied interpreter; libstdc++6, libgcc-s1 for some wheels); the libraries a manylinux
wheel carries in its ``*.libs`` folder are found through their RPATH inside the package.

The package is reproducible: every file's mtime is ``mtime`` (SOURCE_DATE_EPOCH), modes are
0755/0644, owners root (``dpkg-deb --root-owner-group``), and dpkg-deb sorts the members.
Shared libraries are 0644 (Debian policy 8.1; the loader maps them without the x bit), the
only mode that differs from the tree the updater unpacks; their bytes are the wheel's, so the
``RECORD`` hashes of each ``*.dist-info`` still hold.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from packaging.version import Version

from gateway.update.bundle import DEFAULT_MTIME, BundleError, read_release_info
from gateway.update.installer import DPKG_MARKER, unpack

PACKAGE = "dicom-gateway"
RELEASES = Path("opt/dicom-gateway/releases")
# Debian's names for the machines bundles are built on (gateway.update.repo.ARCHES).
DEBIAN_ARCH: Mapping[str, str] = {"x86_64": "amd64", "aarch64": "arm64"}
UNITS = (
    "dicom-gateway.service",
    "dicom-gateway-healthcheck.service",
    "dicom-gateway-update.service",
    "dicom-gateway-update.timer",
)
# Units of systemd/ the .deb leaves out: they make the machine the appliance (first boot on the
# card, the box's network and its rollback timer) and would take over the network, hostname and
# first-boot files of a machine that is the site's. Every unit in systemd/ is in UNITS or here
# (tests/test_deb.py): a new unit is placed in the package, or left out, on purpose.
IMAGE_ONLY_UNITS = (
    "dicom-gateway-firstboot.service",
    "dicom-gateway-network.service",
    "dicom-gateway-network-apply.path",
    "dicom-gateway-network-apply.service",
    "dicom-gateway-network-rollback.service",
    "dicom-gateway-network-rollback.timer",
    # The box's own smbd and CIFS mount: on a site's machine Samba and its mounts are the site
    # admin's (samba is only Suggested), and our smbd on port 445 would collide with theirs.
    "dicom-gateway-smb.service",
    # It reloads the share unit above when gateway.toml changes: nothing to follow without it.
    "dicom-gateway-smb-config.path",
    "dicom-gateway-smb-config.service",
    "dicom-gateway-cifs.service",
)
JOURNALD_CONF = Path("etc/systemd/journald.conf.d/dicom-gateway.conf")
MAINTAINER_SCRIPTS = ("preinst", "postinst", "prerm", "postrm")
DEFAULT_MAINTAINER = "DICOM edge gateway maintainers <maintainers@dicom-gateway.example>"
# Run time only: the venv is built, so neither python3-venv nor pip is needed on the box. The
# bundle's interpreter is a copy of the build machine's python3.X, which runs on the box's
# standard library of that same minor version (/usr/lib/python3.X): python3.X, not python3,
# whose minor moves with the Debian release. Every wheel brings its own native libraries
# (manylinux); systemd runs the units, sysusers and tmpfiles and answers systemctl/journalctl;
# the maintainer scripts enable, start and stop units with init-system-helpers' deb-systemd-*
# (as debhelper's would; 1.54 has every verb they use).
BASE_DEPENDS = ("systemd (>= 252)", "init-system-helpers (>= 1.54~)")
RECOMMENDS = ("ca-certificates",)
# Only suggested: apt installs Recommends by default, and on a machine that is the site's a
# package must not bring a file server or an mDNS responder along (Debian's samba starts smbd
# with its default shares at once). The appliance image installs both itself.
SUGGESTS = ("samba", "avahi-daemon")


class DebError(Exception):
    """The package could not be built; the message says what to change."""


@dataclass(frozen=True)
class DebInfo:
    """What was built."""

    path: Path
    version: str  # the Debian version
    arch: str  # the Debian architecture


def debian_version(version: str) -> str:
    """A PEP 440 version as a Debian version that sorts the same way.

    Pre-releases and dev releases sort before the release in both, which Debian spells with
    ``~`` (``1.4.0rc1`` -> ``1.4.0~rc1``, ``1.4.0.dev2`` -> ``1.4.0~dev2``); a post-release
    sorts after it (``1.4.0.post1`` -> ``1.4.0+post1``); an epoch stays one. A local version
    (``+abc``) is refused: it names no release.
    """
    v = Version(version)
    if v.local is not None:
        raise DebError(f"{version}: a local version is not a release")
    out = ".".join(str(part) for part in v.release)
    if v.pre is not None:
        out += f"~{v.pre[0]}{v.pre[1]}"
    if v.post is not None:
        out += f"+post{v.post}"
    if v.dev is not None:
        out += f"~dev{v.dev}"
    return f"{v.epoch}:{out}" if v.epoch else out


def depends_for(python: str) -> tuple[str, ...]:
    """Depends: for a bundle whose RELEASE.json says ``python`` (e.g. "3.11.2")."""
    major, minor = python.split(".")[:2]
    return (f"python{major}.{minor}", *BASE_DEPENDS)


def control_text(
    *, version: str, arch: str, maintainer: str, depends: Sequence[str], installed_kib: int
) -> str:
    """The DEBIAN/control file."""
    return (
        f"Package: {PACKAGE}\n"
        f"Version: {version}\n"
        f"Architecture: {arch}\n"
        f"Maintainer: {maintainer}\n"
        f"Installed-Size: {installed_kib}\n"
        f"Depends: {', '.join(depends)}\n"
        f"Recommends: {', '.join(RECOMMENDS)}\n"
        f"Suggests: {', '.join(SUGGESTS)}\n"
        "Section: net\n"
        "Priority: optional\n"
        "Description: DICOM edge gateway: legacy modality output to PACS\n"
        " Turns what a legacy modality exports (files in a folder or share, serial\n"
        " output, print jobs) into conformant DICOM and stores it to the PACS over\n"
        " TLS, with a durable queue, a worklist cache and a web panel.\n"
        " .\n"
        " The release lives in /opt/dicom-gateway/releases/<version>, the layout of\n"
        " the gateway's own signed updater, which may install later releases beside it.\n"
    )


def changelog_text(deb_version: str, maintainer: str, mtime: int) -> str:
    """A native package's changelog: one entry for the release (the project's CHANGELOG.md is
    in the release's documentation)."""
    when = datetime.fromtimestamp(mtime, tz=UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    return (
        f"{PACKAGE} ({deb_version}) stable; urgency=medium\n\n"
        f"  * Release {deb_version}; see /usr/share/doc/{PACKAGE}/manual/ for what changed.\n\n"
        f" -- {maintainer}  {when}\n"
    )


def copyright_text(mtime: int) -> str:
    """debian/copyright (machine-readable format), the year taken from the release's time."""
    year = datetime.fromtimestamp(mtime, tz=UTC).year
    return (
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        "Upstream-Name: dicom-gateway\n"
        "Comment: The gateway's own code is proprietary. The Python distributions it runs on\n"
        " are installed in /opt/dicom-gateway/releases/<version>/lib/python3.*/site-packages;\n"
        " each one's licence is in its *.dist-info folder there.\n"
        "\n"
        "Files: *\n"
        f"Copyright: {year} the DICOM edge gateway maintainers\n"
        "License: LicenseRef-Proprietary\n"
        " All rights reserved; use under the terms of the supply contract.\n"
    )


# What lintian reports about the package that is so by design. Every tag is limited to the
# release folder (a tag on any other file still shows), and says why it stays: the release is
# the signed updater's tree, byte for byte, so it cannot be "debianised" without the .deb box
# and the updated box running different code.
RELEASE_GLOB = "opt/dicom-gateway/releases/*"
LINTIAN_OVERRIDES = f"""\
# The release lives where the gateway's own updater installs releases (/opt/dicom-gateway,
# docs/updates.md). This package is not for the Debian archive: FHS 3.13 gives /opt to add-on
# software, and a box installed from the .deb must take the same signed updates as the image.
{PACKAGE}: dir-or-file-in-opt [opt/dicom-gateway/*]
# The bundle is compiled at build time: the appliance's root is read-only and the unit's
# sandbox (ProtectSystem=strict) forbids writing *.pyc, so without them every start would
# compile in memory. dpkg lists and removes them with the release.
{PACKAGE}: package-installs-python-pycache-dir [{RELEASE_GLOB}]
# Wheels from PyPI (hash-pinned), unchanged: stripping them would make the .deb's release other
# bytes than the bundle the update repository signs, and than each *.dist-info/RECORD names;
# manylinux wheels carry their own copies of libraries (pillow.libs, numpy.libs) by design,
# linked by RPATH.
{PACKAGE}: unstripped-binary-or-object [{RELEASE_GLOB}]
{PACKAGE}: embedded-library * [{RELEASE_GLOB}]
{PACKAGE}: library-not-linked-against-libc [{RELEASE_GLOB}]
{PACKAGE}: shared-library-lacks-prerequisites [{RELEASE_GLOB}]
# The venv's interpreter is a copy of Debian's own python3.X binary (venv --copies: the bundle
# holds no link leaving its folder), built by Debian as it is; the venv's scripts name it by its
# path in the release, which is what a venv is. It runs on python3.X's standard library, which
# Depends: names.
{PACKAGE}: hardening-no-pie [{RELEASE_GLOB}]
{PACKAGE}: wrong-path-for-interpreter * [{RELEASE_GLOB}]
{PACKAGE}: python3-script-but-no-python3-dep * [{RELEASE_GLOB}]
# Files of third-party wheels: modules with a #! line that are imported, never run; test data.
{PACKAGE}: script-not-executable [{RELEASE_GLOB}]
{PACKAGE}: unusual-interpreter * [{RELEASE_GLOB}]
{PACKAGE}: package-contains-vcs-control-file [{RELEASE_GLOB}]
{PACKAGE}: package-contains-timestamped-gzip * [{RELEASE_GLOB}]
# The command's manual is the operator's guide (/usr/share/doc/{PACKAGE}/manual/) and
# `dicom-gateway --help`; there is no separate man page to drift from them.
{PACKAGE}: no-manual-page [usr/bin/{PACKAGE}]
"""

README_DEBIAN = """\
dicom-gateway for Debian
========================

The release is in /opt/dicom-gateway/releases/<version>/ and runs through the symlink
/opt/dicom-gateway/current, exactly as the gateway's signed updater lays it out. The updater
may install later releases beside it and switch `current`; the rules by which dpkg and the
updater share /opt/dicom-gateway are in manual/operations.md ("Install on an existing
Debian 12 / Raspberry Pi OS machine").

In short:
- dpkg owns releases/<package version>/ only; `current` is switched by the postinst only when
  there is none, or the package's release is newer than the one in use.
- apt remove stops and disables the services and removes the package's release; releases the
  updater installed stay.
- apt purge also removes /etc/dicom-gateway (the configuration), the releases the updater
  installed and `current`. It never removes /var/lib/dicom-gateway: the queue there may hold
  studies not yet at the PACS. Remove it by hand once the queue is empty (operations.md).

Configuration: /etc/dicom-gateway/gateway.toml (manual/configuration.md). Once it exists:
  sudo systemctl start dicom-gateway
  sudo dicom-gateway setup-token --config /etc/dicom-gateway/gateway.toml
"""


def build_deb(
    bundle: Path,
    source: Path,
    out_dir: Path,
    *,
    maintainer: str = DEFAULT_MAINTAINER,
    mtime: int = DEFAULT_MTIME,
    build_machine: str = platform.machine(),
) -> DebInfo:
    """Build the .deb for ``bundle`` into ``out_dir`` (see the module docstring); the bundle
    must be of ``build_machine``'s architecture."""
    try:
        info = read_release_info(bundle)
    except BundleError as exc:
        raise DebError(str(exc)) from None
    arch = DEBIAN_ARCH.get(info.arch)
    if arch is None:
        raise DebError(f"{bundle}: arch {info.arch} has no Debian package (one of {DEBIAN_ARCH})")
    if info.arch != build_machine:
        # Depends: comes from dpkg-shlibdeps, which reads the libraries of the machine it runs
        # on: a package of another architecture would name this one's.
        raise DebError(
            f"{bundle} is a {info.arch} release and this machine is {build_machine}: build the "
            f"{arch} package on a {arch} machine (docs/operations.md, arm64)"
        )
    deb_version = debian_version(info.version)
    with tempfile.TemporaryDirectory(prefix="dicom-gateway-deb-") as tmp:
        root = Path(tmp) / "root"
        unpack(bundle, root / RELEASES, info.version)  # exactly as the updater lays it out
        (root / RELEASES / f"{info.version}{DPKG_MARKER}").write_text(
            f"release {info.version} is dpkg's ({PACKAGE} {deb_version}): apt removes it\n"
        )
        _lay_files(root, source, deb_version, maintainer, mtime)
        (root / "DEBIAN").mkdir()
        depends = (*depends_for(info.python), *shlib_depends(root))
        _control(root, source, info.version, deb_version, arch, maintainer, depends)
        _normalise(root, mtime)
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / f"{PACKAGE}_{deb_version.split(':')[-1]}_{arch}.deb"
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(mtime)}
        done = subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(out)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise DebError(f"dpkg-deb failed ({done.returncode}): {done.stderr.strip()}")
    return DebInfo(out, deb_version, arch)


def _lay_files(root: Path, source: Path, deb_version: str, maintainer: str, mtime: int) -> None:
    systemd = source / "systemd"
    for unit in UNITS:
        _copy(systemd / unit, root / "usr/lib/systemd/system" / unit)
    _copy(systemd / "sysusers.d/dicom-gateway.conf", root / "usr/lib/sysusers.d/dicom-gateway.conf")
    _copy(systemd / "tmpfiles.d/dicom-gateway.conf", root / "usr/lib/tmpfiles.d/dicom-gateway.conf")
    _copy(systemd / "journald.conf.d/dicom-gateway.conf", root / JOURNALD_CONF)
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/dicom-gateway").symlink_to("/opt/dicom-gateway/current/bin/dicom-gateway")

    doc = root / "usr/share/doc" / PACKAGE
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(copyright_text(mtime))
    (doc / "README.Debian").write_text(README_DEBIAN)
    (doc / "changelog.gz").write_bytes(
        gzip.compress(changelog_text(deb_version, maintainer, mtime).encode(), 9, mtime=0)
    )
    (doc / "manual").symlink_to("/opt/dicom-gateway/current/share/doc/dicom-gateway")
    examples = doc / "examples"
    _copy(
        systemd / "dicom-gateway.service.d/privileged-port.conf",
        examples / "privileged-port.conf",
    )
    _copy(source / "hardware/udev/99-legacy-modality.rules", examples / "99-legacy-modality.rules")
    for profile in sorted((source / "hardware/profiles").glob("*.toml")):
        _copy(profile, examples / "profiles" / profile.name)
    overrides = root / "usr/share/lintian/overrides" / PACKAGE
    overrides.parent.mkdir(parents=True)
    overrides.write_text(LINTIAN_OVERRIDES)


def _control(
    root: Path,
    source: Path,
    version: str,
    deb_version: str,
    arch: str,
    maintainer: str,
    depends: Sequence[str],
) -> None:
    debian = root / "DEBIAN"
    debian.mkdir(exist_ok=True)
    sums = []
    kib = 0
    for path in _walk(root):
        rel = path.relative_to(root)
        if rel.parts[0] == "DEBIAN":
            continue
        # Installed-Size as dpkg-gencontrol counts it: 1 KiB per folder and link, each file
        # rounded up to whole KiB.
        if path.is_file() and not path.is_symlink():
            kib += -(-path.stat().st_size // 1024)
            sums.append(f"{hashlib.md5(path.read_bytes()).hexdigest()}  {rel.as_posix()}\n")  # noqa: S324 - dpkg's md5sums format
        else:
            kib += 1
    (debian / "md5sums").write_text("".join(sums))
    (debian / "conffiles").write_text(f"/{JOURNALD_CONF.as_posix()}\n")
    (debian / "control").write_text(
        control_text(
            version=deb_version,
            arch=arch,
            maintainer=maintainer,
            depends=depends,
            installed_kib=kib,
        )
    )
    scripts = source / "image-build" / "deb"
    for name in MAINTAINER_SCRIPTS:
        text = (scripts / name).read_text().replace("@VERSION@", version)
        (debian / name).write_text(text)
        (debian / name).chmod(0o755)


def _copy(src: Path, dest: Path) -> None:
    if not src.is_file():
        raise DebError(f"{src}: missing from the source tree")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)


def _walk(root: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        found.extend(base / name for name in [*dirnames, *filenames])
    return sorted(found)


def is_shared_library(name: str) -> bool:
    """``libfoo.so``, ``libfoo.so.6.2``, ``_ext.cpython-311-x86_64-linux-gnu.so``."""
    return name.endswith(".so") or ".so." in name


def _normalise(root: Path, mtime: int) -> None:
    """Modes 0755 (folders, executables) or 0644 (files, shared libraries: policy 8.1), every
    mtime ``mtime``: reproducible."""
    for path in [root, *_walk(root)]:
        if path.is_symlink():
            os.utime(path, (mtime, mtime), follow_symlinks=False)
            continue
        executable = path.is_dir() or (
            path.stat().st_mode & 0o111 and not is_shared_library(path.name)
        )
        path.chmod(0o755 if executable else 0o644)
        os.utime(path, (mtime, mtime))


def _is_elf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"\x7fELF"


def parse_shlibs(output: str) -> tuple[str, ...]:
    """The dependencies in ``dpkg-shlibdeps -O`` output (``shlibs:Depends=a (>= 1), b``)."""
    for line in output.splitlines():
        if line.startswith("shlibs:Depends="):
            value = line.removeprefix("shlibs:Depends=").strip()
            return tuple(dep.strip() for dep in value.split(",") if dep.strip())
    return ()


def shlib_depends(root: Path) -> tuple[str, ...]:
    """What the ELF files under ``root`` need from the box's packages, by ``dpkg-shlibdeps``.

    It reads ``debian/control`` of a source package, so it runs in a scratch folder holding a
    minimal one. ``root/DEBIAN`` must exist: that is how it knows the package's root, inside
    which it resolves an RPATH of ``$ORIGIN`` (a wheel's own libraries, which need nothing).
    """
    elves = sorted(str(p) for p in _walk(root) if p.is_file() and not p.is_symlink() and _is_elf(p))
    if not elves:
        return ()
    with tempfile.TemporaryDirectory(prefix="dicom-gateway-shlibs-") as scratch:
        (Path(scratch) / "debian").mkdir()
        (Path(scratch) / "debian/control").write_text(
            f"Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: any\n"
        )
        try:
            done = subprocess.run(
                ["dpkg-shlibdeps", "-O", "--ignore-missing-info", *elves],
                cwd=scratch,
                capture_output=True,
                text=True,
                check=False,
            )
        except FileNotFoundError:
            raise DebError("dpkg-shlibdeps missing: apt-get install dpkg-dev") from None
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if ": error: " in line]
        raise DebError(f"dpkg-shlibdeps failed ({done.returncode}): {'; '.join(errors[:5])}")
    return parse_shlibs(done.stdout)
