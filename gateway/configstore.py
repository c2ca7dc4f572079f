"""The configuration file under change control: versions, validation, apply with rollback.

History lives in ``<state_dir>/config-history/``: ``NNNN.toml`` (the file as applied) and
``NNNN.json`` (when, who, why, sha256). A version is listed once both exist.

Apply (:meth:`ConfigStore.apply`): validate the text, record the file as it is now (when it is not
already the latest version) and the new text as versions, replace the config file durably, write
the *trial marker*, and ask the daemon to restart. The marker sits beside the config file
(``.<name>.trial.json``), not in state_dir: a new file that does not parse names no state_dir,
and the marker must still be found. It holds the previous version's file and a start count.

Start (:func:`on_start`, before the config is loaded): no marker, nothing to do. A marker whose
trial already started once and never confirmed means that start failed (crashed, killed by the
watchdog, hung before READY): the previous version goes back, the marker goes away, and the
gateway starts on it. A start that fails in a way the daemon sees (the file does not validate, a
service does not start) calls :func:`rollback` at once. After READY the daemon calls
:func:`confirm` and the marker is removed: the new configuration stands.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import logging
import os
import re
import stat
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.clock import Clock
from gateway.config import ConfigError, parse_config
from gateway.logsetup import event
from gateway.spool.durable import fsync_dir, write_bytes_durably

HISTORY_DIR = "config-history"
MAX_VERSIONS = 100  # older versions are pruned; a version is a few KiB
MAX_CONFIG_BYTES = 256 * 1024  # far above any real gateway.toml
_VERSION_RE = re.compile(r"^(\d{4,})\.json$")

log = logging.getLogger("gateway.configstore")


class ConfigStoreError(RuntimeError):
    """The history or the config file cannot be written; fix the permissions or the disk."""


@dataclass(frozen=True)
class ConfigVersion:
    """One saved version of the config file."""

    version_id: str  # "0007": sortable, never reused
    saved_at: float  # wall clock, epoch seconds
    actor: str  # "web:alice", "file" (found on disk), "rollback"
    comment: str
    sha256: str
    path: Path  # the saved TOML text


@dataclass(frozen=True)
class ApplyResult:
    """What apply did: ``problems`` (nothing changed) or the version now in the file."""

    ok: bool
    problems: tuple[str, ...] = ()
    version: ConfigVersion | None = None
    previous: ConfigVersion | None = None
    restarting: bool = False


@dataclass(frozen=True)
class TrialState:
    """What :func:`on_start` found and did."""

    in_trial: bool  # a new configuration is being tried in this start
    rolled_back: bool  # the previous version was restored before this start
    version_id: str | None = None  # the version tried (or the one rolled back from)
    previous_id: str | None = None


def validate_text(
    text: str, source: Path | None = None, credentials_dir: str | None = None
) -> list[str]:
    """Every problem of a config text, each naming the key and line; [] when it is usable.

    With ``source`` (the config file's path) relative paths resolve beside it and the files it
    names (TLS, profiles) must exist, as at start.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
        return [f"configuration larger than {MAX_CONFIG_BYTES} bytes"]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return [f"TOML syntax error: {exc}"]
    try:
        parse_config(data, text=text, source=source, credentials_dir=credentials_dir)
    except ConfigError as exc:
        return list(exc.problems)
    return []


def diff_text(old: str, new: str, old_label: str, new_label: str) -> str:
    """A unified diff of two config texts ("" when they are the same)."""
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=old_label,
            tofile=new_label,
        )
    )


