"""The gateway's configuration: one strict pydantic tree loaded from TOML.

Every model forbids unknown keys and every field carries a description; the
configuration reference in docs/configuration.md is generated from these models
(``python -m gateway.configdoc``) so the two cannot drift.
"""

from __future__ import annotations

import re
import shutil
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

AE_TITLE_RE = re.compile(
    r"^[\x20-\x5b\x5d-\x7e]{1,16}$"
)  # DICOM AE: no backslash, no control chars
UID_ROOT_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# mount.cifs caches attributes for actimeo=1 s: a settle time below twice that could read a
# file whose last writes the cache has not shown yet.
CIFS_MIN_SETTLE_SECONDS = 2.0


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` lists each one, naming key, file and line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Strict(BaseModel):
    # strict: "104" is not a port and "yes" is not a boolean; paths still come from strings.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _check_ae(value: str) -> str:
    if not AE_TITLE_RE.match(value) or not value.strip():
        raise ValueError(
            "an AE title is 1 to 16 printable ASCII characters, not all spaces, no '\\'"
        )
    return value.strip()


AETitle = Annotated[str, Field(min_length=1, max_length=16)]


def _check_name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError("use letters, digits, '_', '.', '-' (at most 64)")
    return value


# Names of sources and destinations: they appear in logs, queue rows, metrics labels and URLs.
Name = Annotated[str, AfterValidator(_check_name)]


class GatewaySection(_Strict):
    """[gateway]: who the box is and where it keeps its state."""

    ae_title: AETitle = Field(
        "EDGE_GW", description="Our AE title (calling AE title towards the PACS)."
    )
    state_dir: Path = Field(
        Path("/var/lib/dicom-gateway"),
        strict=False,
        description="Queue, database and quarantine live here; local, persistent storage.",
    )
    uid_root: str | None = Field(
        None,
        description="Organisation UID root for created UIDs; unset: 2.25 UUID-derived UIDs.",
    )
    institution_name: str = Field("", max_length=64, description="(0008,0080) of created objects.")
    station_name: str = Field("", max_length=16, description="(0008,1010) of created objects.")
    max_queue_bytes: int | None = Field(
        None,
        gt=0,
        description="Queue size limit in bytes; unset: 50 % of the state_dir filesystem. "
        "When full, ingest pauses (files stay in the drop folder); "
        "queued data is never deleted to make room.",
    )
    min_free_bytes: int | None = Field(
        None,
        ge=0,
        description="Ingest pauses while the state_dir filesystem has less free space than this "
        "(files stay in the drop folder, C-STOREs are answered 0xA700 Out of Resources, serial "
        "messages are refused), whatever max_queue_bytes allows; unset: the larger of 64 MiB "
        "and 5 % of the filesystem. Delivery goes on: it is what frees space.",
    )
    reserve_bytes: int = Field(
        16 * 1024 * 1024,
        ge=0,
        description="Space kept back in <state_dir>/spool/reserve and given back when the disk "
        "is full, so that deliveries can still be recorded (each one sent frees its payload); "
        "made again once the disk has room. 0: no reserve.",
    )
    study_window_minutes: float = Field(
        30.0,
        gt=0,
        description="Files of one patient from one source whose times lie within this many minutes "
        "of the previous one form one study (and one series).",
    )
    api_socket: Path | None = Field(
        None,
        strict=False,
        description="Unix socket of the local JSON API (mode 0660: the daemon's group may use "
        "it); unset: <state_dir>/api.sock.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest level written to the log."
    )

    _ae = field_validator("ae_title")(_check_ae)

    @field_validator("uid_root")
    @classmethod
    def _uid_root(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if len(value) > 40 or not UID_ROOT_RE.match(value):
            raise ValueError("must be a dotted-decimal UID root of at most 40 characters")
        return value


class ModalitySection(_Strict):
    """[modality]: the legacy device beside the box, as written into the objects it produces."""

    modality: str = Field(
        "OT",
        pattern=r"^[A-Z0-9 _]{1,16}$",
        description="(0008,0060) Modality of converted objects.",
    )
    manufacturer: str = Field("", max_length=64, description="(0008,0070) of converted objects.")
    model_name: str = Field("", max_length=64, description="(0008,1090) of converted objects.")
    device_serial_number: str = Field("", max_length=64, description="(0018,1000), optional.")
    software_versions: str = Field("", max_length=64, description="(0018,1020), optional.")


# Names a Windows device is pointed at (\\box\export) and Unix/Samba account names.
SHARE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
ACCOUNT_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# Section names Samba gives a meaning of its own, and accounts that exist on every box.
RESERVED_SHARES = frozenset({"global", "homes", "printers", "print$", "ipc$"})
RESERVED_ACCOUNTS = frozenset(
    {"root", "nobody", "daemon", "bin", "sys", "dicom-gateway", "admin", "administrator", "guest"}
)


def _check_share_name(value: str | None) -> str | None:
    if value is not None and (not SHARE_NAME_RE.match(value) or value.lower() in RESERVED_SHARES):
        raise ValueError(
            "a share name is 1 to 80 letters, digits, '_', '.', '-' (not global, homes, "
            "printers, print$, ipc$)"
        )
    return value


def _check_account(value: str | None) -> str | None:
    if value is not None and (not ACCOUNT_RE.match(value) or value in RESERVED_ACCOUNTS):
        raise ValueError(
            "an account name is 1 to 32 lower-case letters, digits, '_', '-', starting with a "
            "letter or '_' (a Unix user name), and not root, nobody, guest, dicom-gateway..."
        )
    return value


class CifsMount(_Strict):
    """[ingest.folder.cifs]: the device's Windows share, mounted at ``path`` (below /srv, empty).

    The box mounts ``//server/share`` on the folder's ``path`` (``dicom-gateway share mount``,
    run as root by dicom-gateway-cifs.service) and the folder is watched by polling: inotify sees
    nothing a remote machine writes. Files are removed from the device's share once queued,
    exactly as from a local folder. The password is in a credentials file, never in this file.
    This file is the gateway's to write, so root mounts only on an empty folder of the gateway's
    strictly below /srv, reached without a symbolic link, made if missing (the mount-target
    rules: gateway.ingest.remote.cifs); any other ``path`` is refused and named in the journal.
    """

    server: str = Field(min_length=1, description="Host name or address of the device.")
    share: str = Field(
        min_length=1,
        pattern=r"^[^/\\\x00-\x1f]+$",
        description="Share name on the device (the part after \\\\device\\).",
    )
    username: str = Field(min_length=1, description="Account on the device the box logs in as.")
    domain: str | None = Field(None, description="Windows domain or workgroup of the account.")
    credentials: str = Field(
        "",
        pattern=r"^[A-Za-z0-9_.-]*$",
        description="File in /etc/credstore holding 'password=...' (root only, 0600); "
        "empty: cifs-<folder name>.cred.",
    )
    version: Literal["3.1.1", "3.0", "2.1", "1.0"] = Field(
        "3.0",
        description="SMB dialect (mount.cifs vers=). 2.1: Windows 7 / Embedded Standard 7 "
        "devices (no encryption). 1.0 (SMB1, no integrity protection worth the name) only "
        "with allow_smb1 = true.",
    )
    allow_smb1: bool = Field(
        False,
        description='Opt-in for version = "1.0": a Windows XP-era device that speaks nothing '
        "else. Put such a device on its own cable to the box.",
    )
    port: int = Field(445, ge=1, le=65535, description="TCP port of the device's SMB server.")
    seal: bool = Field(False, description="Ask for SMB3 encryption (version 3.0 or 3.1.1 only).")

    @model_validator(mode="after")
    def _dialect(self) -> CifsMount:
        if self.version == "1.0" and not self.allow_smb1:
            raise ValueError('version = "1.0" (SMB1) needs allow_smb1 = true')
        if self.seal and self.version not in ("3.0", "3.1.1"):
            raise ValueError("seal (encryption) needs version 3.0 or 3.1.1")
        return self


class FolderIngest(_Strict):
    """[[ingest.folder]]: a folder the legacy device drops files into."""

    name: Name = Field(description="Short name of this source, used in logs and the queue.")
    path: Path = Field(
        strict=False, description="The drop folder (relative paths: relative to the config file)."
    )
    filename_pattern: str | None = Field(
        None,
        description="Regular expression searched in the file name; named groups patient_id, "
        "patient_name, accession_number give the patient identity.",
    )
    settle_seconds: float = Field(
        1.0, ge=0, description="A file must be closed and unchanged this long before it is read."
    )
    poll_seconds: float = Field(
        2.0,
        gt=0,
        description="Interval of the safety rescan (and of the whole watch where inotify is off).",
    )
    use_inotify: bool = Field(True, description="Follow kernel events; false: polling only.")
    empty_grace_seconds: float = Field(
        60.0,
        ge=0,
        description="An empty file unchanged this long is taken (and quarantined as empty); "
        "until then it is assumed to be about to be written.",
    )
    share: str | None = Field(
        None,
        description="Serve this folder as an SMB share of this name (\\\\box\\<share>), "
        "SMB2/3 only, for the account share_user alone; unset: not shared.",
    )
    share_user: str | None = Field(
        None,
        description="The device's account on the share (a Unix user name, made by the box "
        "without login or home); its password is set in the panel (Device accounts). Required "
        "with share.",
    )
    share_encryption: Literal["desired", "required"] = Field(
        "desired",
        description="SMB3 encryption of the share: desired (SMB3 devices encrypt, Windows 7-era "
        "SMB 2.1 devices still sign every message) or required (SMB 2.x devices are refused).",
    )
    cifs: CifsMount | None = Field(
        None,
        description="The device's own share, mounted by the box at path and polled; unset: "
        "path is a local folder.",
    )
    ftp_user: str | None = Field(
        None,
        description="The device's account on the box's FTP receiver ([ingest.ftp]): it uploads "
        "into this folder alone; its password is set in the panel (Device accounts). Unset: "
        "no FTP into this folder.",
    )

    _share = field_validator("share")(_check_share_name)
    _accounts = field_validator("share_user", "ftp_user")(_check_account)

    @model_validator(mode="after")
    def _remote(self) -> FolderIngest:
        if self.share is not None and self.share_user is None:
            raise ValueError("share needs share_user (the device's account on it)")
        if self.share_user is not None and self.share is None:
            raise ValueError("share_user is set but share is not")
        if self.cifs is not None and (self.share is not None or self.ftp_user is not None):
            raise ValueError(
                "a folder mounted from the device (cifs) cannot be shared again (share, ftp_user)"
            )
        if self.cifs is not None and self.settle_seconds < CIFS_MIN_SETTLE_SECONDS:
            raise ValueError(
                f"with cifs, settle_seconds must be at least {CIFS_MIN_SETTLE_SECONDS:g} "
                "(the kernel caches a remote file's size and time for a second)"
            )
        return self

    @property
    def polls_only(self) -> bool:
        """Whether this folder is watched by polling alone (use_inotify = false, or cifs)."""
        return not self.use_inotify or self.cifs is not None

    @field_validator("filename_pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        unknown = set(compiled.groupindex) - {"patient_id", "patient_name", "accession_number"}
        if unknown:
            raise ValueError(f"unknown named group(s): {', '.join(sorted(unknown))}")
        return value


class SerialIngest(_Strict):
    """[[ingest.serial]]: a serial line the legacy device talks on, read through a profile."""

    name: Name = Field(description="Short name of this source, used in logs and the queue.")
    port: str = Field(
        min_length=1,
        description="Device path (/dev/ttyUSB0, /dev/legacy-modality, a pseudo-terminal) or a "
        "pyserial URL (socket://host:port, rfc2217://...).",
    )
    profile: str = Field(
        min_length=1,
        description="Built-in profile name (astm-e1394, line-kv, print-capture) or the path of "
        "a profile TOML file (relative paths: relative to the config file).",
    )
    baudrate: int = Field(9600, ge=50, le=4_000_000, description="Bits per second.")
    bytesize: Literal[5, 6, 7, 8] = Field(8, description="Data bits.")
    parity: Literal["none", "even", "odd", "mark", "space"] = Field("none", description="Parity.")
    stopbits: float = Field(1, description="Stop bits: 1, 1.5 or 2.")
    flow_control: Literal["none", "rtscts", "xonxoff"] = Field(
        "none", description="Hardware (RTS/CTS), software (XON/XOFF) or no flow control."
    )
    reopen_max_seconds: float = Field(
        30.0,
        gt=0,
        description="A port that disappears is reopened with backoff up to this interval.",
    )
    max_message_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="A message growing past this is dropped (counted and logged), "
        "so a flood or a stuck line cannot eat the memory.",
    )

    @field_validator("stopbits")
    @classmethod
    def _stopbits(cls, value: float) -> float:
        if value not in (1, 1.5, 2):
            raise ValueError("stop bits are 1, 1.5 or 2")
        return value


# A passive range this wide serves the receiver's connection limit many times over; a wider one
# only opens more of the box's ports to the network.
MAX_PASSIVE_PORTS = 1000


class FtpSection(_Strict):
    """[ingest.ftp]: the box's FTP receiver, for a device that can do nothing but FTP.

    It runs when a ``[[ingest.folder]]`` has ``ftp_user`` (one account per folder, each put in
    its own folder). FTPS (explicit TLS, AUTH TLS, with the panel's certificate) is required
    for login and data unless ``allow_plain`` is set. An upload is written to a hidden name and
    appears in the folder only once the device finished it (gateway.ingest.remote.ftp).
    """

    bind: str = Field("0.0.0.0", min_length=1, description="Address to listen on.")  # noqa: S104
    port: int = Field(
        2121,
        ge=1,
        le=65535,
        description="Control port. 21 (the well-known port) needs the privileged-port drop-in, "
        "as DICOM's 104 does.",
    )
    passive_ports: tuple[int, int] = Field(
        (30000, 30031),
        strict=False,  # a TOML array [first, last]; its items stay strict integers
        description="First and last port of the passive data connections (open them in any "
        f"firewall between device and box); at most {MAX_PASSIVE_PORTS} ports.",
    )
    allow_plain: bool = Field(
        False,
        description="Opt-in: also accept plain FTP, without TLS (the password and the images "
        "cross the network in clear). Only for a device that cannot do FTPS, on its own cable "
        "to the box.",
    )
    max_connections: int = Field(
        16, ge=1, le=256, description="Connections at once, all devices together."
    )
    max_connections_per_address: int = Field(
        4, ge=1, le=64, description="Connections at once from one address."
    )
    idle_timeout_seconds: float = Field(
        300.0, gt=0, le=3600, description="A control connection idle this long is closed."
    )

    @model_validator(mode="after")
    def _ports(self) -> FtpSection:
        first, last = self.passive_ports
        if not 1024 <= first <= last <= 65535:
            raise ValueError("passive_ports is [first, last] with 1024 <= first <= last <= 65535")
        if last - first + 1 > MAX_PASSIVE_PORTS:
            raise ValueError(f"passive_ports spans more than {MAX_PASSIVE_PORTS} ports")
        if first <= self.port <= last:
            raise ValueError("port is inside passive_ports")
        return self


class IngestSection(_Strict):
    """[ingest]: the sources the gateway takes data from."""

    folder: list[FolderIngest] = Field(default_factory=list, description="Watched drop folders.")
    serial: list[SerialIngest] = Field(
        default_factory=list, description="Serial lines read through device profiles."
    )
    ftp: FtpSection = Field(
        default_factory=FtpSection,
        description="The FTP receiver; it runs only when a folder has ftp_user.",
    )


class TlsSettings(_Strict):
    """[destination.tls]: mutual TLS towards a peer (DICOM Part 15 BCP 195 profile)."""

    ca: Path = Field(
        strict=False, description="PEM bundle of CAs that may sign the peer's certificate."
    )
    cert: Path = Field(strict=False, description="Our certificate chain (PEM).")
    key: Path = Field(
        strict=False,
        description="Our private key (PEM). A bare file name is also looked up in "
        "$CREDENTIALS_DIRECTORY (systemd credentials) when not found next to the config.",
    )
    verify_hostname: bool = Field(True, description="Check the peer's certificate names the host.")
    min_version: Literal["1.2", "1.3"] = Field("1.2", description="Lowest TLS version accepted.")


class ListenerTlsSettings(TlsSettings):
    """[dicom_listener.tls]: our listener's TLS; every caller must present a certificate.

    ``verify_hostname`` means nothing on this side (a modality's address says nothing about its
    certificate; DICOM's BCP 195 profile checks the server's name, not the client's): it is
    accepted so that files written before still load, and ignored (gateway.forward.tlsctx).
    """

    verify_hostname: bool = Field(
        True,
        description="Ignored on the listener (accepted so that older files still load): a "
        "caller's certificate is verified against ca, never against the caller's address.",
    )


class RetrySettings(_Strict):
    """[destination.retry]: exponential backoff with jitter between delivery attempts."""

    initial_seconds: float = Field(5.0, gt=0, description="Wait after the first failure.")
    max_seconds: float = Field(600.0, gt=0, description="Longest wait between attempts.")
    multiplier: float = Field(2.0, ge=1, description="Growth of the wait per failure.")
    jitter: float = Field(0.2, ge=0, le=1, description="Random spread, as a fraction of the wait.")


class Destination(_Strict):
    """[[destination]]: a storage SCP (PACS) that receives every object."""

    name: Name = Field(description="Short name; one queue lane per destination.")
    ae_title: AETitle = Field(description="Called AE title of the PACS.")
    host: str = Field(min_length=1, description="Host name or address of the PACS.")
    port: int = Field(ge=1, le=65535, description="TCP port of the PACS.")
    tls: TlsSettings | None = Field(None, description="Absent: plain TCP.")
    connect_timeout: float = Field(
        10.0, gt=0, description="TCP connect and TLS handshake, seconds."
    )
    acse_timeout: float = Field(30.0, gt=0, description="Association negotiation, seconds.")
    dimse_timeout: float = Field(
        120.0, gt=0, description="Waiting for a C-STORE response, seconds."
    )
    network_timeout: float = Field(
        60.0, gt=0, description="Silence on an open association, seconds."
    )
    idle_release_seconds: float = Field(
        5.0, ge=0, description="An association idle this long is released gracefully (A-RELEASE)."
    )
    max_pdu: int = Field(
        262144, ge=4096, le=4 * 1024 * 1024, description="Maximum PDU size we receive, bytes."
    )
    retry: RetrySettings = Field(default_factory=RetrySettings, description="Backoff policy.")

    _ae = field_validator("ae_title")(_check_ae)


class DicomListenerSection(_Strict):
    """[dicom_listener]: our own DICOM port for modalities (C-ECHO, MWL C-FIND, C-STORE)."""

    port: int = Field(11112, ge=1, le=65535, description="TCP port we listen on.")
    # The modality is another host on the room's network; a loopback default would be useless.
    bind: str = Field("0.0.0.0", min_length=1, description="Address to listen on.")  # noqa: S104
    allowed_calling_ae_titles: list[AETitle] = Field(
        default_factory=list,
        description="Calling AE titles that may associate; empty: any.",
    )
    tls: ListenerTlsSettings | None = Field(
        None,
        description="Absent: plain TCP. Same shape as [destination.tls]: ca verifies callers' "
        "certificates (a caller without one is refused); verify_hostname is not used here.",
    )
    storage: bool = Field(True, description="Accept C-STORE from DICOM-capable modalities.")
    coerce_from_worklist: bool = Field(
        False,
        description="Received objects that match one worklist item uniquely get that item's "
        "patient and order attributes (the replaced values kept in Original Attributes Sequence); "
        "ambiguous ones, and ones whose accession number is scheduled for another patient than "
        "their Patient ID, are held. false: received objects are forwarded as they came.",
    )
    max_associations: int = Field(
        8,
        ge=1,
        le=64,
        description="Associations served at once (callers still in their TLS handshake or "
        "A-ASSOCIATE-RQ do not count).",
    )
    max_pdu: int = Field(
        262144, ge=4096, le=4 * 1024 * 1024, description="Largest PDU we accept, bytes."
    )
    handshake_timeout: float = Field(
        10.0, gt=0, description="A TLS handshake and the A-ASSOCIATE-RQ must finish in this."
    )
    acse_timeout: float = Field(30.0, gt=0, description="Association negotiation, seconds.")
    dimse_timeout: float = Field(60.0, gt=0, description="Waiting for a DIMSE message, seconds.")
    network_timeout: float = Field(
        60.0, gt=0, description="An association silent this long is aborted, seconds."
    )

    @field_validator("allowed_calling_ae_titles")
    @classmethod
    def _callers(cls, values: list[str]) -> list[str]:
        return [_check_ae(v) for v in values]


class WorklistSection(_Strict):
    """[worklist]: the RIS's Modality Worklist SCP, queried and cached for outages."""

    ae_title: AETitle = Field(description="Called AE title of the RIS worklist SCP.")
    host: str = Field(min_length=1, description="Host name or address of the RIS.")
    port: int = Field(ge=1, le=65535, description="TCP port of the RIS.")
    refresh_seconds: float = Field(
        120.0, ge=5, description="The cache is refreshed this often (and on demand)."
    )
    modality: str | None = Field(
        None, pattern=r"^[A-Z0-9 _]{1,16}$", description="Query key Modality; unset: any."
    )
    scheduled_station_ae_title: AETitle | None = Field(
        None, description="Query key Scheduled Station AE Title; unset: any."
    )
    days_before: int = Field(
        1, ge=0, le=30, description="Query window: scheduled from this many days before today."
    )
    days_after: int = Field(
        1, ge=0, le=30, description="Query window: scheduled up to this many days after today."
    )
    character_set: str = Field(
        "ISO_IR 100",
        description="Specific Character Set assumed when the RIS declares none.",
    )
    tls: TlsSettings | None = Field(None, description="Absent: plain TCP.")
    expire_grace_hours: float = Field(
        24.0,
        ge=0,
        description="A cached item expires this long after the end of its scheduled day "
        "(never because the RIS is unreachable).",
    )
    live_query_timeout: float = Field(
        3.0,
        gt=0,
        description="The MWL SCP asks the RIS live for this long before answering from the cache.",
    )
    require_match: bool = Field(
        True,
        description="Objects created from files must bind to exactly one worklist item; "
        "false: an object with no match is sent with its file-name identity (ambiguous and "
        "contradicting ones are still held).",
    )
    selection_expires_minutes: float = Field(
        240.0,
        gt=0,
        description="A procedure selected for the room is forgotten after this long.",
    )
    connect_timeout: float = Field(
        10.0, gt=0, description="TCP connect and TLS handshake, seconds."
    )
    acse_timeout: float = Field(15.0, gt=0, description="Association negotiation, seconds.")
    dimse_timeout: float = Field(30.0, gt=0, description="Waiting for each C-FIND response.")
    network_timeout: float = Field(30.0, gt=0, description="Silence on the association, seconds.")

    _ae = field_validator("ae_title")(_check_ae)

    @field_validator("character_set")
    @classmethod
    def _charset(cls, value: str) -> str:
        from pydicom.charset import python_encoding

        if value not in python_encoding:
            raise ValueError(f"not a Specific Character Set defined term: {value!r}")
        return value


class WebSection(_Strict):
    """[web]: the HTTPS panel for field engineers and technologists."""

    enabled: bool = Field(True, description="Serve the panel.")
    # Field engineers reach the box from a laptop on the room's network.
    bind: str = Field("0.0.0.0", min_length=1, description="Address to listen on.")  # noqa: S104
    port: int = Field(8443, ge=1, le=65535, description="HTTPS port.")
    cert: Path | None = Field(
        None,
        strict=False,
        description="Certificate chain (PEM); unset: a self-signed one generated on first start "
        "under <state_dir>/web/ (replaceable from the panel).",
    )
    key: Path | None = Field(
        None, strict=False, description="Private key (PEM) for ``cert``; set both or neither."
    )
    session_idle_minutes: float = Field(
        30.0, gt=0, description="A session unused this long ends (the user logs in again)."
    )
    session_max_hours: float = Field(
        12.0, gt=0, description="A session ends this long after login, used or not."
    )
    login_max_failures: int = Field(
        5,
        ge=1,
        description=(
            "Wrong passwords in a row for one account from one address before that account is "
            "locked from that address (three times as many from one address, any names, lock "
            "the address); as many from addresses that never logged in to it put the account "
            "under attack: those addresses then share one try per 10 s, while an address that "
            "logged in to it before is not held back."
        ),
    )
    lockout_minutes: float = Field(
        15.0,
        gt=0,
        description="How long an account stays locked from an address, and an address locked.",
    )
    network_confirm_seconds: int = Field(
        120,
        ge=30,
        le=600,
        description="On the appliance, a network change made in the panel must be confirmed "
        "from the box's new address within this many seconds, or the previous settings come "
        "back (docs/network.md).",
    )

    @model_validator(mode="after")
    def _cert_and_key(self) -> WebSection:
        if (self.cert is None) != (self.key is None):
            raise ValueError("set both cert and key, or neither (a self-signed pair is generated)")
        return self


class UpdateSection(_Strict):
    """[update]: where signed releases come from, and when they may be installed."""

    repository_url: str = Field(
        "",
        description="Base URL of the TUF repository (https://..., or file:///media/usb/...); "
        "empty: updates only from a USB stick (`dicom-gateway update apply --offline PATH`).",
    )
    channel: Literal["stable", "beta"] = Field(
        "stable", description="Release channel; beta boxes also take stable releases."
    )
    hardware: str = Field(
        "generic", min_length=1, description="Hardware profile a release must list (rpi4, rpi5)."
    )
    maintenance_window: str | None = Field(
        None,
        description="Local time window 'HH:MM-HH:MM' (may wrap midnight) in which an update may "
        "interrupt a transfer; unset: only when nothing is being sent.",
    )
    install_root: Path = Field(
        Path("/opt/dicom-gateway"),
        strict=False,
        description="Where releases/<version>/ and the `current` symlink live.",
    )

    @field_validator("maintenance_window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]", value):
            raise ValueError("write the window as HH:MM-HH:MM, e.g. 02:00-04:00")
        return value


class GatewayConfig(_Strict):
    """The whole configuration file."""

    gateway: GatewaySection = Field(default_factory=GatewaySection, description="[gateway]")
    modality: ModalitySection = Field(default_factory=ModalitySection, description="[modality]")
    ingest: IngestSection = Field(default_factory=IngestSection, description="[ingest]")
    destination: list[Destination] = Field(default_factory=list, description="[[destination]]")
    dicom_listener: DicomListenerSection | None = Field(
        None, description="[dicom_listener]; absent: no DICOM port is opened."
    )
    worklist: WorklistSection | None = Field(
        None, description="[worklist]; absent: identity comes from file names only."
    )
    web: WebSection = Field(default_factory=WebSection, description="[web]")
    update: UpdateSection = Field(default_factory=UpdateSection, description="[update]")

    @model_validator(mode="after")
    def _unique_names(self) -> GatewayConfig:
        for label, names in (
            ("destination", [d.name for d in self.destination]),
            (
                "ingest source",
                [f.name for f in self.ingest.folder] + [s.name for s in self.ingest.serial],
            ),
        ):
            seen: set[str] = set()
            for name in names:
                if name in seen:
                    raise ValueError(f"{label} name {name!r} is used twice")
                seen.add(name)
        for label, names in (
            ("share", [f.share.lower() for f in self.ingest.folder if f.share]),
            ("share_user", [f.share_user for f in self.ingest.folder if f.share_user]),
            ("ftp_user", [f.ftp_user for f in self.ingest.folder if f.ftp_user]),
        ):
            duplicate = _first_duplicate(names)
            if duplicate is not None:
                raise ValueError(f"{label} {duplicate!r} is used by two folders")
        folders = [f.path.resolve() for f in self.ingest.folder]
        state = self.gateway.state_dir.resolve()
        for folder in folders:
            if folder == state or state in folder.parents or folder in state.parents:
                raise ValueError(f"drop folder {folder} overlaps state_dir {state}")
        return self


def _first_duplicate(names: list[str]) -> str | None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


# --- loading -----------------------------------------------------------------------------------


def _resolve_paths(config: GatewayConfig, base: Path) -> GatewayConfig:
    """Make every relative path relative to the config file's folder."""

    def fix(p: Path) -> Path:
        return p if p.is_absolute() else (base / p)

    def fix_tls(tls: TlsSettings | None) -> TlsSettings | None:
        if tls is None:
            return None
        return tls.model_copy(
            update={"ca": fix(tls.ca), "cert": fix(tls.cert), "key": fix(tls.key)}
        )

    return config.model_copy(
        update={
            "gateway": config.gateway.model_copy(
                update={
                    "state_dir": fix(config.gateway.state_dir),
                    "api_socket": config.gateway.api_socket and fix(config.gateway.api_socket),
                }
            ),
            "ingest": config.ingest.model_copy(
                update={
                    "folder": [
                        f.model_copy(update={"path": fix(f.path)}) for f in config.ingest.folder
                    ],
                    "serial": [
                        s.model_copy(update={"profile": str(fix(Path(s.profile)))})
                        if is_profile_path(s.profile)
                        else s
                        for s in config.ingest.serial
                    ],
                }
            ),
            "destination": [
                d.model_copy(update={"tls": fix_tls(d.tls)}) for d in config.destination
            ],
            "dicom_listener": config.dicom_listener
            and config.dicom_listener.model_copy(
                update={"tls": fix_tls(config.dicom_listener.tls)}
            ),
            "worklist": config.worklist
            and config.worklist.model_copy(update={"tls": fix_tls(config.worklist.tls)}),
            "web": config.web.model_copy(
                update={
                    "cert": config.web.cert and fix(config.web.cert),
                    "key": config.web.key and fix(config.web.key),
                }
            ),
        }
    )


def is_profile_path(profile: str) -> bool:
    """A profile given as a file (``x.toml``, ``./x``, ``/etc/...``) rather than a built-in name."""
    return "/" in profile or profile.endswith(".toml")


def _credential_fallback(path: Path, credentials_dir: str | None) -> Path:
    if path.exists() or not credentials_dir:
        return path
    candidate = Path(credentials_dir) / path.name
    return candidate if candidate.exists() else path


def _file_problems(
    config: GatewayConfig, credentials_dir: str | None
) -> list[tuple[tuple[Any, ...], str]]:
    problems: list[tuple[tuple[Any, ...], str]] = []
    for i, folder in enumerate(config.ingest.folder):
        if folder.path.exists() and not folder.path.is_dir():
            problems.append((("ingest", "folder", i, "path"), f"{folder.path} is not a folder"))
    for i, line in enumerate(config.ingest.serial):
        if is_profile_path(line.profile) and not Path(line.profile).is_file():
            problems.append(
                (("ingest", "serial", i, "profile"), f"profile file not found: {line.profile}")
            )
    tls_sections: list[tuple[tuple[Any, ...], TlsSettings | None]] = [
        (("destination", i), dest.tls) for i, dest in enumerate(config.destination)
    ]
    if config.dicom_listener:
        tls_sections.append((("dicom_listener",), config.dicom_listener.tls))
    if config.worklist:
        tls_sections.append((("worklist",), config.worklist.tls))
    for prefix, tls in tls_sections:
        if tls is None:
            continue
        for key in ("ca", "cert", "key"):
            p: Path = getattr(tls, key)
            if key == "key":
                p = _credential_fallback(p, credentials_dir)
            if not p.is_file():
                problems.append(((*prefix, "tls", key), f"file not found: {p}"))
    return problems


class LineFinder:
    """Finds the line of a key in the TOML text, following [table] and [[array]] headers."""

    HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\]?\s*(#.*)?$")
    KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+|\"[^\"]*\")\s*=")

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()

    def find(self, loc: tuple[Any, ...]) -> int | None:
        """Line of ("destination", 1, "tls", "ca"): key ca under the 2nd [[destination]]'s tls."""
        names = [p for p in loc if isinstance(p, str)]
        index = next((p for p in loc if isinstance(p, int)), None)
        table, key = names[:-1], names[-1] if names else ""
        counters: dict[str, int] = {}
        current: list[str] = []
        current_index: int | None = None
        fallback: int | None = None
        for number, line in enumerate(self.lines, start=1):
            header = self.HEADER.match(line)
            if header:
                current = header.group(2).replace('"', "").replace(" ", "").split(".")
                if header.group(1) == "[[":
                    counters[current[0]] = counters.get(current[0], -1) + 1
                current_index = counters.get(current[0])
                if fallback is None and current_index == index and current == names[: len(current)]:
                    fallback = number
                continue
            match = self.KEY.match(line)
            if (
                match
                and current == table
                and current_index == index
                and match.group(1).strip('"') == key
            ):
                return number
        return fallback


def format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def locator(text: str, label: str) -> Callable[[tuple[Any, ...]], str]:
    """Where a key is, for messages: ``"gateway.toml line 23"`` (``label`` alone if not found)."""
    finder = LineFinder(text)

    def where(loc: tuple[Any, ...]) -> str:
        line = finder.find(loc) if text else None
        return f"{label} line {line}" if line else label

    return where


def validation_problems(exc: ValidationError, where: Callable[[tuple[Any, ...]], str]) -> list[str]:
    """One line per error of a pydantic validation: key, file and line, and what is wrong."""
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        msg = msg.removeprefix("Value error, ")
        problems.append(f"{format_loc(loc)} ({where(loc)}): {msg}")
    return problems


def read_toml(path: Path, what: str = "config file") -> tuple[dict[str, Any], str]:
    """The parsed document and its text; ConfigError saying why a file cannot be read."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{path}: {what} not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read {what}: {exc.strerror}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: TOML syntax error: {exc}"]) from None
    return data, text


def load_config(path: Path, credentials_dir: str | None = None) -> GatewayConfig:
    """Read, validate and resolve a config file; raise ConfigError naming every problem."""
    path = Path(path)
    data, text = read_toml(path)
    return parse_config(data, text=text, source=path, credentials_dir=credentials_dir)


def parse_config(
    data: dict[str, Any],
    *,
    text: str = "",
    source: Path | None = None,
    credentials_dir: str | None = None,
) -> GatewayConfig:
    """Validate an already parsed TOML document; relative paths resolve against ``source``."""
    label = source.name if source else "config"
    where = locator(text, label)
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, where)) from None
    base = source.resolve().parent if source else Path.cwd()
    config = _resolve_paths(config, base)
    if credentials_dir is not None or source is not None:
        problems = [
            f"{format_loc(loc)} ({where(loc)}): {msg}"
            for loc, msg in _file_problems(config, credentials_dir)
        ]
        if problems:
            raise ConfigError(problems)
    return config


def resolve_key_path(path: Path, credentials_dir: str | None) -> Path:
    """Where a TLS private key really is: next to the config, else in systemd's credentials."""
    return _credential_fallback(path, credentials_dir)


def queue_limit(gateway: GatewaySection) -> int:
    """The queue's byte limit: ``max_queue_bytes``, or half the state filesystem when unset."""
    return gateway.max_queue_bytes or default_max_queue_bytes(gateway.state_dir)


def default_max_queue_bytes(state_dir: Path) -> int:
    """Half of the filesystem that holds state_dir (or its nearest existing parent)."""
    probe = state_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).total // 2


def summary(config: GatewayConfig) -> str:
    """A short human summary for check-config."""
    lines = [
        f"ae_title {config.gateway.ae_title}, state_dir {config.gateway.state_dir}",
        f"modality {config.modality.modality} ({config.modality.manufacturer} "
        f"{config.modality.model_name})".rstrip(),
    ]
    for folder in config.ingest.folder:
        lines.append(f"ingest folder {folder.name}: {folder.path}")
    for line in config.ingest.serial:
        lines.append(
            f"ingest serial {line.name}: {line.port} {line.baudrate} baud, profile {line.profile}"
        )
    for dest in config.destination:
        mode = "TLS" if dest.tls else "plain TCP"
        lines.append(f"destination {dest.name}: {dest.ae_title}@{dest.host}:{dest.port} ({mode})")
    if not config.destination:
        lines.append("no destination: objects are queued but not sent")
    if config.dicom_listener:
        lst = config.dicom_listener
        mode = "TLS" if lst.tls else "plain TCP"
        lines.append(f"DICOM listener: {lst.bind}:{lst.port} ({mode})")
    if config.worklist:
        wl = config.worklist
        mode = "TLS" if wl.tls else "plain TCP"
        lines.append(f"worklist: {wl.ae_title}@{wl.host}:{wl.port} ({mode})")
    return "\n".join(lines)
