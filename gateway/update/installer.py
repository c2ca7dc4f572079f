"""Installing a verified release: unpack, switch ``current``, trial start, commit or roll back.

The contract with the update client (gateway/update/client.py)::

    installer = Installer(
        releases_root,            # /opt/dicom-gateway/releases
        current_link,             # /opt/dicom-gateway/current (symlink -> releases/<version>)
        state_dir,                # /var/lib/dicom-gateway (state under <state_dir>/update/)
        clock,                    # gateway.clock.Clock
        logger,                   # logging.Logger
        restart,                  # Callable[[], None]: `systemctl restart dicom-gateway`
        probe=...,                # Callable[[TrialContext], TrialVerdict] | None (selftest.py)
        trial_seconds=300.0,      # the deadline for READY + self-test of a new release
    )
    installer.resume()            # at every start of the updater, the health check, the gateway
    installer.downloading(offer)  # optional: record the download before it starts
    outcome = installer.install(bundle_path, offer)   # -> InstallOutcome

``offer`` is anything with ``version: str``, ``target_name: str`` and ``hashes: Mapping[str,
str]`` (the TUF target's hashes, e.g. {"sha256": "..."}): the client's UpdateOffer fits.
``install`` re-checks the bundle's sha256 against the offer before unpacking.

The states, persisted in ``<state_dir>/update/install.json`` (written atomically, fsync'd):
downloading -> verified -> installed -> trial -> committed | rolled_back -> reported.
Every step is idempotent, so ``resume()`` after a kill -9 or power cut at any point converges to
committed or rolled_back with ``current`` pointing at a whole release, never at a broken one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import posixpath
import shutil
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from gateway.clock import Clock
from gateway.logsetup import event
from gateway.spool.durable import fsync_dir
from gateway.update import symlink
from gateway.update.audit import UpdateAudit
from gateway.update.status import (
    COMMITTED,
    DOWNLOADING,
    FAILED,
    INSTALLED,
    REPORTED,
    ROLLED_BACK,
    TRIAL,
    VERIFIED,
    InstallRecord,
    add_to_blacklist,
    raise_floor,
    read_install,
    update_dir,
    write_install,
)

LOCK_FILE = "install.lock"
RELEASE_FILE = "RELEASE.json"
KEEP_RELEASES = 2  # `current` and the one before it
# Beside releases/<version>/, shipped by the .deb (gateway/update/deb.py): dpkg owns it.
DPKG_MARKER = ".dpkg"


class ReleaseOffer(Protocol):
    """What the installer needs from the client's offer."""

    @property
    def version(self) -> str: ...

    @property
    def target_name(self) -> str: ...

    @property
    def hashes(self) -> Mapping[str, str]: ...


@dataclass(frozen=True)
class TrialContext:
    """The release on trial, handed to the probe."""

    version: str
    previous: str | None
    restarted_at: float
    deadline: float


@dataclass(frozen=True)
class TrialVerdict:
    """The probe's answer: passed, failed for good (with the reason), or not decided yet."""

    passed: bool | None
    reason: str = ""


@dataclass(frozen=True)
class InstallOutcome:
    """Where an install ended: committed, rolled_back, failed, or pending (trial under way)."""

    version: str
    result: str
    reason: str = ""


PENDING = "pending"
Probe = Callable[[TrialContext], TrialVerdict]


class UnsafeBundleError(Exception):
    """The bundle is refused before anything is unpacked (bad hash, member outside its folder)."""


class InstallBusyError(Exception):
    """Another install is unfinished or another process holds the lock; resume() it first."""


