"""The recipe's own consistency, checked before a build (build.sh) and in .ci/run (tests/image_build).

    python3 image-build/checks.py      # prints each problem, exit 1 if there is one

Each check takes the text or table it judges and returns its problems as strings (empty: fine),
so a test can hand it a broken copy and see it complain. What they hold the recipe to:

- lock: every runtime dependency of pyproject.toml, plus setuptools and wheel, is pinned
  ``name==version`` with a ``--hash=sha256:`` in requirements-arm64.lock, at a version the
  dependency's specifier admits; no line is unpinned or unhashed.
- layout: layout.py's table places every partition on a 4 MiB boundary with a 4 MiB multiple
  size; the labels are the contract's (DGBOOT, rootA, rootB, dgdata) in that order, rootB as
  big as rootA.
- fstab: every ``LABEL=`` names a partition of the table with its file system; ``/`` is ``ro``;
  ``/data`` is ``dgdata`` with ``data=journal``; every real mount has ``noatime``; no swap; the
  bind sources are under /data; /var/log/journal is bound to /data while /var/log is tmpfs.
- hook: the initramfs hook mounts the data partition's label with data=journal after e2fsck.
- passwords: no recipe file sets one (chpasswd, ``passwd`` other than ``-l``, ``useradd -p``,
  ``usermod -p``), and sshd allows keys only.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import layout  # noqa: E402  (image-build/ is not a package)

BUILD_TOOLS = ("setuptools", "wheel")
LOCK_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?: --hash=sha256:[0-9a-f]{64})+)$")
HOOK = "rootfs/etc/initramfs-tools/scripts/local-bottom/dicom-gateway-data"
CONTRACT_LABELS = ("DGBOOT", "rootA", "rootB", "dgdata")


def check_lock(lock_text: str, pyproject_text: str) -> list[str]:
    """Problems of the lock against pyproject.toml's runtime dependencies."""
    problems = []
    pinned: dict[str, Version] = {}
    for number, line in enumerate(lock_text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        match = LOCK_LINE.match(line)
        if match is None:
            problems.append(f"lock line {number}: not 'name==version --hash=sha256:...': {line}")
            continue
        pinned[canonicalize_name(match[1])] = Version(match[2])
    wanted = [Requirement(r) for r in tomllib.loads(pyproject_text)["project"]["dependencies"]]
    wanted += [Requirement(tool) for tool in BUILD_TOOLS]
    for req in wanted:
        version = pinned.get(canonicalize_name(req.name))
        if version is None:
            problems.append(f"lock: {req.name} (pyproject.toml) is not pinned")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"lock: {req.name}=={version} is outside pyproject's {req.specifier}")
    return problems


def check_layout(table: tuple[layout.PartitionSpec, ...]) -> list[str]:
    """Problems of a partition table (alignment is layout.plan's own rule)."""
    try:
        parts = layout.plan(table)
    except layout.LayoutError as exc:
        return [f"layout: {exc}"]
    problems = []
    labels = tuple(p.spec.label for p in parts)
    if labels != CONTRACT_LABELS:
        problems.append(f"layout: labels {labels}, the contract says {CONTRACT_LABELS}")
    for prev, part in zip(parts, parts[1:], strict=False):
        if part.offset < prev.offset + prev.size:
            problems.append(f"layout: {part.spec.label} overlaps {prev.spec.label}")
    for part in parts:
        if part.offset % layout.ALIGN or part.size % layout.ALIGN:
            problems.append(f"layout: {part.spec.label} is not 4 MiB aligned")
    sizes = {p.spec.label: p.size for p in parts}
    if sizes.get("rootA") != sizes.get("rootB"):
        problems.append("layout: rootB must be as big as rootA (the update's second slot)")
    return problems


def fstab_entries(fstab_text: str) -> list[list[str]]:
    """The fields of each non-comment line."""
    return [line.split() for line in fstab_text.splitlines() if line.strip() and not
            line.lstrip().startswith("#")]


