"""The support bundle: a zip an engineer sends home, with what explains the box and no patient data.

Inside: ``README.txt`` (what is in it), ``config/gateway.toml`` (secret values blanked; TLS
files are named by path, their contents never read), ``versions.json`` (gateway, Python, pydicom,
pynetdicom, OS), ``queue.json`` (counts per destination and state, ages, last error),
``stats.json`` (listener, serial ports, drop folders, worklist freshness), ``audit.txt`` (who did
what, without the details) and ``logs/journal.txt`` (``journalctl -u dicom-gateway``, or why it
is missing). Never the queue database, payloads, quarantine, keys or the worklist cache.

No value can add a line to a text of the bundle: every text is written through
:func:`gateway.textsafe.safe_lines`, and each value of ``audit.txt`` is one
:func:`gateway.textsafe.field` (a user name with CR/LF in it stays one quoted field).

The logs are meant to be free of patient data already; every text is still scrubbed
(:func:`scrub`): fields named for the patient, anything shaped like a DICOM person name, and
literally every name and ID the worklist cache holds.
"""

from __future__ import annotations

import io
import platform
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from gateway.config import GatewayConfig, TlsSettings
from gateway.textsafe import json_line, record, safe_lines
from gateway.web.services import WebServices

JOURNAL_UNIT = "dicom-gateway"
JOURNAL_LINES = 2000
JOURNAL_TIMEOUT = 15.0
REMOVED = "[removed]"

# Keys whose values are secrets wherever they appear in the TOML (none are in the model today;
# a later key named so must not leak through an old bundle writer).
_SECRET_KEY = re.compile(
    r"^(\s*[\w.\"-]*(password|passphrase|secret|token|credential)[\w\"-]*\s*=).*$", re.I | re.M
)
# JSON fields ("patient_name": "...") and key=value pairs named for the patient or the order.
_PATIENT_JSON = re.compile(
    r'("(?:patient[\w]*|other_patient[\w]*|accession[\w]*|issuer_of_patient_id)"\s*:\s*)'
    r'("(?:[^"\\]|\\.)*"|[^,}\s]+)',
    re.I,
)
_PATIENT_KV = re.compile(r"\b((?:patient|accession)[\w]*=)(\"[^\"]*\"|'[^']*'|\S+)", re.I)
# A DICOM person name: components joined by '^' (Doe^Jane, Müller^Jörg^^Dr).
_PERSON_NAME = re.compile(r"[^\s\"'=,;:()\[\]{}<>|\\^]*\^[^\s\"',;:()\[\]{}<>|\\]*")

JournalReader = Callable[[], tuple[str | None, str]]


@dataclass(frozen=True)
class Bundle:
    """The zip's bytes and a file name for it."""

    filename: str
    data: bytes


def scrub_known(text: str, known: Iterable[str]) -> str:
    """``text`` with every one of the ``known`` values (3 characters or more) removed."""
    for value in sorted({v for v in known if len(v) >= 3}, key=len, reverse=True):
        text = text.replace(value, REMOVED)
    return text


def scrub(text: str, known: Iterable[str] = ()) -> str:
    """``text`` without patient fields, person-name-shaped words or any of the ``known`` values."""
    text = scrub_known(text, known)
    text = _PATIENT_JSON.sub(lambda m: m.group(1) + f'"{REMOVED}"', text)
    text = _PATIENT_KV.sub(lambda m: m.group(1) + REMOVED, text)
    return _PERSON_NAME.sub(REMOVED, text)


def redact_config(text: str) -> str:
    """The TOML text with the values of secret-named keys blanked (paths stay: they are not)."""
    return _SECRET_KEY.sub(lambda m: m.group(1) + f' "{REMOVED}"', text)


def read_journal(
    unit: str = JOURNAL_UNIT, lines: int = JOURNAL_LINES, timeout: float = JOURNAL_TIMEOUT
) -> tuple[str | None, str]:
    """The unit's recent log lines from journald, or (None, why not)."""
    command = ["journalctl", "-u", unit, "-n", str(lines), "-o", "cat", "--no-pager"]
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError:
        return None, "journalctl is not installed on this system"
    except subprocess.TimeoutExpired:
        return None, f"journalctl did not answer within {timeout:.0f} s"
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()
        return None, f"journalctl exited with {done.returncode}: {reason[-1] if reason else ''}"
    text = done.stdout.decode("utf-8", "replace")
    if not text.strip() or text.startswith("-- No entries --"):
        return None, f"the journal holds no lines of {unit} (not run by systemd here?)"
    return text, f"{len(text.splitlines())} lines of journalctl -u {unit} -o cat"


def known_identities(services: WebServices) -> set[str]:
    """Patient names (and their components) and IDs the worklist cache holds, to scrub."""
    known: set[str] = set()
    if services.worklist is None:
        return known
    try:
        # Expired items too: their names may still be in the logs.
        items = [item for _expiry, item in services.worklist.snapshot().entries]
    except Exception:  # noqa: BLE001 - a closed cache: the other scrubbing rules still apply
        return known
    for item in items:
        known.update((item.patient_id, item.patient_name, item.accession_number))
        known.update(part for part in item.patient_name.split("^") if len(part) >= 3)
    return {k for k in known if k}


