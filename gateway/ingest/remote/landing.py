"""Where a whole FTP upload lands in the folder: under its own name, never over another file.

A legacy device reuses its names: a counter that starts again at ``IMG0001.JPG`` for the next
study, or the same file sent again because the ``226`` was lost. Until the folder's watcher
has taken the first file, a second one of that name must not replace it: the first would be
gone before it was queued. The rules (the places in order: :func:`landing_places`, pure; the
move and the checks: :func:`land`):

* first choice: the name and folder the device gave;
* that name taken: the same name in the subfolder ``ftp-duplicate-2`` beside it, then
  ``ftp-duplicate-3``, and so on, the first where it is free (made when missing; the watcher
  takes files in subfolders as in the folder). The file's own name is never changed: the
  folder's ``filename_pattern`` reads the patient's identity from it (``DOE^JANE (2).jpg``
  would give another name), and a sidecar ``NAME.json`` belongs to ``NAME`` by its name;
* a companion placed by the same connection comes first: the sidecar of a file, or the file of
  a sidecar, goes beside where its companion landed when that name is free there, so a file
  and its sidecar stay together when only one of them met a waiting name;
* nothing is replaced, ever: each place is taken by :func:`rename_noreplace`, so a name that
  another connection (or an SMB writer) took since is skipped, and both files are kept;
* a file with the very same bytes waiting under the name is NOT taken for this upload: a file
  and its sidecar are judged one at a time here, so dropping an "identical" one could part a
  new image from its sidecar (an identical sidecar dropped, the new image then landing alone
  in a subfolder) or leave a new sidecar stray. Both are kept; a file the device really sent
  twice becomes a second instance at the PACS, which a person can delete, where a lost or
  unbound image cannot be brought back;
* the upload's folder gone (removed while the upload ran): refused at once with that reason,
  not after trying every subfolder;
* ``MAX_DUPLICATES`` subfolders at most; past them the upload is refused (the device keeps it).

The duplicate subfolders are left in place once empty (the watcher removes files, not folders)
and are used again by the next name that meets a waiting one.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.ingest.sidecar import is_sidecar_name, main_file_of, sidecar_candidates
from gateway.spool.durable import fsync_dir, fsync_file, rename_noreplace

DUPLICATES = "ftp-duplicate-"  # + 2, 3, ...: visible names, so the watcher looks in them
MAX_DUPLICATES = 999


@dataclass(frozen=True)
class Landing:
    """Where an upload is now: ``place``; ``already`` when it was renamed onto itself."""

    place: Path
    already: bool = False


def landing_places(final: Path, beside: Path | None = None) -> Iterator[Path]:
    """Where the upload named ``final`` may land, best first (``beside``: a companion's folder)."""
    if beside is not None and beside != final.parent:
        yield beside / final.name
    yield final
    for n in range(2, MAX_DUPLICATES + 1):
        yield final.parent / f"{DUPLICATES}{n}" / final.name


def companions(final: Path) -> list[Path]:
    """The names that belong with ``final``: its file when it is a sidecar, else its sidecars."""
    if is_sidecar_name(final.name):
        return [main_file_of(final)]
    return sidecar_candidates(final)


def land(part: Path, final: Path, beside: Path | None = None) -> Landing:
    """Move the whole upload ``part`` to its first free place, durably; say where it is.

    The file's data is synced before its new name, and the folders after it (a new duplicate
    subfolder's parent too). FileExistsError when every place is taken; another OSError when
    the move fails (``part`` is then where it was).
    """
    fsync_file(part)
    if not final.parent.is_dir():
        raise FileNotFoundError(f"the folder {final.parent.name!r} is gone")
    for place in landing_places(final, beside):
        aside = place.parent != final.parent
        if aside and not _real_folder(place.parent, make=place.parent != beside):
            continue
        try:
            rename_noreplace(part, place)
        except (FileExistsError, FileNotFoundError, NotADirectoryError):
            if not part.exists():
                raise
            if _same_file(part, place):
                return Landing(place, already=True)  # renamed onto itself: nothing to move
            continue  # taken (or a companion's folder gone): the next place
        fsync_dir(place.parent)
        if aside:
            fsync_dir(place.parent.parent)  # the subfolder's own name (made for it, perhaps)
        fsync_dir(part.parent)
        return Landing(place)
    raise FileExistsError(f"no free place for an upload of that name ({MAX_DUPLICATES} tried)")


def _same_file(part: Path, waiting: Path) -> bool:
    try:
        return part.samefile(waiting)
    except OSError:
        return False


def _real_folder(folder: Path, *, make: bool) -> bool:
    """Whether ``folder`` is a real folder, not a file or a link (made if missing and ``make``).

    A link would take the file out of the folder, where the watcher never follows it.
    """
    try:
        if make:
            folder.mkdir(exist_ok=True)
        return stat.S_ISDIR(folder.lstat().st_mode)
    except (FileExistsError, FileNotFoundError, NotADirectoryError):
        return False  # a file of that name, a link to one, or (not to be made) gone
