"""The device's own share mounted by the box (issue 12 item 4b): options, detection, polling.

The sandbox has no cifs kernel module, so the mount itself is not run here: the options are
checked as a pure function, and the watcher's polling on a network file system with a fake
mountinfo answer.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from watchdog.observers.api import BaseObserver

from gateway.clock import SystemClock
from gateway.config import ConfigError, parse_config
from gateway.ingest.folder import FolderWatcher
from gateway.ingest.remote.cifs import filesystem_type, is_network_filesystem, mount_plans
from tests.harness import wait_until
from tests.ingest.support import Taker, folder_config

LOG = logging.getLogger("test.cifs")
MOUNTINFO = (
    "22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw\n"
    "40 22 0:35 / /srv/device\\040share rw,relatime - cifs //10.0.0.5/export rw,vers=3.0\n"
)


def _folder(**cifs: object) -> dict[str, object]:
    return {
        "name": "us",
        "path": "/srv/device share",
        "settle_seconds": 5,
        "cifs": {"server": "10.0.0.5", "share": "export", "username": "gw", **cifs},
    }


def test_mount_options_default_to_smb3_with_a_credentials_file_and_no_password() -> None:
    config = parse_config({"ingest": {"folder": [_folder()]}})
    (plan,) = mount_plans(config, uid=990, gid=990)
    assert plan.source == "//10.0.0.5/export"
    options = plan.argv()[-1].split(",")
    assert "vers=3.0" in options and "sec=ntlmssp" in options
    assert "credentials=/etc/credstore/cifs-us.cred" in options
    assert {"nosuid", "nodev", "noexec", "uid=990", "gid=990"} <= set(options)
    assert not any(o.startswith("password") for o in options)


def test_smb1_needs_its_opt_in_and_seal_needs_smb3() -> None:
    with pytest.raises(ConfigError, match="allow_smb1"):
        parse_config({"ingest": {"folder": [_folder(version="1.0")]}})
    config = parse_config({"ingest": {"folder": [_folder(version="1.0", allow_smb1=True)]}})
    assert "vers=1.0" in mount_plans(config)[0].options
    with pytest.raises(ConfigError, match="seal"):
        parse_config({"ingest": {"folder": [_folder(version="2.1", seal=True)]}})


def test_a_cifs_folder_needs_a_settle_time_longer_than_the_attribute_cache() -> None:
    folder = _folder()
    folder["settle_seconds"] = 1
    with pytest.raises(ConfigError, match="settle_seconds must be at least 2"):
        parse_config({"ingest": {"folder": [folder]}})


def test_the_mount_under_a_path_is_found_in_mountinfo() -> None:
    assert filesystem_type(Path("/srv/device share/a.jpg"), MOUNTINFO) == "cifs"
    assert filesystem_type(Path("/srv/drop"), MOUNTINFO) == "ext4"
    assert is_network_filesystem("cifs") and not is_network_filesystem("ext4")


def test_a_folder_on_a_network_file_system_is_polled_and_files_go_only_once_taken(
    tmp_path: Path,
) -> None:
    """inotify is never started; a file is removed only once on_ready took it (durably
    queued, in the gateway), and kept while on_ready says no (queue full)."""
    drop = tmp_path / "drop"
    drop.mkdir()
    taker = Taker(answers=[False])
    observers: list[int] = []

    def observer() -> BaseObserver:
        observers.append(1)  # the watcher catches any error here: so count, do not raise
        raise OSError("not on a network file system")

    config = folder_config(drop, settle_seconds=0.2, poll_seconds=0.1, use_inotify=True)
    watcher = FolderWatcher(
        config,
        taker,
        SystemClock(),
        LOG,
        observer_factory=observer,
        filesystem_of=lambda path: "cifs",
    )
    (drop / "P1_DOE_1.jpg").write_bytes(b"\xff\xd8" + bytes(100))
    watcher.start()
    try:
        assert wait_until(lambda: len(taker.calls) >= 1, 5)
        assert (drop / "P1_DOE_1.jpg").exists()  # refused once: still on the share
        assert wait_until(lambda: bool(taker.taken), 5)
        assert not (drop / "P1_DOE_1.jpg").exists()
        assert observers == []  # never tried inotify on the share
    finally:
        watcher.stop()
