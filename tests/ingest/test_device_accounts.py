"""The device accounts' Unix users where /etc is read-only (the appliance): libnss-extrausers.

Seen on the booted qemu image: ``useradd: cannot lock /etc/passwd`` (the root file system is
read-only), so dicom-gateway-smb.service failed at every start and the share never came up.
"""

from __future__ import annotations

import pwd
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from gateway.ingest.remote.accounts import (
    EXTRAUSERS_UIDS,
    NOLOGIN,
    DeviceAccountError,
    ensure_unix_account,
    extrausers_line,
)

RUN_ARGV = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"


def refuse(argv: Sequence[str], stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    """useradd as on the read-only root: it never gets its lock."""
    return subprocess.CompletedProcess(argv, 1, b"", b"useradd: cannot lock /etc/passwd\n")


def test_on_a_read_only_etc_the_account_goes_into_extrausers_once(tmp_path: Path) -> None:
    folder = tmp_path / "extrausers"
    folder.mkdir()
    assert ensure_unix_account("modality7", refuse, folder)
    assert not ensure_unix_account("modality7", refuse, folder)  # a second start: nothing new
    assert ensure_unix_account("modality8", refuse, folder)
    lines = (folder / "passwd").read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["modality7", "modality8"]
    taken = {p.pw_uid for p in pwd.getpwall()}
    uids = [int(line.split(":")[2]) for line in lines]
    assert len(set(uids)) == 2 and not set(uids) & taken
    assert all(uid in EXTRAUSERS_UIDS for uid in uids)
    for line in lines:
        name, _, _, gid, _, home, shell = line.split(":")
        assert (gid, home, shell) == ("65534", "/nonexistent", NOLOGIN), name
    assert (folder / "passwd").stat().st_mode & 0o777 == 0o644


def test_without_the_folder_useradd_is_asked_and_its_refusal_named(tmp_path: Path) -> None:
    with pytest.raises(DeviceAccountError, match="cannot lock /etc/passwd"):
        ensure_unix_account("modality9", refuse, tmp_path / "absent")


def test_the_uid_range_used_up_is_a_clear_error() -> None:
    with pytest.raises(DeviceAccountError, match="no free uid"):
        extrausers_line("late", "", set(EXTRAUSERS_UIDS))
    text = "".join(f"d{u}:x:{u}:65534::/nonexistent:{NOLOGIN}\n" for u in EXTRAUSERS_UIDS)
    with pytest.raises(DeviceAccountError, match="no free uid"):
        extrausers_line("late", text, set())


def test_pdbedit_works_under_the_gateway_units_seccomp_rules(tmp_path: Path) -> None:
    """The panel sets a device password from inside the gateway's unit, which refuses netlink
    sockets: on the booted image pdbedit then failed ("Could not determine network
    interfaces"). The real pdbedit, under the unit's own filters (tests/systemd_sandbox)."""
    import os
    import sys

    from gateway.ingest.remote.accounts import SambaAccounts
    from tests.peers import require_tool
    from tests.systemd_sandbox import sandbox_environment

    require_tool("pdbedit")
    unit = Path(__file__).resolve().parents[2] / "systemd/dicom-gateway.service"
    env = {**os.environ, **sandbox_environment(unit, tmp_path / "sandbox")}
    accounts = SambaAccounts(tmp_path / "samba")
    accounts._prepare()
    argv = accounts._argv("-L")
    done = subprocess.run(
        [sys.executable, "-c", RUN_ARGV, *argv],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
