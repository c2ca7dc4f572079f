"""Helpers for the folder watcher tests."""

from __future__ import annotations

import os
import pwd
import threading
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config import FolderIngest

GATEWAY = pwd.getpwnam("nobody")  # stands for the gateway's account: not root, owns nothing


def folder_config(path: Path, **overrides: object) -> FolderIngest:
    """A [[ingest.folder]] entry for ``path``; settings overridden by keyword."""
    values: dict[str, object] = {
        "name": "xray",
        "path": path,
        "settle_seconds": 1.0,
        "poll_seconds": 2.0,
        "use_inotify": False,
    }
    values.update(overrides)
    return FolderIngest.model_validate(values)


@dataclass
class Taker:
    """An on_ready callback that reads and removes each file it takes, like intake does."""

    answers: list[bool | Exception] = field(default_factory=list)  # per call; then True
    calls: list[Path] = field(default_factory=list)
    taken: dict[Path, bytes] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, path: Path) -> bool:
        with self.lock:
            self.calls.append(path)
            answer = self.answers.pop(0) if self.answers else True
        if isinstance(answer, Exception):
            raise answer
        if answer:
            data = path.read_bytes()
            path.unlink()
            with self.lock:
                self.taken[path] = data
        return answer


def gateway_folder(folder: Path) -> Path:
    """``folder`` made (with parents) and given to the stand-in gateway account."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chown(folder, GATEWAY.pw_uid, GATEWAY.pw_gid)
    return folder


def mount_root(tmp_path: Path) -> Path:
    """An allowed mount root (``srv``) holding an empty folder of the gateway's, ``us``."""
    gateway_folder(tmp_path / "srv" / "us")
    return tmp_path / "srv"
