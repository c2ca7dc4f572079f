"""The release repository as a box sees it: python-tuf's own client verifies what we publish."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tuf.api.exceptions import ExpiredMetadataError
from tuf.ngclient import FetcherInterface, Updater

from gateway.clock import FakeClock
from gateway.update.repo import KeyRing, ReleaseFields, RepoError, TufRepository, target_name
from tests.update.repofactory import HOST_ARCH, FakeRelease, build_repo, serve_repo

DAY = 86400.0


class DiskFetcher(FetcherInterface):
    """Reads ``file:`` URLs: the repository folder as it sits on a USB stick."""

    def _fetch(self, url: str) -> Iterator[bytes]:
        path = Path(url.removeprefix("file://"))
        if not path.is_file():
            from tuf.api.exceptions import DownloadHTTPError

            raise DownloadHTTPError(f"{path} not found", 404)
        return iter([path.read_bytes()])


def client(tmp: Path, root: bytes, metadata_url: str, targets_url: str, **kw: object) -> Updater:
    """A fresh box: an empty cache and nothing but the root it was built with."""
    cache = tmp / "client-metadata"
    downloads = tmp / "client-downloads"
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    downloads.mkdir(exist_ok=True)
    return Updater(str(cache), metadata_url, str(downloads), targets_url, bootstrap=root, **kw)  # type: ignore[arg-type]


def test_two_releases_verify_over_http_with_their_signed_fields(tmp_path: Path) -> None:
    fx = build_repo(
        tmp_path,
        [FakeRelease("1.0.0"), FakeRelease("1.1.0", channel="beta", rollout=25, min_from="1.0.0")],
    )
    with serve_repo(fx.path) as server:
        updater = client(tmp_path, fx.root_bytes, server.metadata_url, server.targets_url)
        updater.refresh()
        old = updater.get_targetinfo(target_name("1.0.0", HOST_ARCH))
        new = updater.get_targetinfo(target_name("1.1.0", HOST_ARCH))
        assert old is not None and new is not None
        assert ReleaseFields.from_custom(new.custom) == ReleaseFields(
            "1.1.0", HOST_ARCH, ("rpi4", "rpi5", "generic"), "1.0.0", "beta", 25
        )
        assert ReleaseFields.from_custom(old.custom).channel == "stable"
        downloaded = Path(updater.download_target(new))
        assert downloaded.read_bytes() == fx.bundles[new.path].read_bytes()
        asked = [path for path, _ in server.requests]
    # Consistent snapshots: only the timestamp is fetched by a fixed name.
    assert "metadata/timestamp.json" in asked
    assert "metadata/3.snapshot.json" in asked
    assert "metadata/3.targets.json" in asked
    assert f"targets/{new.hashes['sha256']}.{new.path}" in asked
    assert not any(p in asked for p in ("metadata/snapshot.json", "metadata/targets.json"))


def test_repository_folder_verifies_from_disk_as_on_a_usb_stick(tmp_path: Path) -> None:
    fx = build_repo(tmp_path / "maint", [FakeRelease("1.0.0")])
    stick = tmp_path / "stick" / "dicom-gateway-repo"
    shutil.copytree(fx.path, stick)
    updater = client(
        tmp_path,
        fx.root_bytes,
        f"file://{stick}/metadata/",
        f"file://{stick}/targets/",
        fetcher=DiskFetcher(),
    )
    updater.refresh()
    info = updater.get_targetinfo(target_name("1.0.0", HOST_ARCH))
    assert info is not None
    assert Path(updater.download_target(info)).stat().st_size == info.length


def test_files_are_version_and_hash_prefixed_and_never_rewritten(tmp_path: Path) -> None:
    fx = build_repo(tmp_path, [FakeRelease("1.0.0")])
    first = {p.name: p.read_bytes() for p in fx.metadata_dir.iterdir()}
    fx.publish(FakeRelease("1.1.0"))
    after = {p.name: p.read_bytes() for p in fx.metadata_dir.iterdir()}
    changed = {name for name, data in first.items() if after[name] != data}
    assert changed == {"timestamp.json"}
    assert {"3.targets.json", "3.snapshot.json"} <= set(after)
    for name in fx.bundles:
        sha = fx.repo.targets().signed.targets[name].hashes["sha256"]
        assert (fx.targets_dir / f"{sha}.{name}").is_file()


def test_republishing_a_bundle_widens_its_rollout_but_other_contents_are_refused(
    tmp_path: Path,
) -> None:
    fx = build_repo(tmp_path, [FakeRelease("1.0.0", rollout=10)])
    name = target_name("1.0.0", HOST_ARCH)
    fx.repo.add_target(fx.bundles[name], FakeRelease("1.0.0", rollout=50).fields(), fx.keys())
    assert fx.repo.releases()[name].rollout == 50
    fx.repo.set_rollout("1.0.0", HOST_ARCH, 100, fx.keys())
    assert fx.repo.releases()[name].rollout == 100

    other = tmp_path / "other.tar.gz"
    other.write_bytes(b"not the published bundle")
    with pytest.raises(RepoError, match="already published"):
        fx.repo.add_target(other, FakeRelease("1.0.0").fields(), fx.keys())


def test_expired_timestamp_is_refused_until_refreshed(tmp_path: Path) -> None:
    # Published four days ago: the 3-day timestamp has lapsed, the 30-day snapshot has not.
    clock = FakeClock(start=time.time() - 4 * DAY)
    fx = build_repo(tmp_path, [FakeRelease("1.0.0")], clock=clock)
    with serve_repo(fx.path) as server:
        with pytest.raises(ExpiredMetadataError):
            client(tmp_path, fx.root_bytes, server.metadata_url, server.targets_url).refresh()
        clock.advance(4 * DAY)
        fx.repo.refresh_timestamp(fx.keys())
        client(tmp_path, fx.root_bytes, server.metadata_url, server.targets_url).refresh()


def test_refresh_also_resigns_a_snapshot_that_would_expire_first(tmp_path: Path) -> None:
    clock = FakeClock(start=time.time() - 29 * DAY)
    fx = build_repo(tmp_path, [FakeRelease("1.0.0")], clock=clock)
    before = fx.repo.snapshot().signed.version
    clock.advance(29 * DAY)
    fx.repo.refresh_timestamp(fx.keys())
    assert fx.repo.snapshot().signed.version == before + 1
    with serve_repo(fx.path) as server:
        client(tmp_path, fx.root_bytes, server.metadata_url, server.targets_url).refresh()


@pytest.mark.parametrize("role", ["root", "targets", "snapshot", "timestamp"])
def test_rotated_key_is_followed_by_a_box_that_knows_only_the_old_root(
    tmp_path: Path, role: str
) -> None:
    fx = build_repo(tmp_path, [FakeRelease("1.0.0")])
    shipped_root = fx.root_bytes
    old_ids = set(fx.repo.root().signed.roles[role].keyids)
    new = fx.repo.rotate_key(role, fx.keys_dir)
    root = fx.repo.root().signed
    assert root.version == 2
    assert set(root.roles[role].keyids) == {new.public_key.keyid}
    assert not old_ids & set(root.roles[role].keyids)
    fx.publish(FakeRelease("1.1.0"))
    with serve_repo(fx.path) as server:
        updater = client(tmp_path, shipped_root, server.metadata_url, server.targets_url)
        updater.refresh()
        assert updater.get_targetinfo(target_name("1.1.0", HOST_ARCH)) is not None
        assert "metadata/2.root.json" in [p for p, _ in server.requests]


def test_root_two_of_three_signs_with_two_keys_and_refuses_one(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    repo = TufRepository.init(
        tmp_path / "repo", keys, FakeClock(time.time()), root_keys=3, root_threshold=2
    )
    root_files = sorted(keys.glob("root-*.pem"))
    assert len(root_files) == 3
    offline = tmp_path / "safe"
    offline.mkdir()
    shutil.move(root_files[0], offline / root_files[0].name)  # one holder is away
    rotated_out = KeyRing.load(keys).signers.keys() & set(repo.root().signed.roles["root"].keyids)
    repo.rotate_key("root", keys, revoke=[sorted(rotated_out)[0][:10]])
    assert repo.root().signed.version == 2
    assert len(repo.root().signed.roles["root"].keyids) == 3

    current = {keyid[:12] for keyid in repo.root().signed.roles["root"].keyids}
    for path in keys.glob("root-*.pem"):
        shutil.move(path, offline / path.name)
    # Only one key of the current root is left (glob order is arbitrary: pick one on purpose).
    kept = next(p for p in sorted(offline.glob("root-*.pem")) if p.stem[5:] in current)
    (keys / kept.name).write_bytes(kept.read_bytes())
    before = set(keys.iterdir())
    with pytest.raises(RepoError, match="root: 1 of the 2 keys"):
        repo.rotate_key("timestamp", keys)
    assert set(keys.iterdir()) == before  # the unsigned new key is not left behind
    assert repo.root().signed.version == 2


def test_publishing_without_the_targets_key_is_refused(tmp_path: Path) -> None:
    fx = build_repo(tmp_path, [])
    for path in fx.keys_dir.glob("targets-*.pem"):
        path.unlink()
    bundle = tmp_path / "b.tar.gz"
    bundle.write_bytes(b"x")
    with pytest.raises(RepoError, match="targets: 0 of the 1 keys"):
        fx.repo.add_target(bundle, FakeRelease("1.0.0").fields(), fx.keys())
    assert fx.repo.releases() == {}


def test_keys_inside_the_repository_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RepoError, match="inside the repository"):
        TufRepository.init(tmp_path / "repo", tmp_path / "repo" / "keys", FakeClock())


def test_key_files_are_owner_only(tmp_path: Path) -> None:
    fx = build_repo(tmp_path, [])
    modes = {p.stat().st_mode & 0o777 for p in fx.keys_dir.glob("*.pem")}
    assert modes == {0o600}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"channel": "nightly"}, "channel"),
        ({"rollout": 101}, "rollout"),
        ({"arch": "armv7l"}, "arch"),
        ({"version": "1.x"}, "PEP 440"),
        ({"min_from": "2.0.0"}, "above the version"),
        ({"hardware": ()}, "hardware"),
    ],
)
def test_release_fields_are_checked_before_signing(change: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {
        "version": "1.4.0",
        "arch": "aarch64",
        "hardware": ("rpi4",),
        "min_from": "1.2.0",
        "channel": "stable",
        "rollout": 10,
    }
    with pytest.raises(RepoError, match=message):
        ReleaseFields(**{**fields, **change})  # type: ignore[arg-type]
