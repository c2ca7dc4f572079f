"""The box's FTP receiver: a device that can do nothing but FTP uploads into its drop folder.

Built on pyftpdlib (one thread, one asynchronous loop, every connection in it) with FTPS
from :mod:`gateway.ingest.remote.ftptls`. Each ``[[ingest.folder]]`` with ``ftp_user`` is one
account whose root is that folder; its password is an argon2id hash set in the panel
(:mod:`gateway.ingest.remote.ftpaccounts`). What it enforces, and why:

* **FTPS unless opted out**: without ``allow_plain`` a login (USER/PASS) is refused until
  ``AUTH TLS`` and a data connection until ``PROT P``, so neither the password nor an image
  crosses the network in clear. The certificate is the panel's (the box's own).
* **Nobody but the folder's account**: no anonymous login, an account without a password lets
  nobody in, three wrong passwords end the connection, each refusal is delayed 3 s.
* **Upload only**: change folder, list, make a folder, store, rename. No download, delete,
  append, resume (REST) or STOU (which would write a name of the server's choosing).
  Hidden names (a leading '.') are out of reach: the watcher never takes them.
* **Nothing the device sends replaces a file**: an upload whose name is taken by a file the
  watcher has not taken yet lands beside it under the same name, in a subfolder
  ``ftp-duplicate-<n>`` (:mod:`gateway.ingest.remote.landing`), and the device is told ``226``
  with where. A file renamed (RNFR/RNTO) onto a name that exists lands the same way; a folder
  is refused (``553``). No file of the folder can be deleted, appended to or overwritten.
* **An upload appears only once whole**: it is written to ``.ftp-incoming/<random>.part``
  inside the folder (hidden: the watcher never looks there) and moved to its name, durably
  (fsync, rename without replacing, fsync of the folder), only when :func:`upload_outcome` says
  it is complete; the device is told ``226`` only then. Otherwise the partial file is removed
  and the device told ``426``: it still has the file and sends it again. The folder watcher's
  settle rules then apply to the file as to any other.

The limit of plain (stream-mode) FTP: the end of a file is the end of the data connection, so
a device that dies mid-file (its kernel ending both connections) looks like one that finished,
unless its control connection is seen gone as well. :func:`upload_outcome` looks for that;
where a dying device's control connection closes later than its data connection (seldom: the
kernel closes both at once), a truncated file reaches the folder, as it would from SMB or a
local writer; the converter's checks then quarantine a file that does not decode. FTPS has no
such gap: an upload must end with TLS close_notify.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import ssl
import stat
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from gateway.config import FtpSection
from gateway.forward.tlsctx import BCP195_TLS12_CIPHERS
from gateway.ingest.remote.ftpaccounts import FtpAccounts
from gateway.ingest.remote.ftptls import DataEnd, TlsMixin
from gateway.ingest.remote.landing import Landing, companions, land
from gateway.ingest.remote.pyftpd import (
    AbstractedFS,
    AuthenticationFailed,
    DTPHandler,
    FTPHandler,
    FTPServer,
    IOLoop,
    PassiveDTP,
    pyftpdlib_commands,
)
from gateway.logsetup import event
from gateway.spool.durable import fsync_dir, rename_noreplace

STAGING = ".ftp-incoming"  # inside each folder: a hidden name, never looked into by the watcher
PERMISSIONS = "elmwf"  # pyftpdlib letters: CWD, LIST, MKD, STOR, RNFR/RNTO (never over a name)
REFUSED_COMMANDS = frozenset({"APPE", "STOU", "REST", "RETR", "DELE", "RMD", "SITE", "MFMT"})
LOOP_TIMEOUT = 0.25  # seconds per poll of the loop: how soon a stop is seen
AUTH_FAILED_DELAY = 3.0
MAX_REMEMBERED = 1000  # landings a connection remembers, to put a sidecar beside its file


@dataclass(frozen=True)
class UploadOutcome:
    """Whether an upload is whole, and why not."""

    complete: bool
    reason: str = ""


def upload_outcome(*, finished: bool, data_end: DataEnd, control_open: bool) -> UploadOutcome:
    """Decide whether a finished STOR is a whole file. Pure.

    * ``finished`` False (ABOR, a data timeout, a write error, the control connection closed
      first): incomplete;
    * the data connection broken (a reset on plain FTP, a TLS failure): incomplete, though
      pyftpdlib calls it done;
    * a TLS data connection ended without close_notify (ragged): incomplete. Under TLS the
      close_notify is the sender's word that the stream is over; a cut cable, a reset, a forged
      FIN and a device dying mid-file all end without it (ftplib, curl and FileZilla send it);
    * the data connection ended in order but the control connection is gone, or going (its
      peer's end already waiting on the socket): the device died mid-file: incomplete. This is
      the one tell on plain FTP, whose end of file is only the data connection's FIN;
    * otherwise: complete.
    """
    if not finished:
        return UploadOutcome(False, "transfer not finished")
    if data_end is DataEnd.BROKEN:
        return UploadOutcome(False, "data connection broken")
    if data_end is DataEnd.RAGGED:
        return UploadOutcome(False, "TLS data connection ended without close_notify")
    if not control_open:
        return UploadOutcome(False, "control connection gone with the data connection")
    return UploadOutcome(True)


def ftps_context(cert: Path, key: Path) -> ssl.SSLContext:
    """Server-side TLS for FTPS: 1.2 or newer, BCP 195 suites, no client certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    # Session tickets stay on: FTPS clients resume the control connection's session on each
    # data connection, and some refuse a data connection that does not.
    context.load_cert_chain(certfile=cert, keyfile=key)
    return context


def peer_gone(sock: socket.socket) -> bool:
    """Whether the peer of ``sock`` has closed or reset it (peeked; nothing is read)."""
    try:
        with socket.socket(fileno=os.dup(sock.fileno())) as dup:
            waiting = dup.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return waiting == b""


class _Accounts:
    """pyftpdlib's authorizer: one account per folder, passwords from FtpAccounts."""

    def __init__(self, homes: Mapping[str, Path], store: FtpAccounts) -> None:
        self._homes = dict(homes)
        self._store = store

    def validate_authentication(self, username: str, password: str, handler: Any) -> None:
        # Verified whatever the name, so that an unknown name takes as long as a wrong password.
        good = self._store.verify(username, password)
        if not good or username not in self._homes:
            raise AuthenticationFailed("Authentication failed.")

    def get_home_dir(self, username: str) -> str:
        return str(self._homes[username])

    def has_user(self, username: str) -> bool:
        return username in self._homes

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        return username in self._homes and perm in PERMISSIONS

    def get_perms(self, username: str) -> str:
        return PERMISSIONS

    def get_msg_login(self, username: str) -> str:
        return "Logged in."

    def get_msg_quit(self, username: str) -> str:
        return "Goodbye."

    def impersonate_user(self, username: str, password: str) -> None:
        """Nothing to do: every file is written as the gateway."""

    def terminate_impersonation(self, username: str) -> None:
        """Nothing to do."""


class _FolderFS(AbstractedFS):  # type: ignore[misc]
    """The folder as the device sees it: hidden names neither listed nor reachable."""

    def validpath(self, path: str) -> bool:
        if not super().validpath(path):
            return False
        inside = os.path.relpath(self.realpath(path), self.realpath(self.root))
        return not any(part.startswith(".") for part in Path(inside).parts if part != ".")

    def listdir(self, path: str) -> list[str]:
        return [n for n in super().listdir(path) if not n.startswith(".")]

    def listdirinfo(self, path: str) -> list[str]:
        return self.listdir(path)

    def rename(self, src: str, dst: str) -> None:
        """Rename, durably, never onto an existing name (FileExistsError): pyftpdlib's replaces."""
        rename_noreplace(Path(src), Path(dst))
        fsync_dir(Path(dst).parent)
        if Path(src).parent != Path(dst).parent:
            fsync_dir(Path(src).parent)


class _NoPassivePortError(OSError):
    """Every port of passive_ports is taken."""


class _Passive(PassiveDTP):  # type: ignore[misc]
    """A passive data listener on a port of passive_ports only.

    pyftpdlib falls back to a port of the kernel's choosing when the range is taken; a firewall
    opened for the range would block it, and the range is the box's promise of what it opens.
    """

    def bind(self, addr: tuple[str, int]) -> None:
        if addr[1] == 0:
            raise _NoPassivePortError("every passive port is in use")
        super().bind(addr)


class _Data(TlsMixin, DTPHandler):  # type: ignore[misc]
    """A data connection; an upload's end is decided here, before the device is answered."""

    def __init__(self, sock: socket.socket, cmd_channel: Any) -> None:
        super().__init__(sock, cmd_channel)
        if cmd_channel.protect_data:
            self.secure_connection(cmd_channel.tls_context)

    def use_sendfile(self) -> bool:
        return False

    def handle_failed_tls_handshake(self) -> None:
        self.cmd_channel.respond("522 TLS handshake failed.")
        self.close()

    def close(self) -> None:
        if (
            not self._closed
            and self.receive
            and self.file_obj is not None
            and not self.file_obj.closed
        ):
            self.cmd_channel.finish_upload(self)
        super().close()


class _Control(TlsMixin, FTPHandler):  # type: ignore[misc]
    """A device's control connection. The class attributes are set per receiver (a subclass)."""

    dtp_handler = _Data
    passive_dtp = _Passive
    abstracted_fs = _FolderFS
    proto_cmds: ClassVar[dict[str, dict[str, Any]]] = {
        **{k: v for k, v in pyftpdlib_commands.items() if k not in REFUSED_COMMANDS},
        "AUTH": {"perm": None, "auth": False, "arg": True, "help": "Syntax: AUTH <SP> TLS."},
        "PBSZ": {"perm": None, "auth": False, "arg": True, "help": "Syntax: PBSZ <SP> 0."},
        "PROT": {"perm": None, "auth": False, "arg": True, "help": "Syntax: PROT <SP> [C|P]."},
    }
    banner = "DICOM gateway FTP receiver ready."
    use_sendfile = False
    auth_failed_timeout = AUTH_FAILED_DELAY
    max_login_attempts = 3
    tls_context: ssl.SSLContext | None = None
    tls_required = True
    receiver: FtpReceiver

    def __init__(self, conn: socket.socket, server: Any, ioloop: Any = None) -> None:
        super().__init__(conn, server, ioloop)
        self._pbsz = False
        self.protect_data = False
        self._uploads: dict[str, Path] = {}
        self._landed: dict[Path, Path] = {}  # name asked for -> where it landed, this connection
        if self.tls_context is not None:
            self._extra_feats = ["AUTH TLS", "PBSZ", "PROT"]

    # --- TLS commands (RFC 4217) ----------------------------------------------------------------

    def process_command(self, cmd: str, *args: Any, **kwargs: Any) -> None:
        if self.tls_required and cmd in ("USER", "PASS") and not self.tls_established:
            self.respond("530 TLS is required first: AUTH TLS (FTPS, explicit).")
            return
        if self.tls_required and cmd in ("PASV", "EPSV", "PORT", "EPRT") and not self.protect_data:
            self.respond("530 A protected data connection is required first: PBSZ 0, PROT P.")
            return
        super().process_command(cmd, *args, **kwargs)

    def ftp_AUTH(self, line: str) -> None:  # noqa: N802 - pyftpdlib calls ftp_<COMMAND>
        if self.tls_context is None:
            self.respond("502 TLS is not offered here.")
        elif self.tls_requested:
            self.respond("503 Already using TLS.")
        elif line.upper() in ("TLS", "TLS-C", "SSL"):
            self.respond(f"234 AUTH {line.upper()} successful.")
            self.secure_connection(self.tls_context)
        else:
            self.respond("504 Use AUTH TLS.")

    def ftp_PBSZ(self, line: str) -> None:  # noqa: N802 - pyftpdlib calls ftp_<COMMAND>
        if not self.tls_requested:
            self.respond("503 PBSZ needs a TLS control connection.")
        else:
            self._pbsz = True
            self.respond("200 PBSZ=0 successful.")

    def ftp_PROT(self, line: str) -> None:  # noqa: N802 - pyftpdlib calls ftp_<COMMAND>
        arg = line.upper()
        if not self.tls_requested:
            self.respond("503 PROT needs a TLS control connection.")
        elif not self._pbsz:
            self.respond("503 PBSZ first.")
        elif arg == "P":
            self.protect_data = True
            self.respond("200 Protection set to Private.")
        elif arg == "C" and not self.tls_required:
            self.protect_data = False
            self.respond("200 Protection set to Clear.")
        else:
            self.respond("536 Only PROT P is accepted.")

    def _make_epasv(self, extmode: bool = False) -> None:
        try:
            super()._make_epasv(extmode)
        except _NoPassivePortError:
            self._dtp_acceptor = None
            self.respond("425 Every passive port is in use; try again.")

    def flush_account(self) -> None:
        super().flush_account()
        self.protect_data = self._pbsz = False

    # --- uploads --------------------------------------------------------------------------------

    def ftp_STOR(self, file: str, mode: str = "w") -> str | None:  # noqa: N802 - pyftpdlib calls ftp_<COMMAND>
        final = Path(file)
        if not final.parent.is_dir():
            self.respond("553 No such folder.")
            return None
        part = self.receiver.staging_of(Path(self.fs.root)) / f"{secrets.token_hex(12)}.part"
        self._uploads[str(part)] = final
        answer: str | None = super().ftp_STOR(str(part), mode)
        return answer

    def ftp_RNTO(self, path: str) -> tuple[str, str] | None:  # noqa: N802 - pyftpdlib calls ftp_<COMMAND>
        """As pyftpdlib's RNTO, but never onto a name that exists (pyftpdlib's replaces it).

        A file lands as an upload does (:func:`land`): a device that uploads ``x.tmp`` and
        renames it ``x.jpg`` while an earlier ``x.jpg`` waits keeps both, instead of a temporary
        name the watcher never takes. A folder onto a name that exists is refused (553).
        """
        src: str | None = getattr(self, "_rnfr", None)  # set by pyftpdlib's RNFR (untyped)
        if not src:
            self.respond("503 Bad sequence of commands: use RNFR first.")
            return None
        self._rnfr = None
        target = Path(path)
        try:
            if stat.S_ISREG(os.lstat(src).st_mode):
                landing = land(Path(src), target, self._beside(target))
            else:
                self.fs.rename(src, path)
                landing = Landing(target)
        except FileExistsError:
            self.respond("553 That name exists; it is not replaced. Choose another.")
            return None
        except OSError as exc:
            self.respond(f"550 {exc.strerror or exc}.")
            return None
        note = self._report_landing(target, landing)
        self.respond(f"250 Renamed; {note}" if note else "250 Renaming ok.")
        return (src, str(landing.place))

    def finish_upload(self, dtp: _Data) -> None:
        """The data connection of an upload is closing: move the file in, or discard it."""
        part = Path(dtp.file_obj.name)
        final = self._uploads.pop(str(part), None)
        control_open = not self._closed and not peer_gone(self.socket)
        outcome = upload_outcome(
            finished=dtp.transfer_finished, data_end=dtp.ended, control_open=control_open
        )
        size = dtp.get_transmitted_bytes()
        try:
            dtp.file_obj.close()
        except OSError as exc:
            outcome = UploadOutcome(False, f"cannot write the file: {exc.strerror or exc}")
        landing: Landing | None = None
        if outcome.complete and final is not None:
            try:
                landing = land(part, final, self._beside(final))
            except FileExistsError:
                outcome = UploadOutcome(False, "every name for it is taken")
            except OSError as exc:
                outcome = UploadOutcome(False, f"cannot move it in: {exc.strerror or exc}")
        dtp.transfer_finished = outcome.complete
        if outcome.complete:
            self.receiver.received(self.username, size)
            note = None
            if final is not None and landing is not None:
                note = self._report_landing(final, landing)
            dtp._resp = (f"226 Transfer complete; {note or 'the file is in the folder.'}", _quiet)
            return
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        dtp._resp = (f"426 Upload incomplete ({outcome.reason}); send it again.", _quiet)
        self.receiver.discarded(self.username, size, outcome.reason, self.remote_ip)

    def _beside(self, final: Path) -> Path | None:
        """The folder where this connection put a companion of ``final`` (its sidecar, its file)."""
        for companion in companions(final):
            if companion in self._landed:
                return self._landed[companion].parent
        return None

    def _report_landing(self, asked: Path, landing: Landing) -> str | None:
        """Remember where ``asked`` landed, report it; what to tell the device, if anything."""
        self._remember(asked, landing.place)
        if landing.already or landing.place == asked:
            return None
        self.receiver.kept_beside(self.username, landing.place.parent.name)
        try:
            inside = landing.place.parent.relative_to(Path(self.fs.root))
        except ValueError:  # not under the root as spelled (a link in its path)
            inside = Path(landing.place.parent.name)
        return f"a file of that name was waiting, so this one is beside it in {inside}/."

    def _remember(self, final: Path, landed: Path) -> None:
        if len(self._landed) >= MAX_REMEMBERED:
            self._landed.clear()  # bounded; only a sidecar's pairing rests on it
        self._landed[final] = landed

    def on_login_failed(self, username: str, password: str) -> None:
        self.receiver.login_refused(username, self.remote_ip)

    # --- pyftpdlib's own logging names files: patient names are in them; say nothing -------------

    def log(self, msg: str, logfun: Any = None) -> None:
        """Not logged (the receiver logs its own events, without file names)."""

    def logline(self, msg: str, logfun: Any = None) -> None:
        """Not logged."""

    def log_cmd(self, cmd: str, arg: str, respcode: int, respstr: str) -> None:
        """Not logged: arguments are file names."""

    def log_transfer(self, *args: Any, **kwargs: Any) -> None:
        """Not logged: the receiver logs received and discarded uploads itself."""


def _quiet(*args: Any, **kwargs: Any) -> None:
    """pyftpdlib's response logger, silenced (responses may carry file names)."""


class FtpReceiver:
    """The FTP receiver as two supervisor steps: ``listen``/``close`` and the ``serve`` thread."""

    def __init__(
        self,
        settings: FtpSection,
        homes: Mapping[str, Path],
        accounts: FtpAccounts,
        logger: logging.Logger,
        *,
        refusal_delay: float = AUTH_FAILED_DELAY,
    ) -> None:
        self.settings = settings
        self.homes = dict(homes)
        self._accounts = accounts
        self._tls: ssl.SSLContext | None = None
        self._log = logger
        self._refusal_delay = refusal_delay  # before a wrong password is answered
        self._loop: Any = None
        self._server: Any = None
        self._stats_lock = threading.Lock()
        self.stats = {"received": 0, "discarded": 0, "refused_logins": 0}

    @property
    def address(self) -> tuple[str, int] | None:
        """Where it listens (port chosen by the system when configured as 0), once listening."""
        if self._server is None:
            return None
        host, port = self._server.socket.getsockname()[:2]
        return str(host), int(port)

    def staging_of(self, home: Path) -> Path:
        """The hidden folder inside ``home`` where uploads are written until whole."""
        return home / STAGING

    def listen(self, tls: ssl.SSLContext | None) -> None:
        """Clear what a power cut left half-uploaded, then bind (OSError if the port is taken).

        ``tls`` None (no certificate) is allowed only with allow_plain (ValueError otherwise).
        """
        if tls is None and not self.settings.allow_plain:
            raise ValueError("FTPS needs the box's certificate unless allow_plain is set")
        self._tls = tls
        for home in self.homes.values():
            staging = self.staging_of(home)
            staging.mkdir(mode=0o700, exist_ok=True)
            for left in staging.glob("*.part"):
                with contextlib.suppress(FileNotFoundError):
                    left.unlink()  # never finished: the device was told nothing good
        first, last = self.settings.passive_ports
        handler = type(
            "ReceiverControl",
            (_Control,),
            {
                "authorizer": _Accounts(self.homes, self._accounts),
                "passive_ports": list(range(first, last + 1)),
                "timeout": self.settings.idle_timeout_seconds,
                "tls_context": self._tls,
                "tls_required": not self.settings.allow_plain,
                "auth_failed_timeout": self._refusal_delay,
                "receiver": self,
            },
        )
        self._loop = IOLoop()
        server = FTPServer((self.settings.bind, self.settings.port), handler, ioloop=self._loop)
        server.max_cons = self.settings.max_connections
        server.max_cons_per_ip = self.settings.max_connections_per_address
        self._server = server
        host, port = self.address or ("", 0)
        event(
            self._log,
            logging.INFO,
            "ftp receiver listening",
            address=f"{host}:{port}",
            tls="required"
            if self._tls is not None and not self.settings.allow_plain
            else ("offered" if self._tls is not None else "none"),
            passive_ports=f"{first}-{last}",
            accounts=len(self.homes),
        )
        if self.settings.allow_plain:
            event(
                self._log,
                logging.WARNING,
                "ftp receiver accepts plain FTP (allow_plain): passwords and images in clear",
            )

    def serve(self, stop: threading.Event) -> None:
        """The loop, until ``stop`` (the supervisor's thread body); idle when not listening."""
        while not stop.is_set():
            if self._loop is None:
                stop.wait(LOOP_TIMEOUT * 4)
                continue
            self._loop.loop(timeout=LOOP_TIMEOUT, blocking=False)

    def close(self) -> None:
        """Close every connection and the listening socket (after the serve thread stopped)."""
        if self._server is not None:
            self._server.close_all()
            self._server = None
            self._loop = None

    # --- events (the handler reports; no file names, no passwords) -------------------------------

    def received(self, account: str, size: int) -> None:
        with self._stats_lock:
            self.stats["received"] += 1
        event(self._log, logging.INFO, "ftp upload received", account=account, bytes=size)

    def discarded(self, account: str, size: int, reason: str, address: str) -> None:
        with self._stats_lock:
            self.stats["discarded"] += 1
        event(
            self._log,
            logging.WARNING,
            "ftp upload incomplete; discarded",
            account=account,
            bytes=size,
            reason=reason,
            address=address,
        )

    def kept_beside(self, account: str, folder: str) -> None:
        # The folder is ours (ftp-duplicate-<n>), never a name the device chose.
        event(
            self._log,
            logging.WARNING,
            "ftp upload named like a waiting file; both kept",
            account=account,
            folder=folder,
        )

    def login_refused(self, account: str, address: str) -> None:
        with self._stats_lock:
            self.stats["refused_logins"] += 1
        event(self._log, logging.WARNING, "ftp login refused", account=account, address=address)
