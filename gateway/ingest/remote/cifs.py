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
* ``uid``/``gid`` the gateway, ``file_mode=0660``, ``dir_mode=2770``: the gateway reads and
  removes files; ``nosuid,nodev,noexec``: nothing on the device's disk can run on the box;
* ``actimeo=1``: size and time of a remote file are at most a second old, so a file the device
  is still writing shows growing between two polls (``settle_seconds`` at least 2 is required);
* ``hard``: a device that goes away makes a read wait, not fail half-way (the gateway's watcher
  thread waits for it; the rest of the gateway goes on);
* ``_netdev``: a network mount, after the network is up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.config import CifsMount, FolderIngest, GatewayConfig

CREDSTORE = Path("/etc/credstore")
FILE_MODE = "0660"
DIR_MODE = "2770"
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

    def argv(self) -> list[str]:
        """The mount command."""
        return ["mount", "-t", "cifs", self.source, str(self.target), "-o", ",".join(self.options)]


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
    plans = []
    for folder in config.ingest.folder:
        if folder.cifs is None:
            continue
        plans.append(
            MountPlan(
                source=f"//{folder.cifs.server}/{folder.cifs.share}",
                target=folder.path,
                options=mount_options(folder.cifs, credentials_file(folder, credstore), uid, gid),
            )
        )
    return plans


def filesystem_type(path: Path, mountinfo: str) -> str | None:
    """The type of the file system ``path`` is on, from /proc/self/mountinfo's text.

    The mount whose mount point is the longest prefix of ``path`` wins (the last one listed
    of equals: a later mount hides an earlier one on the same point). Pure; the caller reads the
    file. Mount points with spaces are written \\040 in mountinfo, and are decoded.
    """
    best: tuple[int, str] | None = None
    target = str(path)
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right.split():
            continue
        point = _unescape(fields[4])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= best[0]):
            best = (len(point), right.split()[0])
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


def _unescape(text: str) -> str:
    out = text
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        out = out.replace(code, char)
    return out
