"""The installer: N -> N+1 committed, a failing release rolled back, kill -9 anywhere, bad tars."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.update import symlink
from gateway.update.audit import UpdateAudit
from gateway.update.installer import (
    DPKG_MARKER,
    PENDING,
    InstallBusyError,
    Installer,
    TrialContext,
    TrialVerdict,
    unpack,
)
from gateway.update.status import (
    REPORTED,
    read_blacklist,
    read_floor,
    read_install,
    read_status,
)
from tests.update.repofactory import FakeRelease, make_fake_bundle

TREE = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Offer:
    """The fields of the client's UpdateOffer the installer reads."""

    version: str
    target_name: str
    hashes: Mapping[str, str]


def offer_for(bundle: Path, version: str) -> Offer:
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
    return Offer(version, bundle.name, {"sha256": digest})


@dataclass
class Box:
    """A box in tmp: releases, `current`, state dir, a recording restart and a set verdict."""

    root: Path
    clock: FakeClock = field(default_factory=FakeClock)
    restarts: list[str | None] = field(default_factory=list)
    verdict: TrialVerdict = field(default_factory=lambda: TrialVerdict(True, "self-test passed"))
    probed: list[TrialContext] = field(default_factory=list)

    @property
    def releases(self) -> Path:
        return self.root / "opt" / "releases"

    @property
    def current(self) -> Path:
        return self.root / "opt" / "current"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def restart(self) -> None:
        self.restarts.append(symlink.current_release(self.current))

    def probe(self, context: TrialContext) -> TrialVerdict:
        self.probed.append(context)
        return self.verdict

    def installer(self, **kwargs: object) -> Installer:
        options: dict[str, object] = {"probe": self.probe, "sleep": self.clock.advance}
        options.update(kwargs)
        return Installer(
            self.releases,
            self.current,
            self.state,
            self.clock,
            logging.getLogger("test.installer"),
            self.restart,
            **options,  # type: ignore[arg-type]
        )

    def bundle(self, version: str) -> tuple[Path, Offer]:
        path = make_fake_bundle(FakeRelease(version), self.root / "bundles")
        return path, offer_for(path, version)

    def start_on(self, version: str) -> None:
        """The factory image: release ``version`` unpacked and current."""
        path, _ = self.bundle(version)
        unpack(path, self.releases, version)
        symlink.switch(self.current, self.releases / version)


@pytest.fixture
def box(tmp_path: Path) -> Box:
    (tmp_path / "bundles").mkdir()
    b = Box(tmp_path)
    b.start_on("1.0.0")
    return b


def test_new_release_that_passes_its_trial_is_committed_and_the_old_one_kept(box: Box) -> None:
    bundle, offer = box.bundle("1.1.0")

    outcome = box.installer().install(bundle, offer)

    assert outcome.result == "committed"
    assert symlink.current_release(box.current) == "1.1.0"
    assert os.readlink(box.current) == "releases/1.1.0"
    assert (box.releases / "1.1.0" / "bin" / "dicom-gateway").is_file()
    assert (box.releases / "1.0.0").is_dir()
    assert not (box.releases / "1.1.0.tmp").exists()
    assert box.restarts == ["1.1.0"]
    assert box.probed[0].version == "1.1.0"
    assert box.probed[0].previous == "1.0.0"
    assert read_floor(box.state) == "1.1.0"
    status = read_status(box.state)
    assert (status.state, status.version, status.result) == (REPORTED, "1.1.0", "committed")
    actions = [
        (r.action, r.details["result"]) for r in UpdateAudit(box.state, box.clock, "x").read()
    ]
    assert actions == [("update.install", "ok"), ("update.commit", "ok")]


def test_release_failing_its_self_test_is_rolled_back_blacklisted_and_reported(box: Box) -> None:
    box.verdict = TrialVerdict(False, "listener: C-ECHO refused")
    bundle, offer = box.bundle("1.1.0")

    outcome = box.installer().install(bundle, offer)

    assert outcome.result == "rolled_back"
    assert outcome.reason == "listener: C-ECHO refused"
    assert symlink.current_release(box.current) == "1.0.0"
    assert box.restarts == ["1.1.0", "1.0.0"]  # the new one tried, then the old one back
    assert read_blacklist(box.state) == {"1.1.0": "listener: C-ECHO refused"}
    assert read_floor(box.state) is None
    assert not (box.releases / "1.1.0").exists()
    status = read_status(box.state)
    assert (status.result, status.reason) == ("rolled_back", "listener: C-ECHO refused")
    last = UpdateAudit(box.state, box.clock, "x").read()[-1]
    assert (last.action, last.target, last.details["result"]) == (
        "update.rollback",
        "release:1.1.0",
        "failed",
    )
    assert last.details["reason"] == "listener: C-ECHO refused"


def test_release_never_ready_before_the_deadline_is_rolled_back(box: Box) -> None:
    box.verdict = TrialVerdict(None, "ready: the gateway has not reported READY")
    bundle, offer = box.bundle("1.1.0")

    outcome = box.installer(trial_seconds=60.0, poll_seconds=5.0).install(bundle, offer)

    assert outcome.result == "rolled_back"
    assert "deadline" in outcome.reason and "READY" in outcome.reason
    assert symlink.current_release(box.current) == "1.0.0"
    assert len(box.probed) == 13  # at 0, 5, ... 60 s of fake time


