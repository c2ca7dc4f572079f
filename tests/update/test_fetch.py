"""Bundle downloads: resume with Range, verification against the signed target, file:// URLs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tuf.api import exceptions
from tuf.api.metadata import TargetFile  # type: ignore[attr-defined]

from gateway.update.fetch import BundleRejectedError, RepoFetcher, download_bundle
from tests.update.repofactory import serve_repo

NAME = "dicom-gateway-9.9.9-x86_64.tar.gz"


def publish(root: Path, size: int = 3 * 1024 * 1024 + 17) -> tuple[bytes, TargetFile]:
    """A bundle-sized random file under root/targets/ and the target that signs it."""
    data = os.urandom(size)
    (root / "targets").mkdir(parents=True)
    path = root / "targets" / NAME
    path.write_bytes(data)
    return data, TargetFile.from_file(NAME, str(path), ["sha256"])


def test_a_cut_transfer_resumes_where_it_stopped(tmp_path: Path) -> None:
    data, target = publish(tmp_path / "repo")
    downloads = tmp_path / "downloads"
    with serve_repo(tmp_path / "repo") as server:
        server.cut_after = 1_000_000
        result = download_bundle(RepoFetcher(), server.targets_url + NAME, target, downloads)
        ranges = [r[1] for r in server.requests]
    assert ranges[0] is None
    assert ranges[1] is not None and int(ranges[1].removeprefix("bytes=").rstrip("-")) > 0
    assert result.requests == len(ranges) == 2
    assert result.path.read_bytes() == data
    assert not (downloads / f"{NAME}.part").exists()


def test_a_part_left_by_an_earlier_run_is_continued(tmp_path: Path) -> None:
    data, target = publish(tmp_path / "repo")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / f"{NAME}.part").write_bytes(data[:123_456])  # the updater was killed here
    with serve_repo(tmp_path / "repo") as server:
        result = download_bundle(RepoFetcher(), server.targets_url + NAME, target, downloads)
        assert server.requests == [(f"targets/{NAME}", "bytes=123456-")]
    assert result.resumed_from == 123_456
    assert result.path.read_bytes() == data


def test_a_whole_part_is_verified_without_a_body(tmp_path: Path) -> None:
    data, target = publish(tmp_path / "repo", size=4096)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / f"{NAME}.part").write_bytes(data)
    with serve_repo(tmp_path / "repo") as server:
        result = download_bundle(RepoFetcher(), server.targets_url + NAME, target, downloads)
        assert server.requests == []
    assert result.path.read_bytes() == data


def test_a_part_of_other_bytes_is_rejected_and_removed(tmp_path: Path) -> None:
    data, target = publish(tmp_path / "repo", size=100_000)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / f"{NAME}.part").write_bytes(b"\0" * 50_000)  # not the signed file's start
    with serve_repo(tmp_path / "repo") as server:
        url = server.targets_url + NAME
        with pytest.raises(BundleRejectedError, match="does not match its signed target"):
            download_bundle(RepoFetcher(), url, target, downloads)
        assert list(downloads.iterdir()) == []
        result = download_bundle(RepoFetcher(), url, target, downloads)  # the next try: fresh
    assert result.path.read_bytes() == data


def test_more_bytes_than_signed_are_refused(tmp_path: Path) -> None:
    _data, target = publish(tmp_path / "repo", size=100_000)
    short = TargetFile(50_000, dict(target.hashes), NAME)
    refused = pytest.raises(BundleRejectedError, match="more than the signed 50000 bytes")
    with serve_repo(tmp_path / "repo") as server, refused:
        download_bundle(RepoFetcher(), server.targets_url + NAME, short, tmp_path / "dl")
    assert list((tmp_path / "dl").iterdir()) == []


def test_missing_bundle_is_an_http_error_at_once(tmp_path: Path) -> None:
    _data, target = publish(tmp_path / "repo", size=1000)
    with serve_repo(tmp_path / "repo") as server:
        with pytest.raises(exceptions.DownloadHTTPError):
            download_bundle(RepoFetcher(), server.targets_url + "gone", target, tmp_path / "dl")
        assert len(server.requests) == 1


def test_an_already_verified_bundle_is_not_downloaded_again(tmp_path: Path) -> None:
    data, target = publish(tmp_path / "repo", size=2048)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / NAME).write_bytes(data)
    with serve_repo(tmp_path / "repo") as server:
        result = download_bundle(RepoFetcher(), server.targets_url + NAME, target, downloads)
        assert server.requests == []
    assert result.requests == 0


def test_file_urls_read_a_mounted_repository_and_resume(tmp_path: Path) -> None:
    data, target = publish(tmp_path / "stick", size=300_000)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / f"{NAME}.part").write_bytes(data[:1000])
    url = (tmp_path / "stick" / "targets" / NAME).as_uri()
    result = download_bundle(RepoFetcher(), url, target, downloads)
    assert result.resumed_from == 1000
    assert result.path.read_bytes() == data


def test_a_missing_file_on_a_stick_reads_as_not_found(tmp_path: Path) -> None:
    with pytest.raises(exceptions.DownloadHTTPError) as caught:
        RepoFetcher().fetch((tmp_path / "metadata" / "2.root.json").as_uri())
    assert caught.value.status_code == 404


def test_a_damaged_finished_bundle_is_downloaded_again(tmp_path: Path) -> None:
    data, target = publish(tmp_path / "repo", size=5000)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / NAME).write_bytes(b"x" * 5000)  # bit rot on the card since the last run
    with serve_repo(tmp_path / "repo") as server:
        result = download_bundle(RepoFetcher(), server.targets_url + NAME, target, downloads)
        assert server.requests == [(f"targets/{NAME}", None)]
    assert result.path.read_bytes() == data