class Installer:
    """Runs the persisted install state machine for one box (see the module docstring)."""

    def __init__(
        self,
        releases_root: Path,
        current_link: Path,
        state_dir: Path,
        clock: Clock,
        logger: logging.Logger,
        restart: Callable[[], None],
        *,
        probe: Probe | None = None,
        trial_seconds: float = 300.0,
        poll_seconds: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        checkpoint: Callable[[str], None] | None = None,
    ) -> None:
        self.releases_root = releases_root
        self.current_link = current_link
        self.state_dir = state_dir
        self._clock = clock
        self._log = logger
        self._restart = restart
        self._probe = probe
        self._trial_seconds = trial_seconds
        self._poll_seconds = poll_seconds
        self._sleep = sleep
        # Called at every step boundary (state names and "unpacked", "switched", ...); the
        # kill -9 tests stop the process there.
        self._checkpoint = checkpoint or (lambda _step: None)
        self._audit = UpdateAudit(state_dir, clock, "updater")

    # -- the public steps ---------------------------------------------------------------

    def downloading(self, offer: ReleaseOffer) -> None:
        """Record that the bundle for ``offer`` is being downloaded (no install may start)."""
        with self._lock():
            self._refuse_unfinished()
            self._write(self._new_record(DOWNLOADING, offer, Path()))

    def install(self, bundle_path: Path, offer: ReleaseOffer) -> InstallOutcome:
        """Install a verified bundle and run it through its trial start to the end."""
        with self._lock():
            record = read_install(self.state_dir)
            if record is not None and record.state not in (REPORTED, DOWNLOADING):
                raise InstallBusyError(f"install of {record.version} is at {record.state}")
            self._write(self._new_record(VERIFIED, offer, bundle_path))
            outcome = self._drive(gateway_starting=False)
        if outcome is None:
            raise AssertionError("an install that was started has an outcome")
        return outcome

    def resume(self, *, gateway_starting: bool = False) -> InstallOutcome | None:
        """Carry an unfinished install on to its end; None when none is unfinished.

        ``gateway_starting``: called just before the gateway starts (ExecStartPre), so never
        restart it and never wait for its trial; a trial past its deadline is rolled back.
        While another process drives the install, its state is answered as pending.
        """
        record = read_install(self.state_dir)
        if record is None or record.state in (REPORTED, DOWNLOADING):
            return None
        try:
            with self._lock(wait=False):
                return self._drive(gateway_starting=gateway_starting)
        except InstallBusyError:
            return InstallOutcome(record.version, PENDING, "another process is driving it")

    def conclude_trial(self, passed: bool, reason: str) -> InstallOutcome | None:
        """The health check's verdict on the release on trial: commit it or roll it back."""
        with self._lock():
            record = read_install(self.state_dir)
            if record is None or record.state != TRIAL or record.result is not None:
                return self._drive(gateway_starting=False)
            self._write(replace(record, result=COMMITTED if passed else ROLLED_BACK, reason=reason))
            return self._drive(gateway_starting=False)

    # -- the state machine --------------------------------------------------------------

    def _drive(self, *, gateway_starting: bool) -> InstallOutcome | None:
        symlink.remove_stale_links(self.current_link)
        while True:
            record = read_install(self.state_dir)
            if record is None or record.state == DOWNLOADING:
                return None
            self._checkpoint(record.state)
            if record.state == REPORTED:
                return InstallOutcome(record.version, record.result or FAILED, record.reason)
            if record.state == VERIFIED:
                self._unpack_step(record)
            elif record.state == INSTALLED:
                self._switch_step(record)
            elif record.state == TRIAL:
                if not self._trial_step(record, gateway_starting):
                    return InstallOutcome(record.version, PENDING, "trial under way")
            elif record.state in (COMMITTED, ROLLED_BACK, FAILED):
                self._report(record)
            else:
                raise ValueError(f"unknown install state {record.state!r}")

    def _unpack_step(self, record: InstallRecord) -> None:
        try:
            _check_digest(Path(record.bundle), record.sha256)
            unpack(Path(record.bundle), self.releases_root, record.version)
        except (UnsafeBundleError, OSError, tarfile.TarError) as exc:
            self._write(replace(record, state=FAILED, result=FAILED, reason=str(exc)))
            return
        self._checkpoint("unpacked")
        self._audit.record(
            "update.install",
            record.version,
            "ok",
            {"sha256": record.sha256, "target": record.target, "previous": record.previous},
        )
        self._write(replace(record, state=INSTALLED))

    def _switch_step(self, record: InstallRecord) -> None:
        symlink.switch(self.current_link, self.releases_root / record.version)
        self._checkpoint("switched")
        now = self._clock.now()
        self._write(replace(record, state=TRIAL, trial_deadline=now + self._trial_seconds))

    def _trial_step(self, record: InstallRecord, gateway_starting: bool) -> bool:
        """One pass over the trial; False while it is still under way."""
        if record.result == COMMITTED:
            raise_floor(self.state_dir, record.version)
            self._checkpoint("floor_raised")
            self._prune(keep={record.version, record.previous})
            self._write(replace(record, state=COMMITTED))
            return True
        if record.result == ROLLED_BACK:
            self._roll_back(record, gateway_starting)
            return True
        if symlink.current_release(self.current_link) != record.version:
            # `current` no longer names the release on trial: a rollback was under way.
            self._decide(record, False, "rollback interrupted; finishing it")
            return True
        if record.restarted_at is None:
            # The time before the restart: a restart that waits for the start sees READY
            # before it returns, and that READY belongs to this trial.
            asked = self._clock.now()
            if not gateway_starting:
                self._restart()
                self._checkpoint("restarted")
            self._write(replace(record, restarted_at=asked))
            return True
        deadline = record.trial_deadline or 0.0
        if gateway_starting or self._probe is None:
            if self._clock.now() >= deadline:
                self._decide(record, False, "trial deadline passed before the self-test passed")
                return True
            return False
        verdict = self._await_verdict(record, deadline)
        self._decide(record, bool(verdict.passed), verdict.reason)
        return True

    def _await_verdict(self, record: InstallRecord, deadline: float) -> TrialVerdict:
        assert self._probe is not None
        context = TrialContext(
            record.version, record.previous, record.restarted_at or 0.0, deadline
        )
        last = TrialVerdict(None, "no answer yet")
        while True:
            last = self._probe(context)
            if last.passed is not None:
                return last
            if self._clock.now() >= deadline:
                return TrialVerdict(False, f"trial deadline passed: {last.reason}")
            self._sleep(self._poll_seconds)

    def _decide(self, record: InstallRecord, passed: bool, reason: str) -> None:
        result = COMMITTED if passed else ROLLED_BACK
        event(
            self._log,
            logging.INFO if passed else logging.ERROR,
            "update.trial_" + ("passed" if passed else "failed"),
            version=record.version,
            reason=reason,
        )
        self._write(replace(record, result=result, reason=reason))

    def _roll_back(self, record: InstallRecord, gateway_starting: bool) -> None:
        previous = record.previous
        if previous is not None and (self.releases_root / previous).is_dir():
            symlink.switch(self.current_link, self.releases_root / previous)
            self._checkpoint("switched_back")
        add_to_blacklist(self.state_dir, record.version, record.reason, self._clock.now())
        self._checkpoint("blacklisted")
        if not gateway_starting:
            self._restart()
            self._checkpoint("restarted_old")
        self._prune(keep={previous})
        self._write(replace(record, state=ROLLED_BACK))

    def _report(self, record: InstallRecord) -> None:
        action = {COMMITTED: "commit", ROLLED_BACK: "rollback", FAILED: "install"}
        self._audit.record(
            "update." + action[record.state],
            record.version,
            "ok" if record.state == COMMITTED else "failed",
            {
                "sha256": record.sha256,
                "target": record.target,
                "previous": record.previous,
                "reason": record.reason,
            },
        )
        self._checkpoint("audited")
        self._write(replace(record, state=REPORTED))

    # -- helpers ------------------------------------------------------------------------

    def _new_record(self, state: str, offer: ReleaseOffer, bundle: Path) -> InstallRecord:
        now = self._clock.now()
        return InstallRecord(
            state=state,
            version=offer.version,
            target=offer.target_name,
            sha256=offer.hashes.get("sha256", ""),
            bundle=str(bundle),
            started_at=now,
            updated_at=now,
            previous=symlink.current_release(self.current_link),
        )

    def _refuse_unfinished(self) -> None:
        record = read_install(self.state_dir)
        if record is not None and record.state not in (REPORTED, DOWNLOADING):
            raise InstallBusyError(f"install of {record.version} is at {record.state}")

    def _write(self, record: InstallRecord) -> None:
        record = replace(record, updated_at=self._clock.now())
        write_install(self.state_dir, record)
        event(
            self._log,
            logging.INFO,
            "update.state",
            version=record.version,
            state=record.state,
            result=record.result or "",
        )

    def _prune(self, keep: set[str | None]) -> None:
        """Remove releases other than ``keep`` and leftovers of interrupted unpacks."""
        if not self.releases_root.is_dir():
            return
        keep_names = {name for name in keep if name}
        current = symlink.current_release(self.current_link)
        if current:
            keep_names.add(current)
        for entry in sorted(self.releases_root.iterdir()):
            if entry.name in keep_names or not entry.is_dir() or entry.is_symlink():
                continue
            if entry.with_name(entry.name + DPKG_MARKER).exists():
                # dpkg owns it (the .deb's release): `apt remove` deletes it, not the updater,
                # or dpkg's file list would name files that are gone.
                continue
            # Rename first: a crash mid-delete leaves a name no install will take for a release.
            doomed = entry
            if not entry.name.startswith(".") or not entry.name.endswith(".deleting"):
                doomed = entry.with_name(f".{entry.name}.deleting")
                entry.rename(doomed)
                fsync_dir(self.releases_root)
            shutil.rmtree(doomed)
            event(self._log, logging.INFO, "update.pruned", release=entry.name)

    @contextlib.contextmanager
    def _lock(self, wait: bool = True) -> Iterator[None]:
        folder = update_dir(self.state_dir)
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise InstallBusyError("another updater process is installing") from None
            yield
        finally:
            os.close(fd)