def test_only_current_and_previous_releases_are_kept(box: Box) -> None:
    for version in ("1.1.0", "1.2.0", "1.3.0"):
        bundle, offer = box.bundle(version)
        assert box.installer().install(bundle, offer).result == "committed"

    assert sorted(p.name for p in box.releases.iterdir()) == ["1.2.0", "1.3.0"]
    assert read_floor(box.state) == "1.3.0"


def test_a_release_dpkg_owns_is_never_pruned_and_the_others_still_are(box: Box) -> None:
    # The .deb ships releases/1.0.0/ with the marker releases/1.0.0.dpkg: the updater moving on
    # must leave dpkg's files to `apt remove`, else dpkg's file list names files that are gone.
    (box.releases / f"1.0.0{DPKG_MARKER}").write_text("dpkg's\n")
    for version in ("1.1.0", "1.2.0", "1.3.0"):
        bundle, offer = box.bundle(version)
        assert box.installer().install(bundle, offer).result == "committed"

    assert sorted(p.name for p in box.releases.iterdir()) == [
        "1.0.0",
        "1.0.0.dpkg",
        "1.2.0",
        "1.3.0",
    ]
    assert (box.releases / "1.0.0" / "bin" / "dicom-gateway").is_file()


def test_bundle_not_matching_the_signed_hash_is_refused_before_anything_changes(box: Box) -> None:
    bundle, offer = box.bundle("1.1.0")
    offer = Offer(offer.version, offer.target_name, {"sha256": "0" * 64})

    outcome = box.installer().install(bundle, offer)

    assert outcome.result == "failed"
    assert outcome.reason.startswith("tampered: bundle sha256")
    assert symlink.current_release(box.current) == "1.0.0"
    assert box.restarts == []
    assert not (box.releases / "1.1.0").exists()


def test_a_second_install_waits_for_the_unfinished_one(box: Box) -> None:
    bundle, offer = box.bundle("1.1.0")
    assert box.installer(probe=None).install(bundle, offer).result == PENDING
    other, other_offer = box.bundle("1.2.0")

    with pytest.raises(InstallBusyError):
        box.installer().install(other, other_offer)


def test_health_check_verdict_commits_a_trial_started_without_a_probe(box: Box) -> None:
    bundle, offer = box.bundle("1.1.0")
    assert box.installer(probe=None).install(bundle, offer).result == PENDING

    outcome = box.installer(probe=None).conclude_trial(True, "self-test passed")

    assert outcome is not None and outcome.result == "committed"
    assert read_floor(box.state) == "1.1.0"


def test_gateway_start_after_the_deadline_rolls_back_without_restarting_itself(box: Box) -> None:
    bundle, offer = box.bundle("1.1.0")
    assert box.installer(probe=None, trial_seconds=60).install(bundle, offer).result == PENDING
    box.clock.advance(30)
    still = box.installer(probe=None).resume(gateway_starting=True)
    assert still is not None and still.result == PENDING
    box.clock.advance(31)

    outcome = box.installer(probe=None).resume(gateway_starting=True)

    assert outcome is not None and outcome.result == "rolled_back"
    assert "deadline" in outcome.reason
    assert symlink.current_release(box.current) == "1.0.0"
    assert box.restarts == ["1.1.0"]  # only the trial's own restart; systemd starts the old one


def test_resume_with_nothing_unfinished_returns_none(box: Box) -> None:
    assert box.installer().resume() is None
    bundle, offer = box.bundle("1.1.0")
    box.installer().install(bundle, offer)

    assert box.installer().resume() is None


