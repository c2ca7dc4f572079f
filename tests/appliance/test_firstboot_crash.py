"""A power cut at every point of first boot: the next boot completes it, with no half-written
file and nothing done twice.

The model of a cut: first boot runs in a forked child that dies by ``os._exit`` (no ``finally``,
no cleanup, as at a power cut) just before its k-th mutating call: each ``os`` call that makes,
renames, removes, syncs, writes or chowns something, and each external command. Everything
before that call is taken as having reached the card (the durable-write rules make each
earlier step synced before the next starts). For every k until a run gets through, a fresh box
is cut at k, booted again without a cut, and then compared with a box that was never cut:

* the same names, with the same modes and owners, and the same content except what is random
  by design (the certificate, the key, the token and the panel database);
* no temporary file left anywhere, every configuration version recorded once;
* the imports reported on the card, the token on the card the one the panel accepts;
* a third boot skips every once step and changes nothing.

The box has everything on its card (dicom-gateway.toml, network.toml, an SSH key) and a data
partition to grow (the real sfdisk on an image file; partx and resize2fs recorded).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.appliance.commands import CommandResult
from gateway.appliance.firstboot import STEPS, run
from gateway.appliance.steps import StepStatus
from gateway.clock import FakeClock
from gateway.configstore import ConfigStore
from gateway.web.auth.db import PanelDb
from gateway.web.auth.setup import SetupToken, read_token
from gateway.web.auth.users import UserStore
from gateway.web.tlscert import cert_paths, pair_matches
from tests import realfs
from tests.appliance.fakebox import (
    MIB,
    SfdiskRunner,
    add_data_partition,
    firstboot_for,
    make_box,
    sfdisk_json,
)
from tests.web.panelkit import FAST_HASHER

CONFIG = "[web]\nport = 9443\n"
NETWORK = 'hostname = "ct-room-2"\n[interface]\nmode = "dhcp"\n'
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0 eng@laptop\n"
# The os calls that change what is on the card (pathlib's go through these too).
MUTATING = (
    "open",
    "write",
    "fsync",
    "replace",
    "rename",
    "unlink",
    "mkdir",
    "rmdir",
    "chmod",
    "fchmod",
    "chown",
    "fchown",
    "symlink",
)
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
CUT, THROUGH = 77, 78  # the child's exit codes
# Random by design, compared by what they must be (the pair matches, the token is accepted);
# and the markers, whose one line says what the step found (a grow cut after the table says
# "already fills" at the next boot).
RANDOM = re.compile(
    r"^var/lib/dicom-gateway/web/|^boot/firmware/SETUP-TOKEN\.txt$|^run/dicom-gateway/issue$"
    r"|^data/system/firstboot/.*\.done$"
)
SQLITE_SIDE = re.compile(r"-(wal|shm|journal)$")


def new_box(root: Path) -> Path:
    make_box(root)
    add_data_partition(root, card_mib=128)
    card = root / "boot/firmware"
    (card / "dicom-gateway.toml").write_text(CONFIG)
    (card / "network.toml").write_text(NETWORK)
    (card / "ssh").mkdir()
    (card / "ssh/authorized_keys").write_text(KEY)
    return root


class CuttingRunner(SfdiskRunner):
    """Each command is a cut point too."""

    def __init__(self, before: Callable[[], None]) -> None:
        super().__init__()
        self.before = before

    def run(self, argv: Any, stdin: str | None = None) -> CommandResult:
        self.before()
        return super().run(argv, stdin)


def boot_cut_at(root: Path, k: int) -> int:
    """First boot in a child that dies before its k-th mutating call; its exit code."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            count = [0]

            def point() -> None:
                if count[0] == k:
                    os._exit(CUT)
                count[0] += 1

            def wrap(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
                def cut_first(*args: Any, **kwargs: Any) -> Any:
                    if name != "open" or (len(args) > 1 and args[1] & WRITE_FLAGS):
                        point()
                    return fn(*args, **kwargs)

                return cut_first

            for name in MUTATING:
                setattr(os, name, wrap(getattr(os, name), name))
            run(firstboot_for(root, CuttingRunner(point)))
            code = THROUGH
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def snapshot(root: Path) -> dict[str, tuple[bytes | str | None, int, int, int]]:
    out: dict[str, tuple[bytes | str | None, int, int, int]] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == "dev/console" or SQLITE_SIDE.search(rel):
            continue
        st = path.lstat()
        body: bytes | str | None
        if path.is_symlink():
            body = os.readlink(path)
        elif path.is_dir():
            body = "dir"
        else:
            # Where the box is (sfdisk's dump names the disk by its path) is not its content.
            body = None if RANDOM.search(rel) else path.read_bytes().replace(bytes(root), b"/")
        out[rel] = (body, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return out


def check_complete(root: Path) -> None:
    """What must hold on a box whatever cut came before its last boot."""
    leftovers = [p for p in root.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == [], "a cut left temporary files behind"
    state = root / "var/lib/dicom-gateway"
    config = root / "etc/dicom-gateway/gateway.toml"
    assert config.read_text() == CONFIG
    actors = [v.actor for v in ConfigStore(config, state, FakeClock()).versions()]
    assert actors == ["firstboot", "file"], "each version recorded once"
    card = root / "boot/firmware"
    assert not (card / "dicom-gateway.toml").exists()
    assert (card / "dicom-gateway.toml.imported").read_text() == CONFIG
    assert (card / "network.toml.imported").read_text() == NETWORK
    report = (card / "FIRSTBOOT-REPORT.txt").read_text()
    assert "dicom-gateway.toml: installed as gateway.toml (configuration version 0002)" in report
    assert "network.toml: installed as network.toml" in report
    assert (root / "data/system/network.toml").read_text() == NETWORK
    assert (root / "data/system/hostname").read_text() == "ct-room-2\n"
    assert pair_matches(*cert_paths(state))
    token = read_token(state)
    assert token is not None
    db = PanelDb.under(state)
    assert SetupToken(db, state, UserStore(db, FakeClock(), FAST_HASHER), FakeClock()).check(token)
    assert token in (card / "SETUP-TOKEN.txt").read_text()
    assert token in (root / "run/dicom-gateway/issue").read_text()
    partitions = sfdisk_json(root / "dev/vda")["partitions"]
    assert isinstance(partitions, list)
    assert partitions[3]["start"] + partitions[3]["size"] == 128 * MIB // 512


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A box booted twice without a cut."""
    root = new_box(tmp_path_factory.mktemp("reference") / "root")
    run(firstboot_for(root, SfdiskRunner()))
    run(firstboot_for(root, SfdiskRunner()))
    check_complete(root)
    return snapshot(root)


def test_a_power_cut_at_any_point_is_completed_by_the_next_boot(
    tmp_path: Path, reference: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # What reached the disk is decided by where the cut falls, not by the disk: each fsync is
    # still a cut point (counted in the child) but need not wait for this machine's disk.
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    boxes = tmp_path / "boxes"
    boxes.mkdir()
    # On a tmpfs when we may mount one: sqlite's own syncs then cost nothing either.
    where = realfs.tmpfs(boxes, 512 * MIB) if os.geteuid() == 0 else contextlib.nullcontext()
    with where:
        once = {s.name for s in STEPS if s.once}
        cuts = 0
        for k in range(5000):
            root = new_box(boxes / f"cut-{k}" / "root")
            code = boot_cut_at(root, k)
            if code == THROUGH:
                break
            assert code == CUT, f"cut {k}: the child ended with {code}, not at the cut"
            cuts += 1
            run(firstboot_for(root, SfdiskRunner()))  # the boot after the cut
            check_complete(root)
            after = snapshot(root)
            assert after == reference, f"cut {k}: differs from a box never cut: " + ", ".join(
                sorted(n for n in set(after) | set(reference) if after.get(n) != reference.get(n))
            )
            third = {r.name: r.result.status for r in run(firstboot_for(root, SfdiskRunner()))}
            assert {n for n, s in third.items() if s is StepStatus.SKIPPED} == once, (k, third)
            assert snapshot(root) == after, f"cut {k}: the boot after the recovery changed things"
            shutil.rmtree(boxes / f"cut-{k}")
        else:
            pytest.fail("first boot never got through")
    assert cuts > 100, f"only {cuts} cut points: the cutting does not reach the steps"
    print(f"{cuts} cut points")