# -- the bundle ---------------------------------------------------------------------------


def _check_digest(bundle: Path, sha256: str) -> None:
    if not sha256:
        raise UnsafeBundleError("the offer carries no sha256 for the bundle")
    digest = hashlib.sha256()
    with bundle.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != sha256.lower():
        raise UnsafeBundleError(
            f"tampered: bundle sha256 {digest.hexdigest()} is not the signed {sha256}"
        )


def unpack(bundle: Path, releases_root: Path, version: str) -> Path:
    """Unpack ``bundle`` to ``releases_root/<version>`` via ``<version>.tmp``; idempotent.

    Whether it succeeds or is refused (UnsafeBundleError, a broken archive), ``<version>.tmp``
    is gone when it returns.
    """
    final = releases_root / version
    if final.is_dir():
        return final  # only ever renamed into place whole
    releases_root.mkdir(parents=True, exist_ok=True)
    staging = releases_root / f"{version}.tmp"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        _unpack_into(bundle, staging, final, version)
    except BaseException:
        # A refused (or broken) bundle leaves nothing behind, not even its half-unpacked tree.
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_dir(releases_root)
    shutil.rmtree(staging)
    return final


def _unpack_into(bundle: Path, staging: Path, final: Path, version: str) -> None:
    """Extract, check and rename the release folder to ``final``; raises on a refused bundle."""
    top = f"dicom-gateway-{version}"
    with tarfile.open(bundle, "r:gz") as tar:
        members = tar.getmembers()
        check_members(members, top)
        # The "tar" filter again refuses anything landing outside and drops setuid bits.
        tar.extractall(staging, members=members, filter="tar")
    release_dir = staging / top
    if not release_dir.is_dir():
        raise UnsafeBundleError(f"bundle has no folder {top}/")
    loose = staging / RELEASE_FILE
    if loose.is_file() and not (release_dir / RELEASE_FILE).exists():
        loose.rename(release_dir / RELEASE_FILE)
    _check_release_file(release_dir, version)
    # One sync for the whole tree: fsync of each of a virtualenv's thousands of files is slow
    # on an SD card and buys nothing over it before the rename that publishes the release.
    os.sync()
    release_dir.rename(final)


