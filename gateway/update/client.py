"""The update client: ask the signed repository whether there is a release for this box.

python-tuf's ``Updater`` does the trust work. It starts from the root baked into the install
(``gateway/update/trusted_root.json``, or the newer roots it has already walked to, cached in
``<state_dir>/update/metadata/``) and refuses what TUF refuses: a signature that does not verify
(tampered), metadata older than what this box already saw (replayed), expired metadata
(freeze), a snapshot that does not match its targets (mix-and-match). On top of that, a target
is offered only when its signed custom fields fit the box:

* ``arch`` is ours and ``hardware`` names our hardware profile;
* ``channel`` is ours (a ``beta`` box also takes ``stable`` releases, a ``stable`` box only
  ``stable``);
* it is newer than the installed version, not older than the floor (the highest version ever
  committed here), and ``min_from`` is at most the installed version;
* it is not blacklisted (it failed its trial start here before);
* the box's rollout bucket is inside the signed ``rollout`` percentage: bucket =
  sha256(device id + target name) as an integer, mod 100; offered when bucket < rollout.
  The bucket differs per release, so the same boxes are not always first.

Of the targets that fit, the newest is offered; every other one is listed with the reason.

Exceptions name the recovery::

    UpdateError
     ├── RepositoryUnreachableError   network or server trouble: try again at the next timer run
     └── RepositoryRejectedError      TUF refused the metadata (``kind``: tampered, replayed,
                                 expired, invalid): alert a human; nothing is installed.
                                 Which python-tuf error is which: gateway/update/refusal.py;
                                 tampering in any form (bad signature, length or hash
                                 changed, not parseable) is ``tampered``, never "try later"
    fetch.BundleRejectedError          the bundle does not match its signed target: discarded
"""

from __future__ import annotations

import hashlib
import logging
import platform
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version
from tuf.api import exceptions as tuf_errors

# tuf re-exports these names without __all__, which mypy --strict calls private.
from tuf.api.metadata import Metadata, Root, TargetFile, Targets  # type: ignore[attr-defined]
from tuf.ngclient.updater import Updater

from gateway.logsetup import event
from gateway.spool.durable import write_bytes_durably
from gateway.update.audit import UpdateAudit
from gateway.update.fetch import BundleRejectedError, DownloadResult, RepoFetcher, download_bundle
from gateway.update.refusal import UNREACHABLE, classify_refresh_error

log = logging.getLogger("gateway.update.client")

CHANNELS = ("stable", "beta")
MACHINE_ID = Path("/etc/machine-id")
TRUSTED_ROOT = Path(__file__).with_name("trusted_root.json")


def machine_arch() -> str:
    """The architecture name releases use for this machine (``aarch64``, ``x86_64``)."""
    machine = platform.machine()
    return {"arm64": "aarch64", "amd64": "x86_64"}.get(machine.lower(), machine)


class UpdateError(Exception):
    """Checking or downloading failed; nothing was installed."""


class RepositoryUnreachableError(UpdateError):
    """The repository could not be read (network, HTTP error, missing file): retry later."""


class RepositoryRejectedError(UpdateError):
    """TUF refused the repository's metadata; ``kind`` says how (tampered, replayed, expired)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


@dataclass(frozen=True)
class UpdateSettings:
    """Where to look and what this box is (the ``[update]`` section of the config)."""

    repository_url: str  # http(s)://host/path or file:///media/usb/repo: holds metadata/, targets/
    channel: str = "stable"
    hardware: str = "generic"
    arch: str = field(default_factory=lambda: machine_arch())
    maintenance_window: str | None = None  # "02:00-04:00" local time; None: no window


@dataclass(frozen=True)
class BoxState:
    """What is installed here and what this box will never take again."""

    installed: str
    floor: str | None
    blacklist: Collection[str]
    device_id: str


@dataclass(frozen=True)
class UpdateOffer:
    """A signed release this box should install (what the installer is handed)."""

    version: str
    target_name: str
    length: int
    hashes: Mapping[str, str]
    url: str  # where the bundle is downloaded from (hash-prefixed under consistent snapshots)
    channel: str
    rollout: int
    bucket: int
    min_from: str


@dataclass(frozen=True)
class Skipped:
    """A target that was not offered, and why."""

    target: str
    version: str | None
    reason: str


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: the offer (or None) and every target passed over."""

    offer: UpdateOffer | None
    skipped: tuple[Skipped, ...]
    targets_version: int  # the signed targets metadata version the decision was made on


def rollout_bucket(device_id: str, target_name: str) -> int:
    """This box's bucket (0..99) for one release."""
    return int(hashlib.sha256((device_id + target_name).encode()).hexdigest(), 16) % 100


