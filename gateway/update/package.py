"""The ``current`` symlink when a release arrives by ``apt`` (the .deb) instead of the updater.

A box installed from the .deb has two installers: dpkg, which owns the files of the release the
package carries (``releases/<package version>/``) and nothing else under
``/opt/dicom-gateway``, and the updater, which unpacks later signed releases next to it and
switches ``current``. The package's postinst asks this module what to do with ``current``
(``python -I -m gateway.update.package configure --version V``, run with the interpreter of the
release the package just unpacked); the rules, in order:

1. An install of the updater that is not finished (``install.json`` in any state but
   ``downloading`` or ``reported``): ``current`` is left alone. The updater's state machine is
   in charge of it until it has concluded (resume() converges it), and a switch under its feet
   would turn its trial or its rollback into nonsense. (preinst refuses to unpack then, too.)
2. ``current`` missing, or naming a release folder that does not exist: it is pointed at the
   package's release. (A first install; or dpkg just removed the older package's release it
   pointed at.)
3. ``current`` names the package's release: nothing to do.
4. The package's release is newer (PEP 440) than the one ``current`` names: it is pointed at the
   package's release. Installing a newer package is the administrator's deliberate act.
5. Otherwise (the updater already moved the box to a newer release, or ``current`` names a
   folder that is not a version): ``current`` is left alone. An ``apt upgrade`` never takes a
   box back behind the release its updater committed.

The switch is the updater's own (``gateway.update.symlink.switch``: relative link, atomic
rename, directory fsync'd), so both installers leave the same link.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from gateway.update import symlink
from gateway.update.status import DOWNLOADING, REPORTED, read_install

INSTALL_ROOT = Path("/opt/dicom-gateway")
STATE_DIR = Path("/var/lib/dicom-gateway")


@dataclass(frozen=True)
class CurrentDecision:
    """Whether to point ``current`` at the package's release, and why (the postinst says it)."""

    switch: bool
    reason: str


def decide_current(
    package_version: str, in_use: str | None, unfinished_install: str | None
) -> CurrentDecision:
    """Apply the module's rules. ``in_use``: the release ``current`` names, None when there is
    none (no link, or a link to a missing folder); ``unfinished_install``: the version of an
    updater install under way, else None."""
    if unfinished_install is not None:
        return CurrentDecision(
            False,
            f"the updater's install of {unfinished_install} is not finished; current left to it",
        )
    if in_use is None:
        return CurrentDecision(True, "no release in use")
    if in_use == package_version:
        return CurrentDecision(False, f"{package_version} already in use")
    try:
        newer = Version(package_version) > Version(in_use)
    except InvalidVersion:
        return CurrentDecision(False, f"current names {in_use!r}, not a release; left alone")
    if newer:
        return CurrentDecision(True, f"{package_version} is newer than {in_use}, in use until now")
    return CurrentDecision(
        False, f"the updater runs {in_use}, newer than this package's {package_version}; left alone"
    )


def unfinished_install(state_dir: Path) -> str | None:
    """The version of an updater install that has not concluded, else None."""
    record = read_install(state_dir)
    if record is None or record.state in (DOWNLOADING, REPORTED):
        return None
    return record.version


def configure(version: str, install_root: Path, state_dir: Path) -> CurrentDecision:
    """Decide on ``current`` for the package's release ``version`` and carry it out."""
    link = install_root / "current"
    release = install_root / "releases" / version
    if not release.is_dir():
        raise FileNotFoundError(f"{release}: the package's release is not there")
    symlink.remove_stale_links(link)
    decision = decide_current(version, symlink.current_release(link), unfinished_install(state_dir))
    if decision.switch:
        symlink.switch(link, release)
    return decision


def main(argv: Sequence[str] | None = None) -> int:
    """``configure --version V``: the postinst's step; prints what it did to ``current``."""
    parser = argparse.ArgumentParser(prog="python -m gateway.update.package")
    sub = parser.add_subparsers(dest="cmd", required=True)
    conf = sub.add_parser("configure", help="point current at the package's release, or not")
    conf.add_argument("--version", required=True, help="the package's release (folder name)")
    conf.add_argument("--install-root", type=Path, default=INSTALL_ROOT)
    conf.add_argument("--state-dir", type=Path, default=STATE_DIR)
    args = parser.parse_args(argv)
    decision = configure(args.version, args.install_root, args.state_dir)
    target = f"releases/{args.version}" if decision.switch else "unchanged"
    print(f"dicom-gateway: current -> {target} ({decision.reason})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
