"""Updates from a USB stick: the same repository layout on a mounted folder, the same checks.

A stick holds a copy of the release repository (``metadata/`` and ``targets/``), either at its
top or in a folder named ``dicom-gateway-repo``. The client reads it through ``file://`` URLs
with the same TUF verification, the same metadata cache (so a stick older than what the box
already saw online is refused as a replay) and the same fit rules as online. A stick's
timestamp expires like the server's (3 days by default): copy the repository right after
``release refresh-timestamp``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gateway.update.client import UpdateError, UpdateSettings

STICK_FOLDER = "dicom-gateway-repo"


class NotARepositoryError(UpdateError):
    """The path holds no release repository: check the stick and the mount point."""


def find_repository(path: Path) -> Path:
    """The repository folder at ``path`` or in ``path/dicom-gateway-repo``."""
    for candidate in (path, path / STICK_FOLDER):
        if (candidate / "metadata" / "timestamp.json").is_file():
            return candidate.resolve()
    raise NotARepositoryError(
        f"{path}: no release repository (metadata/timestamp.json) here or in "
        f"{path / STICK_FOLDER}; is the stick mounted?"
    )


def offline_settings(settings: UpdateSettings, path: Path) -> UpdateSettings:
    """``settings`` reading the repository on the stick at ``path`` instead of the server."""
    return dataclasses.replace(settings, repository_url=find_repository(path).as_uri())