def device_id(state_dir: Path, machine_id: Path = MACHINE_ID) -> str:
    """/etc/machine-id, or an id generated once and kept in ``<state_dir>/update/device-id``."""
    try:
        found = machine_id.read_text().strip()
    except OSError:
        found = ""
    if found:
        return found
    path = state_dir / "update" / "device-id"
    try:
        kept = path.read_text().strip()
    except FileNotFoundError:
        kept = ""
    if kept:
        return kept
    path.parent.mkdir(parents=True, exist_ok=True)
    made = uuid.uuid4().hex
    write_bytes_durably(path, made.encode() + b"\n")
    return made


def trusted_root_bytes(path: Path = TRUSTED_ROOT) -> bytes:
    """The root metadata baked into this install; UpdateError when the build carries none."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UpdateError(
            f"no trusted root at {path}: this build was not made by the release process"
        ) from None


class UpdateClient:
    """Checks the repository for a release that fits this box and downloads it verified."""

    def __init__(
        self,
        settings: UpdateSettings,
        state_dir: Path,
        trusted_root: bytes,
        box: BoxState,
        audit: UpdateAudit,
        fetcher: RepoFetcher | None = None,
    ) -> None:
        if settings.channel not in CHANNELS:
            raise ValueError(f"channel {settings.channel!r}: one of {', '.join(CHANNELS)}")
        self.settings = settings
        self.box = box
        self.metadata_dir = state_dir / "update" / "metadata"
        self.downloads_dir = state_dir / "update" / "downloads"
        self._root = trusted_root
        self._audit = audit
        self._fetcher = fetcher or RepoFetcher()
        base = settings.repository_url.rstrip("/")
        self._metadata_url = f"{base}/metadata/"
        self._targets_url = f"{base}/targets/"

    def check(self) -> UpdateOffer | None:
        """The newest release for this box, or None; raises RepositoryUnreachableError/Rejected."""
        return self.evaluate().offer

    def evaluate(self) -> CheckResult:
        """Refresh the signed metadata and decide; every decision is audited."""
        try:
            updater, targets = self._refresh()
            result = self._choose(updater, targets)
        except UpdateError as exc:
            kind = exc.kind if isinstance(exc, RepositoryRejectedError) else UNREACHABLE
            self._audit.record(
                "update.check",
                None,
                "refused" if isinstance(exc, RepositoryRejectedError) else "failed",
                {"reason": str(exc), "kind": kind, "installed": self.box.installed},
            )
            event(log, logging.WARNING, "update.check.failed", kind=kind, reason=str(exc))
            raise
        offer = result.offer
        self._audit.record(
            "update.check",
            offer.version if offer else None,
            "offer" if offer else "none",
            {
                "installed": self.box.installed,
                "targets_version": result.targets_version,
                "target": offer.target_name if offer else None,
                "hashes": dict(offer.hashes) if offer else None,
                "skipped": {s.target: s.reason for s in result.skipped},
            },
        )
        event(
            log,
            logging.INFO,
            "update.check",
            offer=offer.version if offer else None,
            skipped=len(result.skipped),
            targets_version=result.targets_version,
        )
        return result

    def download(self, offer: UpdateOffer) -> DownloadResult:
        """Download the offered bundle (resuming a cut one) and verify it against its target."""
        target = TargetFile(offer.length, dict(offer.hashes), offer.target_name)
        details: dict[str, Any] = {"target": offer.target_name, "hashes": dict(offer.hashes)}
        try:
            result = download_bundle(self._fetcher, offer.url, target, self.downloads_dir)
        except BundleRejectedError as exc:
            self._audit.record(
                "update.download",
                offer.version,
                "refused",
                details | {"reason": str(exc), "kind": exc.kind},
            )
            raise
        except (tuf_errors.DownloadError, OSError) as exc:
            self._audit.record(
                "update.download", offer.version, "failed", details | {"reason": str(exc)}
            )
            raise RepositoryUnreachableError(f"{offer.target_name}: {exc}") from exc
        self._audit.record(
            "update.download",
            offer.version,
            "ok",
            details | {"length": result.length, "resumed_from": result.resumed_from},
        )
        return result

    # -- internals --------------------------------------------------------------------------

    def _refresh(self) -> tuple[Updater, Targets]:
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        try:
            updater = Updater(
                str(self.metadata_dir),
                self._metadata_url,
                str(self.downloads_dir),
                self._targets_url,
                self._fetcher,
                bootstrap=self._root,
            )
            updater.refresh()
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
            verdict = classify_refresh_error(exc)
            if verdict is not None and verdict.refused:
                raise RepositoryRejectedError(verdict.kind, verdict.reason) from exc
            raise RepositoryUnreachableError(f"{self.settings.repository_url}: {exc}") from exc
        # The Updater keeps its verified targets to itself; it persisted them just now, after
        # verification, so the list is read back from there (our own state folder).
        targets = Metadata[Targets].from_file(str(self.metadata_dir / "targets.json"))
        return updater, targets.signed

    def _choose(self, updater: Updater, targets: Targets) -> CheckResult:
        fitting: list[tuple[Version, UpdateOffer]] = []
        skipped: list[Skipped] = []
        for name, info in sorted(targets.targets.items()):
            verdict = self._judge(name, info)
            if isinstance(verdict, Skipped):
                skipped.append(verdict)
            else:
                fitting.append((Version(verdict.version), verdict))
        fitting.sort(key=lambda pair: pair[0], reverse=True)
        offer = None
        for _version, candidate in fitting:
            if offer is None:
                offer = candidate
            else:
                skipped.append(
                    Skipped(candidate.target_name, candidate.version, f"{offer.version} is newer")
                )
        if offer is not None:
            # Confirm through the Updater's own lookup: the offer is what TUF trusts now.
            confirmed = updater.get_targetinfo(offer.target_name)
            if (
                confirmed is None
                or confirmed.hashes != dict(offer.hashes)
                or confirmed.length != offer.length
            ):
                raise RepositoryRejectedError(
                    "invalid", f"{offer.target_name} changed during the check"
                )
        return CheckResult(offer, tuple(skipped), targets.version)

    def _judge(self, name: str, info: TargetFile) -> UpdateOffer | Skipped:
        custom = info.custom
        raw_version = custom.get("version") if isinstance(custom, Mapping) else None
        version = str(raw_version) if raw_version is not None else None
        problem = _custom_problem(custom)
        if problem:
            return Skipped(name, version, problem)
        assert version is not None
        s, box = self.settings, self.box
        if name != f"dicom-gateway-{version}-{custom['arch']}.tar.gz":
            return Skipped(name, version, "its name does not match its signed version and arch")
        if custom["arch"] != s.arch:
            return Skipped(name, version, f"built for {custom['arch']}, this box is {s.arch}")
        if s.hardware not in custom["hardware"]:
            hardware = ", ".join(custom["hardware"])
            return Skipped(name, version, f"for hardware {hardware}, this box is {s.hardware}")
        if custom["channel"] != "stable" and custom["channel"] != s.channel:
            return Skipped(name, version, f"{custom['channel']} channel, this box is {s.channel}")
        new, installed = Version(version), _version(box.installed)
        if new <= installed:
            return Skipped(name, version, f"not newer than the installed {box.installed}")
        if box.floor is not None and new < _version(box.floor):
            return Skipped(name, version, f"below the floor {box.floor} (never go back)")
        if Version(custom["min_from"]) > installed:
            return Skipped(name, version, f"needs {custom['min_from']} or later installed first")
        if version in box.blacklist:
            return Skipped(name, version, "blacklisted: it failed its trial start here")
        bucket = rollout_bucket(box.device_id, name)
        if bucket >= custom["rollout"]:
            return Skipped(
                name, version, f"rollout {custom['rollout']} %, this box is in bucket {bucket}"
            )
        return UpdateOffer(
            version=version,
            target_name=name,
            length=info.length,
            hashes=dict(info.hashes),
            url=self._target_url(info),
            channel=custom["channel"],
            rollout=custom["rollout"],
            bucket=bucket,
            min_from=custom["min_from"],
        )

    def _target_url(self, info: TargetFile) -> str:
        root = Metadata[Root].from_file(str(self.metadata_dir / "root.json")).signed
        name = info.path
        if root.consistent_snapshot:
            head, sep, base = name.rpartition("/")
            name = f"{head}{sep}{next(iter(info.hashes.values()))}.{base}"
        return self._targets_url + name


def _custom_problem(custom: Any) -> str | None:
    """Why a target's signed custom fields cannot be used, or None."""
    if not isinstance(custom, Mapping):
        return "no release fields (not a gateway release)"
    missing = [
        k
        for k in ("version", "arch", "hardware", "min_from", "channel", "rollout")
        if k not in custom
    ]
    if missing:
        return f"release fields missing: {', '.join(missing)}"
    for key in ("version", "min_from"):
        try:
            Version(str(custom[key]))
        except InvalidVersion:
            return f"{key} {custom[key]!r} is not a version"
    if not isinstance(custom["hardware"], list) or not isinstance(custom["rollout"], int):
        return "hardware must be a list and rollout an integer"
    if custom["channel"] not in CHANNELS:
        return f"unknown channel {custom['channel']!r}"
    return None


def _version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        return Version("0")