def check_fstab(fstab_text: str, table: tuple[layout.PartitionSpec, ...]) -> list[str]:
    """Problems of the image's fstab against the table and the contract."""
    problems = []
    fs_of = {spec.label: spec.fs for spec in table}
    mounts: dict[str, list[str]] = {}
    for fields in fstab_entries(fstab_text):
        if len(fields) != 6:
            problems.append(f"fstab: {' '.join(fields)}: want 6 fields")
            continue
        src, dst, fstype, opts = fields[0], fields[1], fields[2], fields[3].split(",")
        mounts[dst] = fields
        if fstype == "swap" or dst == "none":
            problems.append(f"fstab: {src}: no swap on an SD card")
        if src.startswith("LABEL="):
            label = src.removeprefix("LABEL=")
            if label not in fs_of:
                problems.append(f"fstab: {src} is not a partition of layout.py")
            elif fs_of[label] != fstype:
                problems.append(f"fstab: {src} is {fstype}, layout.py makes {fs_of[label]}")
        if "bind" in opts:
            if not src.startswith("/data/"):
                problems.append(f"fstab: bind {src} -> {dst}: state binds come from /data")
        elif "noatime" not in opts:
            problems.append(f"fstab: {dst} without noatime")
    root = mounts.get("/")
    if root is None or root[0] != "LABEL=rootA" or "ro" not in root[3].split(","):
        problems.append("fstab: / must be LABEL=rootA, ro")
    data = mounts.get("/data")
    if data is None or data[0] != "LABEL=dgdata" or "data=journal" not in data[3].split(","):
        problems.append("fstab: /data must be LABEL=dgdata with data=journal")
    journal = mounts.get("/var/log/journal")
    varlog = mounts.get("/var/log")
    if journal is None or not journal[0].startswith("/data/"):
        problems.append("fstab: /var/log/journal must be bound from /data")
    if varlog is None or varlog[2] != "tmpfs":
        problems.append("fstab: /var/log must be tmpfs")
    return problems


def check_hook(hook_text: str, table: tuple[layout.PartitionSpec, ...]) -> list[str]:
    """Problems of the initramfs hook that mounts /data."""
    problems = []
    data_labels = [s.label for s in table if s.label == "dgdata"]
    match = re.search(r"^label=(\S+)$", hook_text, re.MULTILINE)
    if match is None or match[1] not in data_labels:
        problems.append(f"hook: label={match[1] if match else None}, layout.py's is dgdata")
    mount = re.search(r"^\s*(?:if ! )?mount -t ext4 -o (\S+) ", hook_text, re.MULTILINE)
    if mount is None or "data=journal" not in mount[1].split(","):
        problems.append("hook: the data partition is not mounted with data=journal")
    fsck = hook_text.find("e2fsck -p")
    if fsck < 0 or mount is None or fsck > mount.start():
        problems.append("hook: e2fsck -p must run before the mount")
    if "${rootmnt}/data" not in hook_text.replace('"$data"', "${rootmnt}/data"):
        problems.append("hook: the data partition must be mounted at ${rootmnt}/data")
    return problems


PASSWORD_SETTERS = (
    re.compile(r"\bchpasswd\b"),
    re.compile(r"\bpasswd\b(?! -l\b)(?=\s+\S)"),
    re.compile(r"\b(?:useradd|usermod|adduser)\b[^\n]*\s(?:-p|--password)\b"),
    re.compile(r"^\s*PasswordAuthentication\s+yes", re.MULTILINE | re.IGNORECASE),
    re.compile(r"^\s*PermitEmptyPasswords\s+yes", re.MULTILINE | re.IGNORECASE),
)


def check_passwords(files: dict[str, str]) -> list[str]:
    """Problems: a recipe file (name -> text) that sets a password or lets one in."""
    problems = []
    for name, text in sorted(files.items()):
        for line in text.splitlines():
            if line.lstrip().startswith("#"):
                continue
            for pattern in PASSWORD_SETTERS:
                if pattern.search(line):
                    problems.append(f"{name}: sets or allows a password: {line.strip()}")
    sshd = files.get("rootfs/etc/ssh/sshd_config.d/dicom-gateway.conf", "")
    if not re.search(r"^PasswordAuthentication no$", sshd, re.MULTILINE):
        problems.append("sshd_config.d/dicom-gateway.conf: PasswordAuthentication no missing")
    return problems


def recipe_texts(here: Path = HERE) -> dict[str, str]:
    """Every text file of the recipe, by path relative to image-build/."""
    texts = {}
    for path in sorted(here.rglob("*")):
        # This file names the patterns it looks for; the lock holds only hashes.
        if path.is_file() and path.name != "checks.py" and path.suffix not in (".pyc", ".lock") \
                and "__pycache__" not in path.parts:
            texts[path.relative_to(here).as_posix()] = path.read_text()
    return texts


def all_problems(here: Path = HERE) -> list[str]:
    """Every check against the recipe as it is."""
    tree = here.parent
    return [
        *check_lock((here / "requirements-arm64.lock").read_text(),
                    (tree / "pyproject.toml").read_text()),
        *check_layout(layout.TABLE),
        *check_fstab((here / "rootfs/etc/fstab").read_text(), layout.TABLE),
        *check_hook((here / HOOK).read_text(), layout.TABLE),
        *check_passwords(recipe_texts(here)),
    ]


if __name__ == "__main__":
    found = all_problems()
    for problem in found:
        print(problem, file=sys.stderr)
    sys.exit(1 if found else 0)
