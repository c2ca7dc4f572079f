"""Quarantine: rejected files moved aside durably, with their reason, never lost or overwritten."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.ingest import quarantine as quarantine_module
from gateway.ingest.quarantine import INTERRUPTED, REASON_SUFFIX, Quarantine


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
    real_link, real_rename = os.link, os.rename

    def fail_for_reason(real: Callable[..., None]) -> Callable[..., None]:
        # Publishing the reason file (a link, or a rename where links fail) runs out of space.
        def call(src: str | Path, dst: str | Path, *args: object, **kwargs: object) -> None:
            if str(dst).endswith(REASON_SUFFIX):
                raise OSError(errno.ENOSPC, "No space left on device")
            real(src, dst, *args, **kwargs)

        return call

    data = b"precious"
    src = _drop(tmp_path / "drop", "a.jpg", data)
    src.chmod(0o644)
    folder = tmp_path / "q"
    monkeypatch.setattr(os, "link", fail_for_reason(real_link))
    monkeypatch.setattr(os, "rename", fail_for_reason(real_rename))
    with pytest.raises(OSError, match="No space"):
        Quarantine(folder, FakeClock()).put(src, "s", "r")
    assert src.read_bytes() == data
    assert stat.S_IMODE(src.stat().st_mode) == 0o644  # the link was never made 0600
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

    src.chmod(0o644)
    monkeypatch.setattr(os, "unlink", unlink)
    with pytest.raises(PermissionError):
        Quarantine(folder, FakeClock()).put(src, "s", "r")
    assert src.read_bytes() == b"data"
    assert stat.S_IMODE(src.stat().st_mode) == 0o644  # the link was never made 0600
    assert list(folder.iterdir()) == []


def test_a_file_with_another_name_is_copied_and_its_other_name_keeps_its_mode(
    tmp_path: Path,
) -> None:
    # A linked copy shares the inode's mode: chmod 0600 made archive/scan.jpg 0600 too.
    src = _drop(tmp_path / "drop", "scan.jpg", b"jpeg bytes")
    src.chmod(0o644)
    os.utime(src, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    (tmp_path / "archive").mkdir()
    other = tmp_path / "archive" / "scan.jpg"
    os.link(src, other)
    assert src.stat().st_nlink == 2
    moved = Quarantine(tmp_path / "q", FakeClock()).put(src, "s", "r")
    assert not src.exists()
    assert stat.S_IMODE(other.stat().st_mode) == 0o644
    assert other.stat().st_nlink == 1  # the quarantined file is a copy, not a third name
    assert moved.read_bytes() == b"jpeg bytes"
    assert stat.S_IMODE(moved.stat().st_mode) == 0o600
    assert moved.stat().st_mtime_ns == 1_600_000_000_000_000_000


def test_a_file_that_changes_while_quarantined_keeps_its_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _drop(tmp_path / "drop", "a.jpg", b"first")
    src.chmod(0o644)
    folder = tmp_path / "q"
    real_hash = quarantine_module._hash_and_fsync

    def hash_then_device_writes(path: Path) -> tuple[int, str]:
        got = real_hash(path)
        with src.open("ab") as handle:  # the device is still writing
            handle.write(b" and more")
        return got

    monkeypatch.setattr(quarantine_module, "_hash_and_fsync", hash_then_device_writes)
    with pytest.raises(quarantine_module.SourceChangedError):
        Quarantine(folder, FakeClock()).put(src, "s", "r")
    assert src.read_bytes() == b"first and more"
    assert stat.S_IMODE(src.stat().st_mode) == 0o644
    assert list(folder.iterdir()) == []


def test_two_processes_quarantining_in_the_same_second_keep_both_reasons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The daemon and a `quarantine requeue` beside it: each Quarantine counts from 1, so in
    # one second both took id ...-1, one unlinked the other's temporary reason and one file
    # was left without a reason (listed "interrupted", not requeueable).
    folder = tmp_path / "q"
    clock = FakeClock()  # the same second for both
    daemon, cli = Quarantine(folder, clock), Quarantine(folder, clock)
    a = _drop(tmp_path / "drop", "a.jpg", b"a")
    b = _drop(tmp_path / "drop", "b.jpg", b"b")
    real_check = quarantine_module._check_unchanged
    interleaved: list[Path] = []

    def check(path: Path, before: os.stat_result) -> None:
        # The other process quarantines its file between our placing and our reason.
        if path == a:
            interleaved.append(cli.put(b, "cli", "reason b"))
        real_check(path, before)

    monkeypatch.setattr(quarantine_module, "_check_unchanged", check)
    moved_a = daemon.put(a, "daemon", "reason a")
    monkeypatch.setattr(quarantine_module, "_check_unchanged", real_check)
    listed = {item.path: item for item in Quarantine(folder, clock).list()}
    assert set(listed) == {moved_a, interleaved[0]}
    assert listed[moved_a].reason == "reason a"
    assert listed[interleaved[0]].reason == "reason b"
    assert listed[moved_a].ident != listed[interleaved[0]].ident
    # Nothing left behind: no temporary reason, one reason file per file.
    names = sorted(p.name for p in folder.iterdir())
    assert len([n for n in names if n.endswith(REASON_SUFFIX)]) == 2
    assert not [n for n in names if n.startswith(".")]


def test_an_id_claimed_by_a_crash_is_skipped_not_taken_over(tmp_path: Path) -> None:
    folder = tmp_path / "q"
    clock = FakeClock()
    first = Quarantine(folder, clock)
    first.put(_drop(tmp_path / "d", "a.jpg", b"a"), "s", "r")
    stamp = first.list()[0].ident.rsplit("-", 1)[0]
    leftover = folder / f".{stamp}-2.reason.tmp"  # another process is writing id 2 (or died)
    leftover.write_bytes(b"")
    moved = first.put(_drop(tmp_path / "d", "b.jpg", b"b"), "s", "r b")
    assert moved.name == f"{stamp}-3-b.jpg"
    assert leftover.exists()
    assert Quarantine(folder, clock).find(f"{stamp}-3") is not None


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


def test_a_reason_published_by_another_writer_is_never_removed_by_our_rollback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The claim protocol keeps two writers of this version apart; an older `quarantine` CLI
    # beside a newer daemon (during an update) does not take claims. If its reason appears
    # under our id just before we publish ours, our put fails and rolls back: its reason stays.
    folder = tmp_path / "q"
    ours = _drop(tmp_path / "drop", "a.jpg", b"a")
    real_publish = quarantine_module._publish

    def other_writer_first(temp: Path, reason_file: Path) -> None:
        reason_file.write_text('{"reason": "the other writer\'s"}')
        real_publish(temp, reason_file)

    monkeypatch.setattr(quarantine_module, "_publish", other_writer_first)
    with pytest.raises(FileExistsError):
        Quarantine(folder, FakeClock()).put(ours, "s", "ours")
    reasons = [p for p in folder.iterdir() if p.name.endswith(REASON_SUFFIX)]
    assert [p.read_text() for p in reasons] == ['{"reason": "the other writer\'s"}']
    assert ours.read_bytes() == b"a"  # our file is still where it was dropped
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # our claim is gone