def build_bundle(services: WebServices, journal: JournalReader = read_journal) -> Bundle:
    """The support bundle of the running gateway as an in-memory zip."""
    now = services.clock.now()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    known = known_identities(services)
    log_text, log_note = journal()
    files: dict[str, str] = {
        # Not scrub(): a filename_pattern's '^' is no person name; the file holds no patient data.
        "config/gateway.toml": scrub_known(_config_text(services.config_path), known),
        "config/tls-files.json": _json(tls_files(services.config)),
        "versions.json": _json(versions(services, now)),
        "queue.json": scrub(_json(queue_summary(services)), known),
        "stats.json": scrub(_json(running_stats(services, now)), known),
        "audit.txt": audit_text(services, known),
        "logs/journal.txt": scrub(log_text, known) if log_text else f"no journal: {log_note}\n",
    }
    files["README.txt"] = _readme(stamp, services.version, log_note, sorted(files))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(f"support-{stamp}/{name}", time.gmtime(now)[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            # The one sink for every text of the bundle: no line a value could have forged.
            archive.writestr(info, safe_lines(files[name]))
    return Bundle(filename=f"dicom-gateway-support-{stamp}.zip", data=buffer.getvalue())


def _config_text(path: Path) -> str:
    try:
        return redact_config(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return f"# config file {path} could not be read: {exc}\n"


def tls_files(config: GatewayConfig) -> list[dict[str, Any]]:
    """Every TLS file the config names: where, and whether it exists (contents never read)."""
    sections: list[tuple[str, TlsSettings | None]] = [
        (f"destination {d.name}", d.tls) for d in config.destination
    ]
    if config.dicom_listener is not None:
        sections.append(("dicom_listener", config.dicom_listener.tls))
    if config.worklist is not None:
        sections.append(("worklist", config.worklist.tls))
    out: list[dict[str, Any]] = []
    for owner, tls in sections:
        if tls is None:
            continue
        for role in ("ca", "cert", "key"):
            path: Path = getattr(tls, role)
            out.append({"owner": owner, "role": role, "path": str(path), "exists": path.exists()})
    if config.web.cert is not None and config.web.key is not None:
        for role, path in (("cert", config.web.cert), ("key", config.web.key)):
            out.append({"owner": "web", "role": role, "path": str(path), "exists": path.exists()})
    return out


def versions(services: WebServices, now: float) -> dict[str, Any]:
    """Software versions and how long the gateway has run."""
    out: dict[str, Any] = {
        "gateway": services.version,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "os": _os_release(),
        "uptime_seconds": round(now - services.started_at, 1),
    }
    for package in ("pydicom", "pynetdicom", "cryptography", "fastapi", "uvicorn", "pyserial"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


def _os_release() -> str | None:
    try:
        text = Path("/etc/os-release").read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(r'^PRETTY_NAME="?([^"\n]*)"?$', text, re.M)
    return match.group(1) if match else None


def queue_summary(services: WebServices) -> dict[str, Any]:
    """Per destination: counts per state, oldest pending, bytes pending, last success/error."""
    out: dict[str, Any] = {}
    for name, stats in sorted(services.spool.stats().items()):
        out[name] = {
            "configured": stats.configured,
            "counts": {str(state): n for state, n in sorted(stats.counts.items())},
            "oldest_pending_at": _iso(stats.oldest_pending_at),
            "bytes_pending": stats.bytes_pending,
            "last_success_at": _iso(stats.last_success_at),
            "last_error": stats.last_error,
            "last_error_at": _iso(stats.last_error_at),
        }
    return out


def running_stats(services: WebServices, now: float) -> dict[str, Any]:
    """Counters of the listener, the serial ports and the drop folders; worklist freshness."""
    out: dict[str, Any] = {
        "listener": services.listener.stats() if services.listener is not None else None,
        "serial": {
            name: reader.stats() for name, reader in sorted(services.serial_readers.items())
        },
        "serial_port_open": {
            name: reader.port.is_open for name, reader in sorted(services.serial_readers.items())
        },
        "folders": {
            name: {"last_activity": _iso(watcher.last_activity)}
            for name, watcher in sorted(services.watchers.items())
        },
    }
    refresher = services.refresher
    if refresher is not None:
        out["worklist"] = {
            "last_success": _iso(refresher.last_success),
            "age_seconds": round(now - refresher.last_success, 1)
            if refresher.last_success
            else None,
            "last_count": refresher.last_count,
            "last_error": refresher.last_error,
        }
    return out


def audit_text(services: WebServices, known: Iterable[str] = (), limit: int = 500) -> str:
    """The last audit records, one line each: when, who, what (each a :func:`field`).

    Details may name accession numbers or typed demographics: only who, when and what. Each
    value is scrubbed first and then made one field, so a user name typed at the login form
    (CR, LF, quotes and all) stays one field of one line.
    """
    lines = [
        record(scrub(value, known) for value in (r.at, r.actor, r.action)) + "\n"
        for r in services.audit.read(limit)
    ]
    return "".join(lines) or "no audit records\n"


def _readme(stamp: str, version: str, log_note: str, names: list[str]) -> str:
    listing = "\n".join(f"  {name}" for name in names)
    return (
        f"DICOM edge gateway {version} support bundle, made {stamp}.\n\n"
        f"Files:\n{listing}\n\n"
        f"Logs: {log_note}.\n"
        "Not included: the queue database, queued objects, quarantine, the worklist cache,\n"
        "private keys and certificates (tls-files.json lists their paths). Patient fields,\n"
        "person names and the worklist's names and IDs were removed from every text.\n"
    )


def _json(value: Mapping[str, Any] | list[Any]) -> str:
    return json_line(value, indent=2, sort_keys=True, default=str) + "\n"


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
