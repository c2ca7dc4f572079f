"""The Samba configuration of the box's shares: a pure function of the gateway's config.

``render_smb_conf`` turns every ``[[ingest.folder]]`` with a ``share`` into one share section
of an smb.conf that dicom-gateway-smb.service hands to smbd (``/run/dicom-gateway/smb.conf``).
What it enforces, and why:

* **SMB2/3 only** (``server min protocol = SMB2_02``): SMB1 has no integrity protection worth
  the name and is what WannaCry spread by. 2.0.2 rather than 2.1 because the two are equally
  protected (HMAC-SHA256 signing, NTLMv2; neither encrypts), so raising the floor to 2.1 would
  only turn away Vista/Server 2008-era devices. ``server signing = mandatory``: every SMB2 client
  can sign, and a signed session cannot be altered on the wire.
* **Encryption** ``desired`` by default, ``required`` per share (``share_encryption``): SMB3
  devices (Windows 8 / 10 IoT and later) then encrypt; Windows 7 / Embedded Standard 7, the
  commonest system on legacy modalities, speaks SMB 2.1, which cannot encrypt, and ``required``
  would refuse it.
* **Nobody but the share's account**: ``map to guest = never``, ``restrict anonymous = 2``, no
  guest access, ``valid users`` is that share's account alone (another device's account is
  refused at the tree connect), NTLMv2 only, no LANMAN, no printers, no [homes], no user shares.
* **Files as the gateway's**: ``force user``/``force group`` make every file the gateway's own
  (the account exists only to authenticate), with the drop folder's modes (``create mask``,
  ``directory mask``), so the gateway can read and remove what the device wrote. No symlinks are
  followed out of the folder (``wide links = no``).
* **Half-written files**: smbd writes into the folder directly, holding the file open until the
  device closes it; the folder watcher's settle rules (inotify close-after-write, then
  ``settle_seconds`` unchanged) decide when a file is whole, as for a local writer.
  ``strict sync = yes`` makes a device's flush an fsync.

The passdb (tdbsam) and Samba's secrets live in ``private_dir``, a folder of the gateway's own,
so the panel can set an account's password with pdbedit without privileges
(:mod:`gateway.ingest.remote.smbaccounts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.config import FolderIngest, GatewayConfig

SMB_CONF_PATH = Path("/run/dicom-gateway/smb.conf")
GATEWAY_ACCOUNT = "dicom-gateway"  # the service user and group (systemd/sysusers.d)
FILE_MODE = "0660"
FOLDER_MODE = "2770"  # the drop folder's own mode (systemd/tmpfiles.d): setgid, group-shared


def private_dir(state_dir: Path) -> Path:
    """Where the passdb and Samba's secrets live: the gateway's state, on the data partition."""
    return state_dir / "samba"


@dataclass(frozen=True)
class SambaSite:
    """Where smbd keeps its files and how it listens; the defaults are the box's.

    ``lock_dir``, ``state_dir``, ``cache_dir``, ``pid_dir`` and ``log_file`` None: Samba's own
    (/var/lib/samba, /run/samba, the journal). Tests put all of them under a temporary folder.
    """

    private_dir: Path
    ports: Sequence[int] = (445,)
    interfaces: Sequence[str] = ()  # empty: every interface
    lock_dir: Path | None = None
    state_dir: Path | None = None
    cache_dir: Path | None = None
    pid_dir: Path | None = None
    ncalrpc_dir: Path | None = None
    log_file: Path | None = None
    owner: str = GATEWAY_ACCOUNT
    group: str = GATEWAY_ACCOUNT


def shared_folders(config: GatewayConfig) -> list[FolderIngest]:
    """The drop folders served as shares, in config order."""
    return [f for f in config.ingest.folder if f.share is not None]


def _value(text: str) -> str:
    # smb.conf has no quoting: a line break would start a new parameter. The config model's
    # validators keep names clean; a path is the one free-form value, so refuse it here too.
    if "\n" in text or "\r" in text:
        raise ValueError(f"cannot write {text!r} into smb.conf")
    return text


def render_smb_conf(config: GatewayConfig, site: SambaSite) -> str:
    """The whole smb.conf for ``config``'s shares (a [global] section alone when there is none)."""
    lines = [
        "# Written by dicom-gateway (gateway.ingest.remote.smbconf) from gateway.toml;",
        "# changes here are lost: edit the [[ingest.folder]] share keys instead.",
        "[global]",
        "server role = standalone server",
        "server string = DICOM edge gateway",
        "disable netbios = yes",
        f"smb ports = {' '.join(str(p) for p in site.ports)}",
        "server min protocol = SMB2_02",
        "server signing = mandatory",
        "ntlm auth = ntlmv2-only",
        "map to guest = never",
        "restrict anonymous = 2",
        "guest ok = no",
        f"passdb backend = tdbsam:{_value(str(site.private_dir / 'passdb.tdb'))}",
        f"private dir = {_value(str(site.private_dir))}",
        "load printers = no",
        "printing = bsd",
        "printcap name = /dev/null",
        "disable spoolss = yes",
        "usershare max shares = 0",
        "unix password sync = no",
        "pam password change = no",
        "obey pam restrictions = no",
        "wide links = no",
        "follow symlinks = no",
        "unix extensions = no",
    ]
    if site.interfaces:
        lines += [f"interfaces = {' '.join(site.interfaces)}", "bind interfaces only = yes"]
    for key, path in (
        ("lock directory", site.lock_dir),
        ("state directory", site.state_dir),
        ("cache directory", site.cache_dir),
        ("pid directory", site.pid_dir),
        ("ncalrpc dir", site.ncalrpc_dir),
    ):
        if path is not None:
            lines.append(f"{key} = {_value(str(path))}")
    if site.log_file is not None:
        lines += ["logging = file", f"log file = {_value(str(site.log_file))}"]
    else:
        lines.append("logging = systemd")
    for folder in shared_folders(config):
        assert folder.share is not None and folder.share_user is not None  # model validator
        lines += [
            "",
            f"[{folder.share}]",
            f"comment = drop folder {folder.name}",
            f"path = {_value(str(folder.path))}",
            f"valid users = {folder.share_user}",
            f"write list = {folder.share_user}",
            "read only = no",
            "guest ok = no",
            "browseable = yes",
            f"force user = {site.owner}",
            f"force group = {site.group}",
            f"create mask = {FILE_MODE}",
            f"force create mode = {FILE_MODE}",
            f"directory mask = {FOLDER_MODE}",
            f"force directory mode = {FOLDER_MODE}",
            "inherit owner = no",
            "strict sync = yes",
            f"smb encrypt = {folder.share_encryption}",
        ]
    return "\n".join(lines) + "\n"
