"""Quarantine: rejected files moved aside durably, with their reason, never lost or overwritten."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.ingest.quarantine import INTERRUPTED, Quarantine


def _drop(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_put_moves_the_file_and_writes_its_reason_beside_it(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    src = _drop(tmp_path / "drop", "scan 1.jpg", data)
    clock = FakeClock(start=1_735_787_045.0)  # 2025-01-02T03:04:05Z
    quarantine = Quarantine(tmp_path / "state" / "quarantine", clock)

    moved = quarantine.put(src, "xray", "not an image")

    assert not src.exists()
    assert moved.parent == tmp_path / "state" / "quarantine"
    assert moved.name == "20250102T030405Z-1-scan 1.jpg"
    assert moved.read_bytes() == data
    reason = json.loads((moved.parent / "20250102T030405Z-1.reason.json").read_text())
    assert reason == {
        "reason": "not an image",
        "source": "xray",
        "original_path": str(src),
        "file": moved.name,
        "size": len(data),
        "sha256": _sha(data),
        "time": "2025-01-02T03:04:05Z",
        "epoch": 1_735_787_045.0,
    }
    assert stat.S_IMODE(moved.parent.stat().st_mode) == 0o700


def test_a_file_dropped_world_readable_is_private_once_quarantined(tmp_path: Path) -> None:
    """Issue 11 item 7: a hard link keeps the dropped file's inode; its 0644 must not follow."""
    src = _drop(tmp_path / "state" / "drop", "scan.jpg", b"not a jpeg")
    src.chmod(0o644)  # as a device's share writes it
    moved = Quarantine(tmp_path / "state" / "quarantine", FakeClock()).put(src, "s", "r")
    assert moved.stat().st_nlink == 1  # it was linked (same filesystem), then the drop unlinked
    assert stat.S_IMODE(moved.stat().st_mode) == 0o600
    reason = next(moved.parent.glob("*.reason.json"))
    assert stat.S_IMODE(reason.stat().st_mode) == 0o600


def test_the_same_name_twice_gets_two_places_and_an_earlier_run_is_never_overwritten(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    folder = tmp_path / "quarantine"
    first = Quarantine(folder, clock).put(_drop(tmp_path / "d", "a.pdf", b"one"), "s", "r1")
    # A new process (counter starts again) with the clock at the same second, e.g. set back.
    second_q = Quarantine(folder, clock)
    second = second_q.put(_drop(tmp_path / "d", "a.pdf", b"two"), "s", "r2")
    third = second_q.put(_drop(tmp_path / "d", "b.pdf", b"three"), "s", "r3")

    assert len({first, second, third}) == 3
    assert first.read_bytes() == b"one"
    assert second.read_bytes() == b"two"
    listed = Quarantine(folder, clock).list()
    assert [(q.path, q.reason, q.size) for q in listed] == [
        (first, "r1", 3),
        (second, "r2", 3),
        (third, "r3", 5),
    ]


def _other_filesystem(tmp_path: Path) -> Path | None:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != tmp_path.stat().st_dev:
        return shm
    return None


def test_a_move_across_filesystems_copies_the_bytes_exactly(tmp_path: Path) -> None:
    other = _other_filesystem(tmp_path)
    if other is None:
        pytest.skip("no writable second filesystem (/dev/shm) here")
    data = os.urandom(3 * 1024 * 1024 + 17)  # more than one copy chunk
    src = _drop(tmp_path / "drop", "big.tif", data)
    folder = other / f"quarantine-test-{os.getpid()}-{tmp_path.name}"
    try:
        moved = Quarantine(folder, FakeClock()).put(src, "s", "r")
        assert moved.stat().st_dev != tmp_path.stat().st_dev
        assert _sha(moved.read_bytes()) == _sha(data)
        assert not src.exists()
        assert Quarantine(folder, FakeClock()).list()[0].sha256 == _sha(data)
    finally:
        for leftover in folder.glob("*"):
            leftover.unlink()
        folder.rmdir()


def test_when_hard_links_fail_the_copy_path_keeps_bytes_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_link(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    data = os.urandom(1_500_000)
    src = _drop(tmp_path / "drop", "x.bmp", data)
    os.utime(src, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    moved = Quarantine(tmp_path / "q", FakeClock()).put(src, "s", "r")
    assert moved.read_bytes() == data
    assert stat.S_IMODE(moved.stat().st_mode) == 0o600
    # The file's time too, as a hard link keeps it (a requeue puts back the file as dropped).
    assert moved.stat().st_mtime_ns == 1_600_000_000_000_000_000
    assert not src.exists()


def test_the_original_is_removed_only_after_copy_and_reason_are_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps: list[tuple[str, str]] = []
    real_fsync, real_unlink = os.fsync, os.unlink

    def fsync(fd: int) -> None:
        real_fsync(fd)
        steps.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))

    def unlink(path: str | Path, *args: object, **kwargs: object) -> None:
        real_unlink(path, *args, **kwargs)  # type: ignore[arg-type]
        steps.append(("unlink", str(path)))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "unlink", unlink)
    src = _drop(tmp_path / "drop", "a.png", b"png bytes")
    folder = tmp_path / "q"
    moved = Quarantine(folder, FakeClock()).put(src, "s", "r")

    removed = steps.index(("unlink", str(src)))
    before = steps[:removed]
    assert ("fsync", str(moved)) in before
    assert ("fsync", str(folder)) in before
    reason_written = [s for s in before if s[0] == "fsync" and s[1].endswith(".reason.tmp")]
    assert reason_written, steps
    assert steps.index(("fsync", str(folder)), steps.index(reason_written[-1])) < removed
    assert steps[removed + 1 :] == [("fsync", str(src.parent))]


