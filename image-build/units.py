"""Where each file of the project's ``systemd/`` goes in the image, and which units to enable.

    python3 image-build/units.py SYSTEMD_DIR ROOT   # copies, prints the units to enable

The destinations are docs/operations.md's: units to ``/etc/systemd/system/``, drop-ins to
``/etc/systemd/system/<unit>.d/``, sysusers.d and tmpfiles.d to ``/usr/lib/``, journald.conf.d
to ``/etc/systemd/``. Every ``*.service`` and ``*.timer`` is installed, whoever wrote it (the
first-boot, network and share units land here when their branches merge); those with an
``[Install]`` section are enabled. A file is left out only if NOT_INSTALLED names it, with why.
"""

from __future__ import annotations

import configparser
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

# Relative to systemd/. Each needs a reason: tests/image_build checks every other file is placed.
NOT_INSTALLED: dict[str, str] = {
    "dicom-gateway.service.d/privileged-port.conf": (
        "only for a DICOM port below 1024; the image's default port is above it"
    ),
}


@dataclass(frozen=True)
class Placement:
    """One file of systemd/ and where it lands in the root file system."""

    source: str  # relative to systemd/
    dest: str  # absolute path in the image
    enable: bool  # a unit with an [Install] section


def has_install_section(text: str) -> bool:
    """Whether a unit file can be enabled (systemctl enable needs [Install])."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser.has_section("Install") and bool(parser.items("Install"))


def placements(systemd_dir: Path) -> list[Placement]:
    """Every file of ``systemd_dir`` with its destination, sorted; NOT_INSTALLED left out."""
    out = []
    for path in sorted(p for p in systemd_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(systemd_dir).as_posix()
        if rel in NOT_INSTALLED:
            continue
        top = rel.split("/", 1)[0]
        if "/" not in rel and path.suffix in (".service", ".timer", ".socket", ".path"):
            out.append(Placement(rel, f"/etc/systemd/system/{rel}",
                                 has_install_section(path.read_text())))
        elif top in ("sysusers.d", "tmpfiles.d"):
            out.append(Placement(rel, f"/usr/lib/{rel}", False))
        elif top == "journald.conf.d":
            out.append(Placement(rel, f"/etc/systemd/{rel}", False))
        elif top.endswith((".service.d", ".timer.d")):
            out.append(Placement(rel, f"/etc/systemd/system/{rel}", False))
        else:
            raise ValueError(f"systemd/{rel}: no rule says where it goes in the image")
    return out


def install(systemd_dir: Path, root: Path) -> list[str]:
    """Copy every placement under ``root`` (mode 0644); the unit names to enable."""
    enable = []
    for placement in placements(systemd_dir):
        dest = root / placement.dest.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(systemd_dir / placement.source, dest)
        dest.chmod(0o644)
        if placement.enable:
            enable.append(Path(placement.source).name)
    return enable


if __name__ == "__main__":
    print("\n".join(install(Path(sys.argv[1]), Path(sys.argv[2]))))