def _check_release_file(release_dir: Path, version: str) -> None:
    try:
        info = json.loads((release_dir / RELEASE_FILE).read_bytes())
    except (OSError, ValueError) as exc:
        raise UnsafeBundleError(f"{RELEASE_FILE} missing or unreadable: {exc}") from None
    if str(info.get("version")) != version:
        raise UnsafeBundleError(f"{RELEASE_FILE} says {info.get('version')}, offer says {version}")


def check_members(members: list[tarfile.TarInfo], top: str) -> None:
    """Refuse a bundle whose members could land outside its folder, or are not plain files."""
    seen: set[str] = set()
    links: set[str] = set()
    for member in members:
        name = _inside(member.name, top, member.name)
        if name in seen:
            raise UnsafeBundleError(f"member {member.name!r} appears twice")
        seen.add(name)
        parent = posixpath.dirname(name)
        while parent:
            if parent in links:
                raise UnsafeBundleError(f"member {member.name!r} lies under a link")
            parent = posixpath.dirname(parent)
        if member.isdir() or member.isfile():
            continue
        if member.islnk():
            _inside(member.linkname, top, member.name)
        elif member.issym():
            links.add(name)
            _check_symlink(member, name, top)
        else:
            raise UnsafeBundleError(f"member {member.name!r} is a device, fifo or special file")


def _inside(path: str, top: str, member: str) -> str:
    """``path`` normalised, when it is ``top``, under it, or the loose RELEASE.json."""
    if path.startswith("/") or "\\" in path:
        raise UnsafeBundleError(f"member {member!r}: absolute or odd path {path!r}")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts or not parts:
        raise UnsafeBundleError(f"member {member!r}: path {path!r} leaves the release folder")
    normal = "/".join(parts)
    if parts[0] != top and normal != RELEASE_FILE:
        raise UnsafeBundleError(f"member {member!r} is outside {top}/")
    return normal


def _check_symlink(member: tarfile.TarInfo, name: str, top: str) -> None:
    # Bundles are built with `venv --copies`, so no link, not even bin/python, leaves.
    target = member.linkname
    if target.startswith("/"):
        raise UnsafeBundleError(f"link {member.name!r} points outside to {target!r}")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if resolved != top and not resolved.startswith(top + "/"):
        raise UnsafeBundleError(f"link {member.name!r} points outside to {target!r}")
