"""Where root may mount a device's share (issue 12 item 4b, a security review's finding).

gateway.toml is written by the unprivileged gateway, but ``share mount`` runs as root: a path
in it must not make root mount a hostile share over /etc/systemd/system or the release. The
rules are judged on real folders, links and mounts in temporary directories (a bind mount is
a mount point on the same file system). The CLI: test_cifs_share_cli.py.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from gateway.ingest.remote.cifs import (
    MountEntry,
    TargetAction,
    TargetFacts,
    judge_mount_target,
    judge_unmount_target,
    parse_mountinfo,
    target_path_problem,
)
from gateway.ingest.remote.mountpoint import open_target, unmount
from tests.ingest.support import GATEWAY, gateway_folder, mount_root
from tests.realfs import bind, tmpfs

SOURCE = "//10.0.0.5/export"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return mount_root(tmp_path)


def _judge(target: Path, root: Path, source: str = SOURCE) -> tuple[TargetAction, str]:
    with open_target(target) as opened:
        verdict = judge_mount_target(target, source, opened.facts, GATEWAY.pw_uid, root)
    return verdict.action, verdict.reason


def test_an_empty_folder_of_the_gateway_below_the_root_is_mounted_on(root: Path) -> None:
    assert _judge(root / "us", root)[0] is TargetAction.MOUNT


def test_a_link_in_any_component_is_refused_even_to_an_allowed_folder(root: Path) -> None:
    gateway_folder(root / "real" / "us")
    (root / "via").symlink_to(root / "real")  # a middle component
    action, reason = _judge(root / "via" / "us", root)
    assert action is TargetAction.REFUSE and reason == f"{root / 'via'} is a symbolic link"
    (root / "leaf").symlink_to(root / "us")  # the last component
    action, reason = _judge(root / "leaf", root)
    assert action is TargetAction.REFUSE and reason == f"{root / 'leaf'} is a symbolic link"


def test_a_link_out_of_the_root_is_refused(root: Path, tmp_path: Path) -> None:
    outside = gateway_folder(tmp_path / "systemd-system")
    (root / "escape").symlink_to(outside)
    action, reason = _judge(root / "escape", root)
    assert action is TargetAction.REFUSE and "symbolic link" in reason


def test_a_folder_outside_the_root_and_the_root_itself_are_refused(
    root: Path, tmp_path: Path
) -> None:
    outside = gateway_folder(tmp_path / "opt-current")
    action, reason = _judge(outside, root)
    assert (
        action is TargetAction.REFUSE and reason == f"{outside} is not below the mount root {root}"
    )
    os.chown(root, GATEWAY.pw_uid, GATEWAY.pw_gid)  # even the gateway's own, empty root
    (root / "us").rmdir()
    action, reason = _judge(root, root)
    assert action is TargetAction.REFUSE and "is the mount root itself" in reason
    assert target_path_problem(Path("/srv")) is not None
    assert target_path_problem(Path("/srv-other/us")) is not None  # a prefix, not a parent
    assert target_path_problem(Path("/srv/us")) is None


def test_dot_dot_components_are_refused_even_when_they_lead_back_inside(root: Path) -> None:
    for target in (
        root / "us" / ".." / "us",  # inside, but not plainly
        root / "us" / "..",  # the root itself
        root / ".." / "elsewhere",
    ):
        action, reason = _judge(target, root)
        assert action is TargetAction.REFUSE and "not a plain path" in reason, target
    assert target_path_problem(Path("us")) == "us is not an absolute path"
    assert "not a plain path" in (target_path_problem(Path("//srv/us")) or "")


def test_a_folder_with_files_is_refused(root: Path) -> None:
    (root / "us" / "report.txt").write_text("the box's own file")
    action, reason = _judge(root / "us", root)
    assert action is TargetAction.REFUSE and reason == f"{root / 'us'} is not empty"


def test_a_folder_of_another_account_is_refused(root: Path) -> None:
    (root / "roots").mkdir()  # made by root, as the test runs
    action, reason = _judge(root / "roots", root)
    assert action is TargetAction.REFUSE
    assert reason == f"{root / 'roots'} is owned by uid 0, not the gateway's {GATEWAY.pw_uid}"


def test_a_file_or_a_missing_folder_is_refused(root: Path) -> None:
    (root / "file").write_text("")
    assert _judge(root / "file", root) == (
        TargetAction.REFUSE,
        f"{root / 'file'} is not a directory",
    )
    missing = root / "gone" / "us"
    assert _judge(missing, root) == (TargetAction.REFUSE, f"{root / 'gone'} does not exist")


def test_a_bind_mount_on_the_same_file_system_is_a_mount_point_and_left_alone(
    root: Path, tmp_path: Path
) -> None:
    other = gateway_folder(tmp_path / "other")
    with bind(other, root / "us"):
        assert os.stat(root / "us").st_dev == os.stat(root).st_dev  # st_dev cannot tell
        action, reason = _judge(root / "us", root)
        assert action is TargetAction.REFUSE
        assert reason.startswith(f"{root / 'us'} is a mount point of ")
        with open_target(root / "us") as opened:
            off = judge_unmount_target(root / "us", SOURCE, opened.facts, root)
        assert off.action is TargetAction.REFUSE and f"not of {SOURCE}" in off.reason


def test_this_shares_own_mount_is_left_as_it_is_and_unmounted_at_stop() -> None:
    target = Path("/srv/us")
    ours = TargetFacts(owner_uid=990, mount=MountEntry(40, "/srv/us", "cifs", "//10.0.0.5/EXPORT"))
    assert judge_mount_target(target, SOURCE, ours, 990).action is TargetAction.NOTHING
    assert judge_unmount_target(target, SOURCE, ours).action is TargetAction.UNMOUNT
    theirs = TargetFacts(owner_uid=990, mount=MountEntry(40, "/srv/us", "cifs", "//evil/share"))
    assert judge_mount_target(target, SOURCE, theirs, 990).action is TargetAction.REFUSE
    assert judge_unmount_target(target, SOURCE, theirs).action is TargetAction.REFUSE
    plain = TargetFacts(owner_uid=990, empty=True)
    assert judge_unmount_target(target, SOURCE, plain).action is TargetAction.NOTHING
    # Even this share's own mount is not unmounted outside the root: the config said so.
    verdict = judge_unmount_target(Path("/etc/systemd/system"), SOURCE, ours)
    assert verdict.action is TargetAction.REFUSE and "not below the mount root" in verdict.reason


def test_mountinfo_lines_give_id_point_type_and_source() -> None:
    text = (
        "22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw\n"
        "40 22 0:35 / /srv/device\\040share rw,relatime - cifs //10.0.0.5/export rw,vers=3.0\n"
        "garbage\n"
    )
    assert parse_mountinfo(text) == [
        MountEntry(22, "/", "ext4", "/dev/sda2"),
        MountEntry(40, "/srv/device share", "cifs", "//10.0.0.5/export"),
    ]


def test_a_missing_leaf_is_made_the_gateways_but_never_a_missing_parent(root: Path) -> None:
    owner = (GATEWAY.pw_uid, GATEWAY.pw_gid)
    with open_target(root / "new", make_as=owner) as opened:
        assert opened.facts.problem is None and opened.facts.empty
    info = (root / "new").stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (*owner, 0o770)
    with open_target(root / "a" / "b", make_as=owner) as opened:
        assert opened.facts.problem == f"{root / 'a'} does not exist"
    assert not (root / "a").exists()


def test_the_mount_and_unmount_use_the_judged_folder_even_after_a_swap_for_a_link(
    root: Path, tmp_path: Path
) -> None:
    """The path is swapped for a link to another folder between judgement and mount: the
    descriptor still names the judged folder; a tmpfs stands for the share (mount(8) with
    --no-canonicalize passes the /proc path on as mount.cifs's chdir does)."""
    victim = gateway_folder(tmp_path / "victim")
    with open_target(root / "us") as opened:
        assert (
            judge_mount_target(root / "us", SOURCE, opened.facts, GATEWAY.pw_uid, root).action
            is TargetAction.MOUNT
        )
        (root / "us").rename(root / "moved")
        (root / "us").symlink_to(victim)
        assert os.readlink(opened.mount_path()) == str(root / "moved")
        assert opened.fd is not None
        done = subprocess.run(
            ["mount", "--no-canonicalize", "-t", "tmpfs", "tmpfs", opened.mount_path()],
            capture_output=True,
            text=True,
            check=False,
            pass_fds=(opened.fd,),
        )
        assert done.returncode == 0, done.stderr
    moved = root.with_name("srv-moved")
    try:
        points = {m.point for m in parse_mountinfo(Path("/proc/self/mountinfo").read_text())}
        assert str(root / "moved") in points and str(victim) not in points
        # Unmount through the parent as judged: the root swapped for a link to a folder with
        # a mount of the same name meanwhile, that mount is not the one unmounted.
        with tmpfs(tmp_path / "elsewhere" / "moved", 1 << 20):
            with open_target(root / "moved") as opened:
                root.rename(moved)  # a folder holding a mount point may be renamed
                root.symlink_to(tmp_path / "elsewhere")
                assert unmount(opened) is None
            points = {m.point for m in parse_mountinfo(Path("/proc/self/mountinfo").read_text())}
            assert str(tmp_path / "elsewhere" / "moved") in points
            assert str(moved / "moved") not in points
    finally:
        for leftover in (root / "moved", moved / "moved"):
            subprocess.run(["umount", str(leftover)], capture_output=True, check=False)


def test_unmount_does_not_follow_a_link_put_where_the_judged_folder_was(
    root: Path, tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "elsewhere", 1 << 20), open_target(root / "us") as opened:
        (root / "us").rmdir()
        (root / "us").symlink_to(tmp_path / "elsewhere")
        assert unmount(opened) == os.strerror(errno.EINVAL)  # the link is not a mount
        points = {m.point for m in parse_mountinfo(Path("/proc/self/mountinfo").read_text())}
        assert str(tmp_path / "elsewhere") in points
