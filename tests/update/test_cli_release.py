"""`dicom-gateway release ...` end to end on a tmp repository (the maintainer's commands)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gateway.cli_release import register
from gateway.clock import SystemClock
from gateway.update.repo import TufRepository, target_name
from tests.update.repofactory import HOST_ARCH, FakeRelease, make_fake_bundle


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="dicom-gateway")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    code: int = args.func(args)
    return code


def test_maintainer_publishes_widens_refreshes_and_rotates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, keys = str(tmp_path / "repo"), str(tmp_path / "keys")
    assert (
        run(
            "release",
            "init-repo",
            repo,
            "--keys",
            keys,
            "--root-keys",
            "3",
            "--root-threshold",
            "2",
        )
        == 0
    )
    assert "root: threshold 2" in capsys.readouterr().out
    bundle = make_fake_bundle(FakeRelease("1.4.0"), tmp_path)
    assert (
        run(
            "release",
            "publish",
            repo,
            str(bundle),
            "--keys",
            keys,
            "--channel",
            "beta",
            "--rollout",
            "10",
            "--min-from",
            "1.2.0",
            "--hardware",
            "rpi4, rpi5",
        )
        == 0
    )
    assert (
        run(
            "release",
            "rollout",
            repo,
            "--keys",
            keys,
            "--version",
            "1.4.0",
            "--arch",
            HOST_ARCH,
            "--percent",
            "50",
        )
        == 0
    )
    assert run("release", "refresh-timestamp", repo, "--keys", keys) == 0
    assert run("release", "rotate-key", repo, "--keys", keys, "--role", "snapshot") == 0
    capsys.readouterr()
    assert run("release", "list", repo) == 0
    listing = capsys.readouterr().out
    assert f"{target_name('1.4.0', HOST_ARCH)}: beta rollout 50% min_from 1.2.0" in listing

    state = TufRepository(tmp_path / "repo", SystemClock())
    fields = state.releases()[target_name("1.4.0", HOST_ARCH)]
    assert fields.hardware == ("rpi4", "rpi5")
    assert state.root().signed.version == 2


def test_publish_without_keys_says_which_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run("release", "init-repo", str(tmp_path / "repo"), "--keys", str(tmp_path / "keys")) == 0
    )
    empty = tmp_path / "usb-with-no-keys"
    empty.mkdir()
    bundle = make_fake_bundle(FakeRelease("1.4.0"), tmp_path)
    code = run(
        "release",
        "publish",
        str(tmp_path / "repo"),
        str(bundle),
        "--keys",
        str(empty),
        "--channel",
        "stable",
        "--rollout",
        "100",
        "--min-from",
        "1.0.0",
        "--hardware",
        "generic",
    )
    assert code == 2
    assert "targets: 0 of the 1 keys needed" in capsys.readouterr().err


def test_publishing_a_file_that_is_not_a_bundle_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run("release", "init-repo", str(tmp_path / "repo"), "--keys", str(tmp_path / "keys"))
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"junk")
    code = run(
        "release",
        "publish",
        str(tmp_path / "repo"),
        str(junk),
        "--keys",
        str(tmp_path / "keys"),
        "--channel",
        "stable",
        "--rollout",
        "100",
        "--min-from",
        "1.0.0",
        "--hardware",
        "generic",
    )
    assert code == 2
    assert "not a readable bundle" in capsys.readouterr().err
