"""Where a whole FTP upload lands (gateway.ingest.remote.landing), on a real filesystem."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.ingest.remote import landing
from gateway.ingest.remote.landing import Landing, companions, land, landing_places


def test_the_places_keep_the_name_and_try_the_companion_folder_first() -> None:
    final = Path("/d/sub/IMG0001.JPG")
    places = landing_places(final)
    assert [next(places) for _ in range(3)] == [
        final,
        Path("/d/sub/ftp-duplicate-2/IMG0001.JPG"),
        Path("/d/sub/ftp-duplicate-3/IMG0001.JPG"),
    ]
    assert len(list(landing_places(final))) == landing.MAX_DUPLICATES
    beside = Path("/d/sub/ftp-duplicate-5")
    assert next(landing_places(final, beside)) == beside / "IMG0001.JPG"
    assert list(landing_places(final, final.parent)) == list(landing_places(final))


def test_companions_are_a_file_and_its_sidecars() -> None:
    assert companions(Path("/d/a.jpg")) == [Path("/d/a.jpg.json"), Path("/d/a.jpg.meta")]
    assert companions(Path("/d/a.jpg.JSON")) == [Path("/d/a.jpg")]


@pytest.fixture
def upload(tmp_path: Path) -> tuple[Path, Path]:
    """A whole upload in its hidden staging folder, and the folder it goes to."""
    folder = tmp_path / "export"
    (folder / ".ftp-incoming").mkdir(parents=True)
    part = folder / ".ftp-incoming" / "abc.part"
    part.write_bytes(b"second study")
    return part, folder


def test_a_file_a_link_or_a_folder_in_the_way_is_never_used(
    upload: tuple[Path, Path], tmp_path: Path
) -> None:
    part, folder = upload
    (folder / "a.jpg").write_bytes(b"first study")
    (folder / "ftp-duplicate-2").write_bytes(b"the device's own file of that name")
    outside = tmp_path / "outside"
    outside.mkdir()
    (folder / "ftp-duplicate-3").symlink_to(outside)  # written by an SMB client, say
    (folder / "ftp-duplicate-4").mkdir()
    (folder / "ftp-duplicate-4" / "a.jpg").mkdir()  # a folder by that name
    assert land(part, folder / "a.jpg") == Landing(folder / "ftp-duplicate-5" / "a.jpg")
    assert (folder / "ftp-duplicate-5" / "a.jpg").read_bytes() == b"second study"
    assert (folder / "a.jpg").read_bytes() == b"first study"
    assert (folder / "ftp-duplicate-2").read_bytes() == b"the device's own file of that name"
    assert list(outside.iterdir()) == []
    assert not part.exists()


def test_a_companion_folder_that_is_gone_is_passed_over(upload: tuple[Path, Path]) -> None:
    part, folder = upload
    landing = land(part, folder / "a.jpg.json", folder / "ftp-duplicate-7")
    assert landing == Landing(folder / "a.jpg.json")
    assert not (folder / "ftp-duplicate-7").exists()


def test_a_companion_folder_turned_into_a_link_is_passed_over(
    upload: tuple[Path, Path], tmp_path: Path
) -> None:
    part, folder = upload
    outside = tmp_path / "outside"
    outside.mkdir()
    (folder / "ftp-duplicate-2").symlink_to(outside)
    landing = land(part, folder / "a.jpg.json", folder / "ftp-duplicate-2")
    assert landing == Landing(folder / "a.jpg.json")
    assert list(outside.iterdir()) == []


def test_when_every_place_is_taken_the_upload_stays_where_it_is(
    upload: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    part, folder = upload
    monkeypatch.setattr(landing, "MAX_DUPLICATES", 3)
    for where in (folder, folder / "ftp-duplicate-2", folder / "ftp-duplicate-3"):
        where.mkdir(exist_ok=True)
        (where / "a.jpg").write_bytes(b"waiting")
    with pytest.raises(FileExistsError):
        land(part, folder / "a.jpg")
    assert part.read_bytes() == b"second study"


def test_the_data_and_every_name_are_synced_before_it_counts_as_landed(
    upload: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a power cut the folder must still hold the file: its data, its name, and the
    name of the duplicate folder that was made for it (in the folder above)."""
    part, folder = upload
    (folder / "a.jpg").write_bytes(b"first study")
    synced: list[Path] = []
    real_fsync_file = landing.fsync_file

    def file_synced(path: Path) -> None:
        synced.append(path)
        real_fsync_file(path)

    monkeypatch.setattr(landing, "fsync_file", file_synced)
    monkeypatch.setattr(landing, "fsync_dir", synced.append)
    landed = land(part, folder / "a.jpg").place
    assert synced == [part, landed.parent, folder, part.parent]
    assert os.path.samefile(landed.parent.parent, folder)


def test_the_same_bytes_waiting_are_kept_beside_never_dropped(upload: tuple[Path, Path]) -> None:
    part, folder = upload
    data = part.read_bytes()
    (folder / "a.jpg").write_bytes(data)
    landing = land(part, folder / "a.jpg")
    assert landing == Landing(folder / "ftp-duplicate-2" / "a.jpg")
    assert (folder / "a.jpg").read_bytes() == data == landing.place.read_bytes()
    assert not part.exists()


def test_an_upload_whose_folder_is_gone_is_refused_with_that_reason(
    upload: tuple[Path, Path],
) -> None:
    part, folder = upload
    with pytest.raises(FileNotFoundError, match="is gone"):
        land(part, folder / "removed" / "a.jpg")
    assert part.exists()
    assert not (folder / "removed").exists()


def test_a_file_landed_onto_itself_stays(upload: tuple[Path, Path]) -> None:
    """RNFR a.jpg, RNTO a.jpg: the name is taken, by the file itself, which must not be
    removed as a copy of what is already there."""
    _, folder = upload
    (folder / "a.jpg").write_bytes(b"only copy")
    assert land(folder / "a.jpg", folder / "a.jpg") == Landing(folder / "a.jpg", already=True)
    assert (folder / "a.jpg").read_bytes() == b"only copy"
