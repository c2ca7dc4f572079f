"""The update client against a real TUF repository served on 127.0.0.1 (with Range)."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.cli_update import UpdateContext, register
from gateway.clock import FakeClock, SystemClock
from gateway.update.audit import UpdateAudit
from gateway.update.client import (
    BoxState,
    RepositoryRejectedError,
    RepositoryUnreachableError,
    UpdateClient,
    UpdateOffer,
    UpdateSettings,
    device_id,
    rollout_bucket,
)
from gateway.update.fetch import BundleRejectedError
from gateway.update.installer import Installer, InstallOutcome, TrialVerdict
from gateway.update.offline import STICK_FOLDER, NotARepositoryError, offline_settings
from gateway.update.repo import target_name
from tests.update.repofactory import HOST_ARCH, FakeRelease, RepoFixture, build_repo, serve_repo

OTHER_ARCH = "aarch64" if HOST_ARCH == "x86_64" else "x86_64"


def make_client(
    state: Path,
    server_url: str,
    root: bytes,
    *,
    installed: str = "1.0.0",
    floor: str | None = None,
    blacklist: frozenset[str] = frozenset(),
    channel: str = "stable",
    hardware: str = "generic",
    device: str = "box-1",
) -> UpdateClient:
    settings = UpdateSettings(server_url, channel=channel, hardware=hardware, arch=HOST_ARCH)
    box = BoxState(installed, floor, blacklist, device)
    return UpdateClient(settings, state, root, box, UpdateAudit(state, SystemClock(), "test"))


def test_happy_path_offers_newest_release_and_downloads_it_verified(tmp_path: Path) -> None:
    fx = build_repo(tmp_path, [FakeRelease("1.0.0"), FakeRelease("1.1.0"), FakeRelease("1.2.0")])
    with serve_repo(fx.path) as server:
        client = make_client(tmp_path / "state", server.base_url, fx.root_bytes)
        result = client.evaluate()
        offer = result.offer
        assert offer is not None
        assert offer.version == "1.2.0"
        assert offer.target_name == target_name("1.2.0", HOST_ARCH)
        reasons = {s.version: s.reason for s in result.skipped}
        assert reasons["1.1.0"] == "1.2.0 is newer"
        assert "not newer than the installed 1.0.0" in reasons["1.0.0"]

        download = client.download(offer)
    bundle = fx.bundles[offer.target_name]
    assert download.path.read_bytes() == bundle.read_bytes()
    assert download.path == tmp_path / "state" / "update" / "downloads" / offer.target_name
    assert offer.hashes["sha256"] == hashlib.sha256(bundle.read_bytes()).hexdigest()
    audit = UpdateAudit(tmp_path / "state", SystemClock(), "test").read()
    assert [(r.action, r.target, r.details["result"]) for r in audit] == [
        ("update.check", "release:1.2.0", "offer"),
        ("update.download", "release:1.2.0", "ok"),
    ]
    assert audit[1].details["hashes"] == dict(offer.hashes)


def test_nothing_newer_is_no_offer(tmp_path: Path) -> None:
    fx = build_repo(tmp_path, [FakeRelease("1.0.0")])
    with serve_repo(fx.path) as server:
        client = make_client(tmp_path / "state", server.base_url, fx.root_bytes)
        assert client.check() is None


def test_tampered_bundle_is_refused_and_discarded(tmp_path: Path) -> None:
    fx = build_repo(tmp_path, [FakeRelease("1.1.0")])
    hosted = fx.hosted_bundle(target_name("1.1.0", HOST_ARCH))
    data = bytearray(hosted.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same length, other content
    hosted.write_bytes(bytes(data))
    state = tmp_path / "state"
    with serve_repo(fx.path) as server:
        client = make_client(state, server.base_url, fx.root_bytes)
        offer = client.check()
        assert offer is not None
        with pytest.raises(BundleRejectedError, match=r"^tampered: .*does not match its signed"):
            client.download(offer)
    downloads = state / "update" / "downloads"
    assert list(downloads.iterdir()) == []  # neither the .part nor a final file is kept
    last = UpdateAudit(state, SystemClock(), "test").read()[-1]
    assert (last.action, last.details["result"], last.details["kind"]) == (
        "update.download",
        "refused",
        "tampered",
    )


def test_tampered_metadata_is_refused(tmp_path: Path) -> None:
    fx = build_repo(tmp_path, [FakeRelease("1.1.0")])
    version = fx.repo.snapshot().signed.meta["targets.json"].version
    path = fx.metadata_dir / f"{version}.targets.json"
    path.write_bytes(path.read_bytes().replace(b'"rollout": 100', b'"rollout": 99 '))
    with serve_repo(fx.path) as server:
        client = make_client(tmp_path / "state", server.base_url, fx.root_bytes)
        with pytest.raises(RepositoryRejectedError) as caught:
            client.check()
    assert caught.value.kind == "tampered"


def _pad(path: Path, n: int) -> None:
    path.write_bytes(path.read_bytes() + b" " * n)  # still the same JSON, longer


def _shorten(path: Path) -> None:
    path.write_bytes(path.read_bytes().rstrip()[:-1])


def _garble(path: Path) -> None:
    path.write_bytes(b"x" * len(path.read_bytes()))


# Issue 11 item 6: every form of a changed metadata file (a compromised mirror) is "tampered".
TAMPER_FORMS = {
    "targets longer than signed": ("{targets}", lambda p: _pad(p, 64)),
    "targets shorter than signed": ("{targets}", _shorten),
    "snapshot longer than signed": ("{snapshot}", lambda p: _pad(p, 64)),
    "timestamp beyond its bound": ("timestamp.json", lambda p: _pad(p, 20_000)),
    "timestamp not metadata": ("timestamp.json", _garble),
}


def _tamper(fx: RepoFixture, form: str) -> None:
    name, change = TAMPER_FORMS[form]
    meta = fx.repo.snapshot().signed.meta["targets.json"]
    snapshot = fx.repo.timestamp().signed.snapshot_meta
    path = fx.metadata_dir / name.format(
        targets=f"{meta.version}.targets.json", snapshot=f"{snapshot.version}.snapshot.json"
    )
    change(path)


@pytest.mark.parametrize("form", sorted(TAMPER_FORMS))
def test_tampered_metadata_in_any_form_is_refused_as_tampered(tmp_path: Path, form: str) -> None:
    fx = build_repo(tmp_path, [FakeRelease("1.1.0")])
    _tamper(fx, form)
    state = tmp_path / "state"
    with serve_repo(fx.path) as server:
        client = make_client(state, server.base_url, fx.root_bytes)
        with pytest.raises(RepositoryRejectedError) as caught:
            client.check()
    assert caught.value.kind == "tampered"
    last = UpdateAudit(state, SystemClock(), "test").read()[-1]
    assert (last.action, last.details["result"], last.details["kind"]) == (
        "update.check",
        "refused",
        "tampered",
    )


def test_replayed_older_metadata_is_refused(tmp_path: Path) -> None:
    fx = build_repo(tmp_path, [FakeRelease("1.1.0")])
    old = tmp_path / "old-repo"
    shutil.copytree(fx.path, old)
    fx.publish(FakeRelease("1.2.0"))
    state = tmp_path / "state"
    with serve_repo(fx.path) as server:
        offer = make_client(state, server.base_url, fx.root_bytes).check()
        assert offer is not None and offer.version == "1.2.0"
        server.root = old  # a mirror (or an attacker) now serves yesterday's repository
        client = make_client(state, server.base_url, fx.root_bytes)
        with pytest.raises(RepositoryRejectedError) as caught:
            client.check()
    assert caught.value.kind == "replayed"
    assert "older than this box already trusts" in str(caught.value)


def test_expired_metadata_is_refused(tmp_path: Path) -> None:
    long_ago = FakeClock(start=time.time() - 30 * 86400)  # the 3-day timestamp ran out
    fx = build_repo(tmp_path, [FakeRelease("1.1.0")], clock=long_ago)
    state = tmp_path / "state"
    with serve_repo(fx.path) as server:
        client = make_client(state, server.base_url, fx.root_bytes)
        with pytest.raises(RepositoryRejectedError) as caught:
            client.check()
    assert caught.value.kind == "expired"
    last = UpdateAudit(state, SystemClock(), "test").read()[-1]
    assert (last.action, last.details["result"], last.details["kind"]) == (
        "update.check",
        "refused",
        "expired",
    )


def test_wrong_arch_and_hardware_are_skipped_with_reasons(tmp_path: Path) -> None:
    fx = build_repo(
        tmp_path,
        [
            FakeRelease("1.1.0", arch=OTHER_ARCH),
            FakeRelease("1.2.0", hardware=("rpi5",)),
        ],
    )
    with serve_repo(fx.path) as server:
        result = make_client(tmp_path / "state", server.base_url, fx.root_bytes).evaluate()
    assert result.offer is None
    reasons = {s.version: s.reason for s in result.skipped}
    assert reasons["1.1.0"] == f"built for {OTHER_ARCH}, this box is {HOST_ARCH}"
    assert reasons["1.2.0"] == "for hardware rpi5, this box is generic"


def test_rollout_bucket_decides_who_gets_a_release(tmp_path: Path) -> None:
    name = target_name("1.1.0", HOST_ARCH)
    inside = next(f"box-{i}" for i in range(1000) if rollout_bucket(f"box-{i}", name) < 10)
    outside = next(f"box-{i}" for i in range(1000) if rollout_bucket(f"box-{i}", name) >= 10)
    fx = build_repo(tmp_path, [FakeRelease("1.1.0", rollout=10)])
    with serve_repo(fx.path) as server:
        url, root = server.base_url, fx.root_bytes
        offered = make_client(tmp_path / "a", url, root, device=inside).check()
        refused = make_client(tmp_path / "b", url, root, device=outside).evaluate()
    assert offered is not None and offered.bucket < 10
    assert refused.offer is None
    bucket = rollout_bucket(outside, name)
    assert refused.skipped[0].reason == f"rollout 10 %, this box is in bucket {bucket}"


def test_beta_release_reaches_beta_boxes_only(tmp_path: Path) -> None:
    fx = build_repo(tmp_path, [FakeRelease("1.1.0"), FakeRelease("1.2.0b1", channel="beta")])
    with serve_repo(fx.path) as server:
        url, root = server.base_url, fx.root_bytes
        stable = make_client(tmp_path / "s", url, root).evaluate()
        beta = make_client(tmp_path / "b", url, root, channel="beta").check()
    assert stable.offer is not None and stable.offer.version == "1.1.0"
    assert {s.version: s.reason for s in stable.skipped}["1.2.0b1"] == (
        "beta channel, this box is stable"
    )
    assert beta is not None and beta.version == "1.2.0b1"


def test_below_the_floor_min_from_and_blacklist_are_refused(tmp_path: Path) -> None:
    fx = build_repo(
        tmp_path,
        [FakeRelease("1.1.0"), FakeRelease("1.3.0"), FakeRelease("2.0.0", min_from="1.2.0")],
    )
    with serve_repo(fx.path) as server:
        result = make_client(
            tmp_path / "state",
            server.base_url,
            fx.root_bytes,
            floor="1.2.0",  # 1.2.0 was committed here once, then the box went back to 1.0.0
            blacklist=frozenset({"1.3.0"}),
        ).evaluate()
    assert result.offer is None
    reasons = {s.version: s.reason for s in result.skipped}
    assert reasons["1.1.0"] == "below the floor 1.2.0 (never go back)"
    assert reasons["1.3.0"] == "blacklisted: it failed its trial start here"
    assert reasons["2.0.0"] == "needs 1.2.0 or later installed first"


def test_cut_download_resumes_with_a_range_request(tmp_path: Path) -> None:
    fx = build_repo(tmp_path, [FakeRelease("1.1.0")])
    name = target_name("1.1.0", HOST_ARCH)
    size = fx.bundles[name].stat().st_size
    with serve_repo(fx.path) as server:
        client = make_client(tmp_path / "state", server.base_url, fx.root_bytes)
        offer = client.check()
        assert offer is not None
        server.cut_after = size // 3
        result = client.download(offer)
        bundle_requests = [r for r in server.requests if r[0].startswith("targets/")]
    assert bundle_requests == [
        (f"targets/{offer.hashes['sha256']}.{name}", None),
        (f"targets/{offer.hashes['sha256']}.{name}", f"bytes={size // 3}-"),
    ]
    assert result.requests == 2
    assert result.path.read_bytes() == fx.bundles[name].read_bytes()


def test_unreachable_repository_is_a_retry_later(tmp_path: Path) -> None:
    fx = build_repo(tmp_path / "x", [FakeRelease("1.1.0")])
    with serve_repo(fx.path) as server:
        url = server.base_url
    client = make_client(tmp_path / "state", url, fx.root_bytes)  # the server is gone now
    with pytest.raises(RepositoryUnreachableError):
        client.check()


def test_device_id_prefers_machine_id_else_keeps_a_generated_one(tmp_path: Path) -> None:
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("abc123\n")
    assert device_id(tmp_path / "state", machine_id) == "abc123"
    missing = tmp_path / "none"
    made = device_id(tmp_path / "state", missing)
    assert len(made) == 32
    assert device_id(tmp_path / "state", missing) == made
    assert (tmp_path / "state" / "update" / "device-id").read_text().strip() == made


# -- offline (USB stick) ---------------------------------------------------------------------


def test_offline_stick_gets_the_same_checks(tmp_path: Path) -> None:
    fx = build_repo(tmp_path, [FakeRelease("1.1.0")])
    stick = tmp_path / "usb"
    shutil.copytree(fx.path, stick / STICK_FOLDER)
    state = tmp_path / "state"
    settings = offline_settings(UpdateSettings("", arch=HOST_ARCH), stick)
    audit = UpdateAudit(state, SystemClock(), "test")
    box = BoxState("1.0.0", None, frozenset(), "box-1")
    client = UpdateClient(settings, state, fx.root_bytes, box, audit)
    offer = client.check()
    assert offer is not None and offer.url.startswith("file://")
    assert client.download(offer).path.read_bytes() == fx.bundles[offer.target_name].read_bytes()

    fx.publish(FakeRelease("1.2.0"))
    with serve_repo(fx.path) as server:  # the box goes online and sees a newer repository
        newer = make_client(state, server.base_url, fx.root_bytes).check()
        assert newer is not None and newer.version == "1.2.0"
    old_stick = UpdateClient(settings, state, fx.root_bytes, box, audit)
    with pytest.raises(RepositoryRejectedError) as caught:
        old_stick.check()  # yesterday's stick is a replay now
    assert caught.value.kind == "replayed"


def test_offline_path_without_a_repository_says_so(tmp_path: Path) -> None:
    with pytest.raises(NotARepositoryError, match="is the stick mounted"):
        offline_settings(UpdateSettings("", arch=HOST_ARCH), tmp_path)


# -- the command ------------------------------------------------------------------------------


@dataclass
class RecordingInstaller:
    """Stands in for gateway.update.installer.Installer: records what it is handed."""

    handed: list[tuple[Path, UpdateOffer]] = field(default_factory=list)
    downloading_seen: list[str] = field(default_factory=list)

    def resume(self) -> InstallOutcome | None:
        return None

    def downloading(self, offer: UpdateOffer) -> None:
        self.downloading_seen.append(offer.version)

    def install(self, bundle_path: Path, offer: UpdateOffer) -> InstallOutcome:
        self.handed.append((bundle_path, offer))
        return InstallOutcome(offer.version, "committed", "self-test passed")


def run_update(argv: list[str], installer: RecordingInstaller) -> int:
    parser = argparse.ArgumentParser(prog="dicom-gateway")
    register(parser.add_subparsers(dest="command", required=True), lambda _ctx: installer)
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_check_apply_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway import __version__

    fx = build_repo(tmp_path, [FakeRelease("99.0.0"), FakeRelease("99.1.0", arch=OTHER_ARCH)])
    state = tmp_path / "state"
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nstate_dir = "{state}"\n')
    (tmp_path / "root.json").write_bytes(fx.root_bytes)
    installer = RecordingInstaller()
    with serve_repo(fx.path) as server:
        common = ["--config", str(config), "--install-root", str(tmp_path / "opt")]
        source = [
            "--repository-url",
            server.base_url,
            "--trusted-root",
            str(tmp_path / "root.json"),
        ]
        assert run_update(["update", "check", *common, *source], installer) == 0
        out = capsys.readouterr().out
        assert f"installed: {__version__}" in out
        assert "offer: 99.0.0" in out
        assert f"skipped {target_name('99.1.0', OTHER_ARCH)}: built for {OTHER_ARCH}" in out

        assert run_update(["update", "apply", *common, *source], installer) == 0
        assert "99.0.0: committed (self-test passed)" in capsys.readouterr().out
    assert installer.downloading_seen == ["99.0.0"]
    [(bundle, offer)] = installer.handed
    assert bundle.read_bytes() == fx.bundles[offer.target_name].read_bytes()

    assert run_update(["update", "status", *common, "--json"], installer) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["last_check"]["result"] == "offer"
    assert view["last_check"]["target"] == "release:99.0.0"


def test_cli_refuses_tampered_metadata_with_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fx = build_repo(tmp_path, [FakeRelease("99.0.0")])
    other = build_repo(tmp_path / "other")  # a root this repository was never signed by
    state = tmp_path / "state"
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nstate_dir = "{state}"\n')
    (tmp_path / "root.json").write_bytes(other.root_bytes)
    installer = RecordingInstaller()
    with serve_repo(fx.path) as server:
        argv = ["update", "apply", "--config", str(config), "--from-timer"]
        argv += ["--repository-url", server.base_url, "--trusted-root", str(tmp_path / "root.json")]
        assert run_update(argv, installer) == 1
    assert "refused: tampered" in capsys.readouterr().err
    assert installer.handed == []


def test_cli_from_timer_refuses_a_metadata_file_whose_length_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not "try later" (exit 0 from the timer, audited unreachable): refused, exit 1."""
    fx = build_repo(tmp_path, [FakeRelease("99.0.0")])
    _tamper(fx, "targets longer than signed")
    state = tmp_path / "state"
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nstate_dir = "{state}"\n')
    (tmp_path / "root.json").write_bytes(fx.root_bytes)
    installer = RecordingInstaller()
    with serve_repo(fx.path) as server:
        argv = ["update", "apply", "--config", str(config), "--from-timer"]
        argv += ["--repository-url", server.base_url, "--trusted-root", str(tmp_path / "root.json")]
        assert run_update(argv, installer) == 1
    assert "refused: tampered: metadata longer than signed" in capsys.readouterr().err
    assert installer.handed == [] and installer.downloading_seen == []
    last = UpdateAudit(state, SystemClock(), "test").read()[-1]
    assert (last.details["result"], last.details["kind"]) == ("refused", "tampered")


