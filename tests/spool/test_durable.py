"""Crash-safe file helpers."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from gateway.spool import durable


def test_write_bytes_durably_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    durable.write_bytes_durably(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_write_bytes_durably_keeps_the_old_file_when_writing_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")

    def no_space(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "no space left")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="no space"):
        durable.write_bytes_durably(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


@pytest.mark.parametrize("umask", [0o000, 0o077])
@pytest.mark.parametrize("mode", [0o600, 0o640])
def test_write_bytes_durably_gives_exactly_the_mode_whatever_the_umask(
    tmp_path: Path, umask: int, mode: int
) -> None:
    target = tmp_path / "key.pem"
    target.write_bytes(b"old")
    target.chmod(0o666)
    old = os.umask(umask)
    try:
        durable.write_bytes_durably(target, b"secret", mode)
    finally:
        os.umask(old)
    assert target.read_bytes() == b"secret"
    assert target.stat().st_mode & 0o777 == mode  # the old file's 0666 is not kept either


def test_copy_durably_replaces_the_destination_and_leaves_no_temporary(tmp_path: Path) -> None:
    src, dst = tmp_path / "bundle.tar", tmp_path / "out" / "target.tar"
    dst.parent.mkdir()
    payload = os.urandom(3 << 20)  # more than one copy chunk
    src.write_bytes(payload)
    dst.write_bytes(b"stale")
    durable.copy_durably(src, dst)
    assert dst.read_bytes() == payload and src.read_bytes() == payload
    assert [p.name for p in dst.parent.iterdir()] == ["target.tar"]


def test_copy_durably_keeps_the_old_destination_when_the_copy_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = tmp_path / "bundle.tar", tmp_path / "target.tar"
    src.write_bytes(b"new")
    dst.write_bytes(b"old")

    def no_space(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "no space left")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="no space"):
        durable.copy_durably(src, dst)
    assert dst.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.tar", "target.tar"]


def test_durable_replace_overwrites(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    src, dst = tmp_path / "a" / "f", tmp_path / "g"
    src.write_bytes(b"1")
    dst.write_bytes(b"2")
    durable.durable_replace(src, dst)
    assert dst.read_bytes() == b"1" and not src.exists()


def test_durable_move_never_overwrites(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"new")
    dst.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        durable.durable_move(src, dst)
    assert dst.read_bytes() == b"precious" and src.read_bytes() == b"new"


def test_durable_move_between_folders(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    src, dst = tmp_path / "in" / "x", tmp_path / "out" / "x"
    src.write_bytes(b"data")
    durable.durable_move(src, dst)
    assert dst.read_bytes() == b"data" and not src.exists()


def test_durable_move_without_hard_links_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(*_: object, **__: object) -> None:
        raise OSError(errno.EPERM, "vfat")

    monkeypatch.setattr(os, "link", no_links)
    monkeypatch.setattr(durable, "_renameat2_noreplace", _no_renameat2)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"data")
    durable.durable_move(src, dst)
    assert dst.read_bytes() == b"data" and not src.exists()
    src.write_bytes(b"again")
    with pytest.raises(FileExistsError):
        durable.durable_move(src, dst)


def test_durable_move_across_filesystems_copies_then_removes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_link = os.link
    src, dst = tmp_path / "src", tmp_path / "out" / "dst"
    dst.parent.mkdir()
    data = os.urandom(3 << 20)
    src.write_bytes(data)

    def cross_device(a: object, b: object, *args: object, **kw: object) -> None:
        if Path(str(a)) == src:
            raise OSError(errno.EXDEV, "cross-device link")
        real_link(a, b)  # type: ignore[arg-type]

    def renameat2_cross_device(a: Path, b: Path) -> None:
        if a == src:
            raise OSError(errno.EXDEV, "cross-device rename")
        real_renameat2(a, b)

    real_renameat2 = durable._renameat2_noreplace
    monkeypatch.setattr(os, "link", cross_device)
    monkeypatch.setattr(durable, "_renameat2_noreplace", renameat2_cross_device)
    durable.durable_move(src, dst)
    assert dst.read_bytes() == data and not src.exists()
    assert [p.name for p in dst.parent.iterdir()] == ["dst"]


def _no_renameat2(src: Path, dst: Path) -> None:
    raise OSError(errno.EINVAL, "this filesystem has no RENAME_NOREPLACE")


def _occupied(tmp_path: Path) -> dict[str, Path]:
    """Each kind of thing a name can be taken by."""
    (tmp_path / "file").write_bytes(b"precious")
    (tmp_path / "empty-folder").mkdir()  # os.rename replaces it without a word
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    return {n: tmp_path / n for n in ("file", "empty-folder", "dangling")}


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "link-fallback"])
def test_rename_noreplace_never_replaces_a_file_a_folder_or_a_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, renameat2: bool
) -> None:
    if not renameat2:
        monkeypatch.setattr(durable, "_renameat2_noreplace", _no_renameat2)
    for name, taken in _occupied(tmp_path).items():
        src = tmp_path / "new"
        src.write_bytes(b"new")
        with pytest.raises(FileExistsError):
            durable.rename_noreplace(src, taken)
        assert src.read_bytes() == b"new", name
    assert (tmp_path / "file").read_bytes() == b"precious"
    assert (tmp_path / "empty-folder").is_dir()
    assert (tmp_path / "dangling").is_symlink()
    durable.rename_noreplace(tmp_path / "new", tmp_path / "free")
    assert (tmp_path / "free").read_bytes() == b"new" and not (tmp_path / "new").exists()


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "look-then-rename"])
def test_rename_noreplace_moves_a_folder_but_never_onto_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, renameat2: bool
) -> None:
    if not renameat2:
        monkeypatch.setattr(durable, "_renameat2_noreplace", _no_renameat2)
    taken = _occupied(tmp_path)
    study = tmp_path / "study"
    study.mkdir()
    (study / "img.jpg").write_bytes(b"x")
    for target in taken.values():
        with pytest.raises(FileExistsError):
            durable.rename_noreplace(study, target)
    assert (study / "img.jpg").read_bytes() == b"x"
    durable.rename_noreplace(study, tmp_path / "moved")
    assert (tmp_path / "moved" / "img.jpg").read_bytes() == b"x"


def test_rename_noreplace_without_renameat2_or_links_looks_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(*_: object, **__: object) -> None:
        raise OSError(errno.EPERM, "vfat")

    monkeypatch.setattr(durable, "_renameat2_noreplace", _no_renameat2)
    monkeypatch.setattr(os, "link", no_links)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"new")
    dst.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        durable.rename_noreplace(src, dst)
    assert dst.read_bytes() == b"precious"
    dst.unlink()
    durable.rename_noreplace(src, dst)
    assert dst.read_bytes() == b"new" and not src.exists()


def test_rename_noreplace_reports_other_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        durable.rename_noreplace(tmp_path / "absent", tmp_path / "dst")


def test_fsync_dir_and_file_work_on_real_paths(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x")
    durable.fsync_file(f)
    durable.fsync_dir(tmp_path)
    with pytest.raises(FileNotFoundError):
        durable.fsync_file(tmp_path / "missing")
