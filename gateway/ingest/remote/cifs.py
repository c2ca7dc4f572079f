"""Mounting the device's own Windows share (CIFS client): options and commands, pure.

A ``[[ingest.folder]]`` with a ``cifs`` table is the device's share ``//server/share``
mounted by the box on the folder's ``path``. ``dicom-gateway share mount`` (root, from
dicom-gateway-cifs.service, before the gateway) runs the commands made here; the folder is then
watched like any other, by polling alone (gateway.ingest.folder: inotify never reports what the
device writes on its own disk), and a file is removed from the device's share only once its
object is durably queued (gateway.ingest.intake), as from a local folder.

The mount options, and why:

* ``vers=3.0`` by default (``version``): SMB 3 signs and can encrypt (``seal``); ``2.1`` for
  Windows 7-era devices; ``1.0`` only with ``allow_smb1`` (config validation);
* ``credentials=/etc/credstore/<file>``: the password stays in a root-only file, never on the
  command line (where ``ps`` shows it) nor in gateway.toml; ``sec=ntlmssp``: NTLMv2, never LM;
* ``uid``/``gid`` the gateway, ``file_mode=0660``, ``dir_mode=02770``: the gateway reads and
  removes files; ``nosuid,nodev,noexec``: nothing on the device's disk can run on the box;
* ``actimeo=1``: size and time of a remote file are at most a second old, so a file the device
  is still writing shows growing between two polls (``settle_seconds`` at least 2 is required);
* ``hard``: a device that goes away makes a read wait, not fail half-way (the gateway's watcher
  thread waits for it; the rest of the gateway goes on);
* ``_netdev``: a network mount, after the network is up.

Where a share may be mounted (``judge_mount_target`` / ``judge_unmount_target``, pure). The
mount runs as root, but the folder's ``path`` comes from gateway.toml, which the unprivileged
gateway (its panel) writes; so the path is trusted no more than the gateway is. A mount of
the device's share must give whoever controls the gateway nothing the gateway could not
already do with its own files. A target is mounted on only when:

* it is absolute and plain (no ``.`` or ``..`` component) and strictly below the allowed root
  (``MOUNT_ROOT``, /srv, where the drop folders live; never the root itself);
* no component of it, from ``/`` down, is a symbolic link, and it is a directory: the caller
  opens it one component at a time without following links (gateway.ingest.remote.mountpoint),
  so what is judged is the directory itself, whatever the path's text says;
* it is owned by the gateway's account: a folder the gateway could fill anyway;
* it is empty: a mount hides nothing of the box's;
* it is not a mount point already, unless it is this share's own cifs mount (a re-run of the
  unit: nothing to do). Anything else mounted there is refused.

Unmounting takes the same path rules, and unmounts only this share's own cifs mount: an
ordinary folder has nothing to unmount, and any other mount there is refused, so the config
cannot make root unmount something else. Every refusal names the rule it broke.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gateway.config import CifsMount, FolderIngest, GatewayConfig

CREDSTORE = Path("/etc/credstore")
# Where device shares may be mounted: /srv holds the drop folders (tmpfiles' /srv/drop, the
# documented /srv/us-export; on the appliance a bind of /data/srv). docs/assumptions.md.
MOUNT_ROOT = Path("/srv")
# What the kernel calls a mount made by mount.cifs (smb3 when mounted with -t smb3).
CIFS_FILESYSTEMS = frozenset({"cifs", "smb3"})
FILE_MODE = "0660"
DIR_MODE = "02770"  # mount.cifs warns of a mode without its leading 0
# statfs/mountinfo names of file systems whose writes happen elsewhere: inotify sees none.
NETWORK_FILESYSTEMS = frozenset(
    {"cifs", "smb3", "smbfs", "nfs", "nfs4", "9p", "fuse.sshfs", "afs", "ceph", "glusterfs"}
)


@dataclass(frozen=True)
class MountPlan:
    """One mount to make: what, where, with which options (no secret in any of them)."""

    source: str  # //server/share
    target: Path
    options: tuple[str, ...]

    def argv(self, at: str | None = None) -> list[str]:
        """The mount command, mounting on ``at`` (default: the target's path).

        mount.cifs itself, not mount(8), which would first resolve ``at`` to a path string again:
        mount.cifs changes into ``at`` and mounts on ``.``, so a ``/proc/self/fd/N`` of a
        directory opened without following links is mounted on exactly that directory.
        """
        where = str(self.target) if at is None else at
        return ["mount.cifs", self.source, where, "-o", ",".join(self.options)]


def credentials_file(folder: FolderIngest, credstore: Path = CREDSTORE) -> Path:
    """The root-only file holding the password (mount.cifs credentials format)."""
    assert folder.cifs is not None
    return credstore / (folder.cifs.credentials or f"cifs-{folder.name}.cred")


def mount_options(
    cifs: CifsMount, credentials: Path, uid: int | str, gid: int | str
) -> tuple[str, ...]:
    """mount.cifs options for ``cifs`` (see the module docstring)."""
    options = [
        f"vers={cifs.version}",
        f"username={cifs.username}",
        f"credentials={credentials}",
        "sec=ntlmssp",
        f"port={cifs.port}",
        f"uid={uid}",
        f"gid={gid}",
        f"file_mode={FILE_MODE}",
        f"dir_mode={DIR_MODE}",
        "nosuid",
        "nodev",
        "noexec",
        "actimeo=1",
        "hard",
        "_netdev",
    ]
    if cifs.domain:
        options.insert(2, f"domain={cifs.domain}")
    if cifs.seal:
        options.append("seal")
    for option in options:
        if "," in option or "\n" in option:
            raise ValueError(f"a mount option cannot hold ',': {option!r}")
    return tuple(options)


def mount_plans(
    config: GatewayConfig,
    uid: int | str = "dicom-gateway",
    gid: int | str = "dicom-gateway",
    credstore: Path = CREDSTORE,
) -> list[MountPlan]:
    """One plan per folder with ``cifs``, in config order."""
    return [plan for _, plan in mount_plans_by_folder(config, uid, gid, credstore)]


def mount_plans_by_folder(
    config: GatewayConfig,
    uid: int | str = "dicom-gateway",
    gid: int | str = "dicom-gateway",
    credstore: Path = CREDSTORE,
) -> list[tuple[str, MountPlan]]:
    """Each folder with ``cifs`` by name, with its plan, in config order."""
    plans = []
    for folder in config.ingest.folder:
        if folder.cifs is None:
            continue
        plan = MountPlan(
            source=f"//{folder.cifs.server}/{folder.cifs.share}",
            target=folder.path,
            options=mount_options(folder.cifs, credentials_file(folder, credstore), uid, gid),
        )
        plans.append((folder.name, plan))
    return plans


def filesystem_type(path: Path, mountinfo: str) -> str | None:
    """The type of the file system ``path`` is on, from /proc/self/mountinfo's text.

    The mount whose mount point is the longest prefix of ``path`` wins (the last one listed
    of equals: a later mount hides an earlier one on the same point). Pure; the caller reads the
    file. Mount points with spaces are written \\040 in mountinfo, and are decoded.
    """
    best: tuple[int, str] | None = None
    target = str(path)
    for entry in parse_mountinfo(mountinfo):
        point = entry.point
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= best[0]):
            best = (len(point), entry.fstype)
    return None if best is None else best[1]


def read_filesystem_type(path: Path) -> str | None:
    """The file system type of ``path`` on this machine (None when it cannot be told)."""
    try:
        text = Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return filesystem_type(path.resolve(), text)


def is_network_filesystem(fstype: str | None) -> bool:
    """Whether writes on this file system may happen on another machine (inotify is blind)."""
    return fstype is not None and (fstype in NETWORK_FILESYSTEMS or fstype.startswith("nfs"))


class TargetAction(enum.Enum):
    """What to do with a mount target (see the module docstring)."""

    MOUNT = "mount"  # an empty folder of the gateway's: mount the share on it
    UNMOUNT = "unmount"  # this share's own mount: unmount it
    NOTHING = "nothing"  # already as wanted (mounted on a re-run, not mounted at unmount)
    REFUSE = "refuse"  # breaks a rule: leave it alone and say why


@dataclass(frozen=True)
class TargetVerdict:
    """The judgement on one target, with the reason (the rule broken, for a refusal)."""

    action: TargetAction
    reason: str


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo: the mount's id, mount point, type and source."""

    mount_id: int
    point: str
    fstype: str
    source: str


@dataclass(frozen=True)
class TargetFacts:
    """What the kernel says about a target, read through a descriptor of the directory opened
    one component at a time without following links (gateway.ingest.remote.mountpoint).

    ``problem`` says why it could not be opened so ("/srv/x is a symbolic link", "... does
    not exist", "... is not a directory"); the other fields are then meaningless. ``mount`` is
    the mount whose root the directory is, None for an ordinary directory.
    """

    problem: str | None = None
    owner_uid: int = -1
    empty: bool = False
    mount: MountEntry | None = None


def target_path_problem(target: Path, root: Path = MOUNT_ROOT) -> str | None:
    """Why ``target``'s text alone rules it out as a mount target under ``root``; None if not.

    Absolute, no ``.``/``..`` component, strictly below ``root``. Pure: links are the opener's.
    """
    text = str(target)
    if not target.is_absolute():
        return f"{text} is not an absolute path"
    if "//" in text or any(part in (".", "..") for part in text.split("/")):
        return f"{text} is not a plain path (a '.', '..' or empty component)"
    base = PurePosixPath(root)
    if PurePosixPath(text) == base:
        return f"{text} is the mount root itself; mount below it"
    if base not in PurePosixPath(text).parents:
        return f"{text} is not below the mount root {root}"
    return None


def judge_mount_target(
    target: Path, source: str, facts: TargetFacts, owner_uid: int, root: Path = MOUNT_ROOT
) -> TargetVerdict:
    """Whether ``source`` may be mounted on ``target`` (the rules: the module docstring)."""
    refused = _refusal(target, facts, root)
    if refused is not None:
        return refused
    if facts.mount is not None:
        if _is_this_share(facts.mount, source):
            return TargetVerdict(TargetAction.NOTHING, f"{source} is mounted on {target} already")
        return TargetVerdict(TargetAction.REFUSE, f"{target} is a mount point of {_named(facts)}")
    if facts.owner_uid != owner_uid:
        return TargetVerdict(
            TargetAction.REFUSE,
            f"{target} is owned by uid {facts.owner_uid}, not the gateway's {owner_uid}",
        )
    if not facts.empty:
        return TargetVerdict(TargetAction.REFUSE, f"{target} is not empty")
    return TargetVerdict(TargetAction.MOUNT, f"{source} may be mounted on {target}")


def judge_unmount_target(
    target: Path, source: str, facts: TargetFacts, root: Path = MOUNT_ROOT
) -> TargetVerdict:
    """Whether ``target`` holds ``source``'s mount to unmount (the rules: the module docstring)."""
    refused = _refusal(target, facts, root)
    if refused is not None:
        return refused
    if facts.mount is None:
        return TargetVerdict(TargetAction.NOTHING, f"nothing is mounted on {target}")
    if _is_this_share(facts.mount, source):
        return TargetVerdict(TargetAction.UNMOUNT, f"{source} is mounted on {target}")
    return TargetVerdict(
        TargetAction.REFUSE, f"{target} is a mount point of {_named(facts)}, not of {source}"
    )


def parse_mountinfo(text: str) -> list[MountEntry]:
    """The mounts listed in /proc/self/mountinfo's text, in order (malformed lines left out)."""
    entries = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 2 or not fields[0].isdigit():
            continue
        point, source = _unescape(fields[4]), _unescape(tail[1])
        entries.append(MountEntry(int(fields[0]), point, tail[0], source))
    return entries


def _refusal(target: Path, facts: TargetFacts, root: Path) -> TargetVerdict | None:
    problem = target_path_problem(target, root) or facts.problem
    return None if problem is None else TargetVerdict(TargetAction.REFUSE, problem)


def _is_this_share(mount: MountEntry, source: str) -> bool:
    # SMB names are case-blind, and mount.cifs retries a share in upper case (ENXIO).
    return mount.fstype in CIFS_FILESYSTEMS and mount.source.casefold() == source.casefold()


def _named(facts: TargetFacts) -> str:
    assert facts.mount is not None
    return f"{facts.mount.fstype} {facts.mount.source}"


def _unescape(text: str) -> str:
    out = text
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        out = out.replace(code, char)
    return out