def test_cli_from_timer_treats_an_unreachable_repository_as_try_later(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fx = build_repo(tmp_path, [])
    with serve_repo(fx.path) as server:
        url = server.base_url
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n')
    (tmp_path / "root.json").write_bytes(fx.root_bytes)
    argv = ["update", "apply", "--config", str(config), "--repository-url", url]
    argv += ["--trusted-root", str(tmp_path / "root.json")]
    assert run_update([*argv, "--from-timer"], RecordingInstaller()) == 0
    assert run_update(argv, RecordingInstaller()) == 75
    assert "try later" in capsys.readouterr().err


def test_cli_apply_hands_the_verified_bundle_to_the_real_installer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fx = build_repo(tmp_path, [FakeRelease("99.0.0")])
    state, opt = tmp_path / "state", tmp_path / "opt"
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nstate_dir = "{state}"\n')
    (tmp_path / "root.json").write_bytes(fx.root_bytes)
    restarts: list[str] = []

    def installer(ctx: UpdateContext) -> Installer:
        return Installer(
            ctx.install_root / "releases",
            ctx.install_root / "current",
            ctx.state_dir,
            ctx.clock,
            logging.getLogger("test"),
            lambda: restarts.append("gateway"),
            probe=lambda _trial: TrialVerdict(True, "self-test passed"),
        )

    parser = argparse.ArgumentParser(prog="dicom-gateway")
    register(parser.add_subparsers(dest="command", required=True), installer)
    with serve_repo(fx.path) as server:
        argv = ["update", "apply", "--config", str(config), "--install-root", str(opt)]
        argv += ["--repository-url", server.base_url, "--trusted-root", str(tmp_path / "root.json")]
        args = parser.parse_args(argv)
        assert args.func(args) == 0
    assert "99.0.0: committed" in capsys.readouterr().out
    assert (opt / "current").resolve() == (opt / "releases" / "99.0.0").resolve()
    assert restarts == ["gateway"]
    actions = [
        (r.action, r.target, r.details["result"])
        for r in UpdateAudit(state, SystemClock(), "test").read()
    ]
    assert actions[:3] == [
        ("update.check", "release:99.0.0", "offer"),
        ("update.download", "release:99.0.0", "ok"),
        ("update.install", "release:99.0.0", "ok"),
    ]
    assert ("update.commit", "release:99.0.0", "ok") in actions