def test_resume_while_another_process_drives_the_install_answers_pending(box: Box) -> None:
    bundle, offer = box.bundle("1.1.0")
    assert box.installer(probe=None).install(bundle, offer).result == PENDING
    fd = os.open(box.state / "update" / "install.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as the health check does while it polls
        outcome = box.installer().resume()
    finally:
        os.close(fd)

    assert outcome is not None and (outcome.version, outcome.result) == ("1.1.0", PENDING)
    assert read_install(box.state) is not None


# -- kill -9 at every step boundary --------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import logging, os, signal, sys
    from pathlib import Path
    from gateway.clock import SystemClock
    from gateway.update.installer import Installer, TrialVerdict
    from tests.update.test_installer import Offer

    root, bundle, sha, kill_at, passes = sys.argv[1:6]
    root = Path(root)
    step, _, nth = kill_at.partition("#")
    seen = []

    def checkpoint(name):
        seen.append(name)
        if name == step and seen.count(name) == int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)

    def restart():
        with open(root / "restarts.log", "a") as fh:
            fh.write(os.readlink(root / "opt" / "current") + "\\n")

    def probe(context):
        return TrialVerdict(passes == "1", "self-test passed" if passes == "1" else "queue: broken")

    installer = Installer(
        root / "opt" / "releases", root / "opt" / "current", root / "state", SystemClock(),
        logging.getLogger("child"), restart, probe=probe, checkpoint=checkpoint,
    )
    installer.install(Path(bundle), Offer("1.1.0", "b.tar.gz", {"sha256": sha}))
    sys.exit(3)  # never reached when the kill point exists
    """
)

COMMON_STEPS = ["verified", "unpacked", "installed", "switched", "trial", "restarted", "trial#2"]
COMMIT_STEPS = ["trial#3", "floor_raised", "committed", "audited", "reported"]
ROLLBACK_STEPS = [
    "trial#3",
    "switched_back",
    "blacklisted",
    "restarted_old",
    "rolled_back",
    "audited",
]


@pytest.mark.parametrize(
    ("kill_at", "passes"),
    [(s, True) for s in COMMON_STEPS + COMMIT_STEPS]
    + [(s, False) for s in COMMON_STEPS + ROLLBACK_STEPS],
)
def test_kill_9_at_any_step_then_resume_converges(box: Box, kill_at: str, passes: bool) -> None:
    bundle, offer = box.bundle("1.1.0")
    env = {**os.environ, "PYTHONPATH": str(TREE)}
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(box.root),
            str(bundle),
            offer.hashes["sha256"],
            kill_at,
            "1" if passes else "0",
        ],
        env=env,
        cwd=TREE,
        capture_output=True,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    box.verdict = TrialVerdict(True, "ok") if passes else TrialVerdict(False, "queue: broken")

    outcome = box.installer().resume()

    expected = "committed" if passes else "rolled_back"
    record = read_install(box.state)
    assert record is not None and record.state == REPORTED
    assert record.result == expected
    if kill_at != "reported":  # killed once all was done: nothing left to resume
        assert outcome is not None and outcome.result == expected
    good = "1.1.0" if passes else "1.0.0"
    assert symlink.current_release(box.current) == good
    assert (box.current / "bin" / "dicom-gateway").is_file()
    assert not list(box.current.parent.glob(".current.*.tmp"))
    assert not (box.releases / "1.1.0.tmp").exists()
    if passes:
        assert read_floor(box.state) == "1.1.0"
    else:
        assert "1.1.0" in read_blacklist(box.state)
        assert not (box.releases / "1.1.0").exists()
    log = box.root / "restarts.log"
    restarts = [Path(r).name for r in log.read_text().split()] if log.exists() else []
    restarts += [r for r in box.restarts if r]
    assert restarts[-1] == good  # what runs at the end is what `current` names


# -- malicious bundles ----------------------------------------------------------------------


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


TOP = "dicom-gateway-1.1.0"
GOOD = [_file(f"{TOP}/RELEASE.json", json.dumps({"version": "1.1.0"}).encode())]
EVIL = {
    "absolute path": [_file("/tmp/evil")],
    "dot-dot": [_file(f"{TOP}/../../evil")],
    "outside the folder": [_file("other/evil")],
    "absolute link": [_special(f"{TOP}/lib64", tarfile.SYMTYPE, "/etc")],
    "relative link out": [_special(f"{TOP}/up", tarfile.SYMTYPE, "../../..")],
    "write through a link": [
        _special(f"{TOP}/lib", tarfile.SYMTYPE, "bin"),
        _file(f"{TOP}/lib/evil"),
    ],
    "hard link out": [_special(f"{TOP}/passwd", tarfile.LNKTYPE, "../etc/passwd")],
    "character device": [_special(f"{TOP}/null", tarfile.CHRTYPE)],
    "fifo": [_special(f"{TOP}/pipe", tarfile.FIFOTYPE)],
    "twice the same name": [_file(f"{TOP}/a"), _file(f"{TOP}/a")],
}


@pytest.mark.parametrize("kind", sorted(EVIL))
def test_malicious_bundle_is_refused_and_nothing_lands(box: Box, kind: str) -> None:
    bundle = box.root / "bundles" / "evil.tar.gz"
    bundle.write_bytes(_tar(GOOD + EVIL[kind]))

    outcome = box.installer().install(bundle, offer_for(bundle, "1.1.0"))

    assert outcome.result == "failed"
    assert outcome.reason
    assert symlink.current_release(box.current) == "1.0.0"
    assert not (box.releases / "1.1.0").exists()
    # Nothing of a refused bundle stays, not even its half-unpacked staging folder.
    assert not (box.releases / "1.1.0.tmp").exists()
    assert box.restarts == []


def test_bundle_whose_release_file_names_another_version_is_refused(box: Box) -> None:
    bundle = box.root / "bundles" / "wrong.tar.gz"
    bundle.write_bytes(_tar([_file(f"{TOP}/RELEASE.json", b'{"version": "9.9.9"}')]))

    outcome = box.installer().install(bundle, offer_for(bundle, "1.1.0"))

    assert outcome.result == "failed"
    assert "9.9.9" in outcome.reason
    assert symlink.current_release(box.current) == "1.0.0"
    assert not (box.releases / "1.1.0.tmp").exists()  # its unpacked tree is removed too