class ConfigStore:
    """Versions of one config file and the apply step; safe to build per request."""

    def __init__(
        self,
        config_path: Path,
        state_dir: Path,
        clock: Clock,
        *,
        credentials_dir: str | None = None,
        logger: logging.Logger = log,
    ) -> None:
        self.config_path = config_path
        self.history_dir = state_dir / HISTORY_DIR
        self.clock = clock
        self.credentials_dir = credentials_dir
        self.log = logger

    # -- reading ---------------------------------------------------------------------------------

    def current_text(self) -> str:
        """The config file as it is on disk now ("" when it does not exist)."""
        try:
            return self.config_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""

    def validate(self, text: str) -> list[str]:
        """Problems of ``text`` as if it were the config file (paths relative to it)."""
        return validate_text(text, self.config_path, self.credentials_dir)

    def versions(self) -> list[ConfigVersion]:
        """Saved versions, newest first."""
        if not self.history_dir.is_dir():
            return []
        found = []
        for entry in self.history_dir.iterdir():
            match = _VERSION_RE.match(entry.name)
            if match:
                version = self._load_meta(match.group(1))
                if version is not None:
                    found.append(version)
        return sorted(found, key=lambda v: int(v.version_id), reverse=True)

    def version(self, version_id: str) -> ConfigVersion | None:
        """One saved version, or None (also for ids that are not version ids)."""
        if not re.fullmatch(r"\d{4,}", version_id):
            return None
        return self._load_meta(version_id)

    def read_version(self, version: ConfigVersion) -> str:
        """The TOML text of a saved version."""
        return version.path.read_text(encoding="utf-8")

    def diff(self, old_id: str, new_id: str | None = None) -> str | None:
        """Unified diff from ``old_id`` to ``new_id`` (None: the file now); None if unknown."""
        old = self.version(old_id)
        if old is None:
            return None
        if new_id is None:
            return diff_text(self.read_version(old), self.current_text(), old.version_id, "current")
        new = self.version(new_id)
        if new is None:
            return None
        return diff_text(
            self.read_version(old), self.read_version(new), old.version_id, new.version_id
        )

    def _load_meta(self, version_id: str) -> ConfigVersion | None:
        meta = self.history_dir / f"{version_id}.json"
        body = self.history_dir / f"{version_id}.toml"
        try:
            fields = json.loads(meta.read_text(encoding="utf-8"))
            if not body.is_file():
                return None
            return ConfigVersion(
                version_id=version_id,
                saved_at=float(fields["saved_at"]),
                actor=str(fields["actor"]),
                comment=str(fields.get("comment", "")),
                sha256=str(fields["sha256"]),
                path=body,
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # -- writing ---------------------------------------------------------------------------------

    def save_version(self, text: str, actor: str, comment: str = "") -> ConfigVersion:
        """Record ``text`` as a new version (the TOML first, then its description)."""
        self.history_dir.mkdir(parents=True, exist_ok=True)
        existing = self.versions()
        number = int(existing[0].version_id) + 1 if existing else 1
        version_id = f"{number:04d}"
        body = self.history_dir / f"{version_id}.toml"
        data = text.encode("utf-8")
        write_durably(body, data, 0o640)
        meta = {
            "saved_at": self.clock.now(),
            "actor": actor,
            "comment": comment[:500],
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        write_durably(
            self.history_dir / f"{version_id}.json", json.dumps(meta).encode("utf-8"), 0o640
        )
        self._prune(existing)
        version = self._load_meta(version_id)
        assert version is not None
        return version

    def _prune(self, existing: Sequence[ConfigVersion]) -> None:
        # existing is newest first and does not include the version just saved.
        for old in existing[MAX_VERSIONS - 1 :]:
            for suffix in (".json", ".toml"):
                with contextlib.suppress(FileNotFoundError):
                    (self.history_dir / f"{old.version_id}{suffix}").unlink()

    def _record_current(self) -> ConfigVersion | None:
        """The file as it is now, as a version: the latest one when unchanged, else a new one."""
        text = self.current_text()
        if not text:
            return None
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        versions = self.versions()
        if versions and versions[0].sha256 == digest:
            return versions[0]
        return self.save_version(text, "file", "the file as found before a change")

    def apply(
        self,
        text: str,
        actor: str,
        comment: str = "",
        request_restart: Callable[[], None] | None = None,
    ) -> ApplyResult:
        """Validate, keep the old file as a version, write ``text``, mark a trial, restart.

        Without ``request_restart`` (no daemon to restart) the file is written and no trial
        marker is left: nothing would ever confirm or roll it back.
        """
        problems = self.validate(text)
        if problems:
            return ApplyResult(ok=False, problems=tuple(problems))
        previous = self._record_current()
        version = self.save_version(text, actor, comment)
        write_durably(self.config_path, text.encode("utf-8"), _mode_of(self.config_path))
        event(
            self.log,
            logging.INFO,
            "configuration written",
            version=version.version_id,
            previous=previous.version_id if previous else None,
            actor=actor,
        )
        if request_restart is None or previous is None:
            return ApplyResult(ok=True, version=version, previous=previous)
        write_marker(
            self.config_path,
            {"version": version.version_id, "previous": str(previous.path), "starts": 0},
        )
        request_restart()
        return ApplyResult(ok=True, version=version, previous=previous, restarting=True)

    def restore(
        self,
        version_id: str,
        actor: str,
        request_restart: Callable[[], None] | None = None,
    ) -> ApplyResult:
        """Apply a saved version again (with the same trial and rollback as any apply)."""
        version = self.version(version_id)
        if version is None:
            return ApplyResult(ok=False, problems=(f"no version {version_id}",))
        return self.apply(
            self.read_version(version), actor, f"restore of version {version_id}", request_restart
        )


# -- the daemon's side: trial marker, rollback, confirm -----------------------------------------


def marker_path(config_path: Path) -> Path:
    """Where the trial marker of ``config_path`` lives (beside it: found even if it is broken)."""
    return config_path.with_name(f".{config_path.name}.trial.json")


def write_marker(config_path: Path, fields: dict[str, object]) -> None:
    """Write the trial marker durably."""
    write_durably(marker_path(config_path), json.dumps(fields).encode("utf-8"), 0o600)


def read_marker(config_path: Path) -> dict[str, object] | None:
    """The trial marker's fields, or None (also for a marker that cannot be read as JSON)."""
    try:
        fields = json.loads(marker_path(config_path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"starts": 99}  # damaged: treat as a failed trial with nothing known
    return fields if isinstance(fields, dict) else {"starts": 99}


def on_start(config_path: Path, logger: logging.Logger = log) -> TrialState:
    """Call before the config is loaded: count this start, or roll back a trial that failed."""
    marker = read_marker(config_path)
    if marker is None:
        return TrialState(in_trial=False, rolled_back=False)
    starts = _int(marker.get("starts"))
    version_id = str(marker.get("version")) if marker.get("version") else None
    previous = str(marker["previous"]) if marker.get("previous") else None
    if starts >= 1:
        # The trial already started once and never reached READY (or the marker is damaged).
        restored = rollback(config_path, "the new configuration did not become ready", logger)
        return TrialState(
            in_trial=False,
            rolled_back=restored,
            version_id=version_id,
            previous_id=Path(previous).stem if previous else None,
        )
    write_marker(config_path, {**marker, "starts": starts + 1})
    event(logger, logging.INFO, "trying new configuration", version=version_id)
    return TrialState(
        in_trial=True,
        rolled_back=False,
        version_id=version_id,
        previous_id=Path(previous).stem if previous else None,
    )


def rollback(config_path: Path, reason: str, logger: logging.Logger = log) -> bool:
    """Put the previous version back if a trial is running; True when the file was restored."""
    marker = read_marker(config_path)
    if marker is None:
        return False
    previous = marker.get("previous")
    restored = False
    if isinstance(previous, str):
        try:
            data = Path(previous).read_bytes()
        except OSError as exc:
            event(
                logger,
                logging.CRITICAL,
                "configuration rollback impossible: previous version unreadable",
                version=Path(previous).stem,
                error=exc.strerror or type(exc).__name__,
            )
        else:
            write_durably(config_path, data, _mode_of(config_path))
            restored = True
    clear_marker(config_path)
    event(
        logger,
        logging.ERROR,
        "configuration rolled back" if restored else "configuration trial abandoned",
        reason=reason,
        version=marker.get("version"),
        restored=Path(previous).stem if isinstance(previous, str) and restored else None,
    )
    return restored


def confirm(config_path: Path, logger: logging.Logger = log) -> bool:
    """Call after READY: the configuration being tried stands; True if a trial was confirmed."""
    marker = read_marker(config_path)
    if marker is None:
        return False
    clear_marker(config_path)
    event(logger, logging.INFO, "new configuration confirmed", version=marker.get("version"))
    return True


def clear_marker(config_path: Path) -> None:
    """Remove the trial marker durably."""
    path = marker_path(config_path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        fsync_dir(path.parent)


def restart_command() -> list[str]:
    """The command line this process was started with, to exec again (same PID for systemd)."""
    return [sys.executable, *sys.orig_argv[1:]]


def exec_same_command() -> None:
    """Replace this process with a fresh start of the same command; call after stopping all.

    The PID stays, so systemd's main PID for Type=notify and the watchdog stay valid;
    NOTIFY_SOCKET is inherited with the environment. Sockets and files Python opened are
    close-on-exec. Never returns.
    """
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    command = restart_command()
    os.execv(command[0], command)  # noqa: S606 - our own interpreter and arguments, no shell


def write_durably(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data``, durably, with exactly ``mode``; ConfigStoreError if not."""
    try:
        write_bytes_durably(path, data, mode)
    except OSError as exc:
        raise ConfigStoreError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _mode_of(path: Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o640


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def now_label(clock: Clock) -> str:
    """A UTC time stamp for file names (the support bundle, downloads)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(clock.now()))
