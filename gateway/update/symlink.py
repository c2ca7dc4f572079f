"""The ``current`` symlink: read it, and switch it atomically and durably.

A switch makes a new symlink under a temporary name in the same directory, renames it over
``current`` (rename(2) replaces atomically: every reader sees the old or the new target) and
fsyncs the directory, so the switch survives a power cut. The link is relative
(``releases/<version>``), so the whole tree can be moved or mounted elsewhere.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from gateway.spool.durable import fsync_dir, temp_sibling


def link_target(link: Path) -> Path | None:
    """The absolute path ``link`` points to, or None when it is not a symlink."""
    try:
        raw = link.readlink()
    except (FileNotFoundError, OSError):
        return None
    return Path(os.path.normpath(link.parent / raw))


def current_release(link: Path) -> str | None:
    """The release (directory name) ``link`` points to, when that directory exists."""
    target = link_target(link)
    if target is None or not target.is_dir():
        return None
    return target.name


def switch(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` atomically (temp link, rename over, fsync the directory)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(link)
    relative = os.path.relpath(target, link.parent)
    tmp.symlink_to(relative)
    try:
        tmp.replace(link)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(link.parent)


def remove_stale_links(link: Path) -> None:
    """Remove temporary links a crash left beside ``link`` (the switch never got to rename)."""
    for stale in link.parent.glob(f".{link.name}.*.tmp"):
        if stale.is_symlink():
            stale.unlink()