def test_a_failure_before_the_reason_is_recorded_leaves_the_original_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_rename(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    data = b"precious"
    src = _drop(tmp_path / "drop", "a.jpg", data)
    folder = tmp_path / "q"
    monkeypatch.setattr(os, "rename", no_rename)
    with pytest.raises(OSError, match="No space"):
        Quarantine(folder, FakeClock()).put(src, "s", "r")
    assert src.read_bytes() == data
    assert sorted(p.name for p in folder.iterdir()) == []


def test_a_file_that_cannot_be_removed_from_the_drop_folder_is_not_kept_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _drop(tmp_path / "drop", "a.jpg", b"data")
    folder = tmp_path / "q"
    real_unlink = os.unlink

    def unlink(path: str | Path, *args: object, **kwargs: object) -> None:
        if str(path) == str(src):
            raise PermissionError(errno.EACCES, "Permission denied")
        real_unlink(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "unlink", unlink)
    with pytest.raises(PermissionError):
        Quarantine(folder, FakeClock()).put(src, "s", "r")
    assert src.read_bytes() == b"data"
    assert list(folder.iterdir()) == []


def test_list_reports_a_file_whose_reason_was_never_written(tmp_path: Path) -> None:
    folder = tmp_path / "q"
    quarantine = Quarantine(folder, FakeClock())
    quarantine.put(_drop(tmp_path / "d", "ok.jpg", b"1"), "s", "bad header")
    (folder / "20250101T000000Z-9-crashed.jpg").write_bytes(b"22")  # power cut mid-put
    listed = {q.path.name: q for q in quarantine.list()}
    assert listed["20250101T000000Z-9-crashed.jpg"].reason == INTERRUPTED
    assert listed["20250101T000000Z-9-crashed.jpg"].size == 2
    assert len(listed) == 2


def test_a_dropped_file_named_like_a_reason_file_cannot_forge_one(tmp_path: Path) -> None:
    folder = tmp_path / "q"
    quarantine = Quarantine(folder, FakeClock())
    forged = json.dumps({"file": "x", "reason": "forged", "source": "s"}).encode()
    moved = quarantine.put(_drop(tmp_path / "d", "1.reason.json", forged), "s", "real reason")
    listed = quarantine.list()
    assert [(q.path, q.reason) for q in listed] == [(moved, "real reason")]


def test_a_long_name_is_shortened_keeping_its_extension(tmp_path: Path) -> None:
    name = "ü" * 120 + ".jpeg"  # 245 bytes in UTF-8
    moved = Quarantine(tmp_path / "q", FakeClock()).put(_drop(tmp_path / "d", name, b"x"), "s", "r")
    assert moved.name.endswith("ü.jpeg")
    assert len(os.fsencode(moved.name)) <= 255
    assert moved.read_bytes() == b"x"


def test_a_symlink_is_refused_and_left_alone(tmp_path: Path) -> None:
    target = _drop(tmp_path / "outside", "secret.txt", b"secret")
    link = tmp_path / "drop" / "link.jpg"
    link.parent.mkdir()
    link.symlink_to(target)
    with pytest.raises(ValueError, match="regular"):
        Quarantine(tmp_path / "q", FakeClock()).put(link, "s", "r")
    assert link.is_symlink()
    assert target.read_bytes() == b"secret"


def test_list_of_a_quarantine_never_used_is_empty(tmp_path: Path) -> None:
    assert Quarantine(tmp_path / "none", FakeClock()).list() == []
