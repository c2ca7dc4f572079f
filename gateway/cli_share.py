"""``dicom-gateway share ...``: the box's SMB shares and the device shares it mounts (as root).

* ``share render`` prints the smb.conf made from the config (gateway.ingest.remote.smbconf);
* ``share prepare`` (dicom-gateway-smb.service, before smbd) makes each share's Unix account
  (no home, no login), the gateway's Samba folder, and writes the smb.conf (default
  /run/dicom-gateway/smb.conf) by temporary file and rename;
* ``share any`` exits 0 when a folder is shared, 1 when none is (the unit's ExecCondition:
  without shares smbd is not started at all);
* ``share mount`` / ``share unmount`` (dicom-gateway-cifs.service) mount and unmount the devices'
  own shares (``[ingest.folder.cifs]``, gateway.ingest.remote.cifs), each only on a folder the
  mount-target rules allow (an empty folder of the gateway's below /srv, no link on the way):
  gateway.toml is the gateway's to write, so its paths are not trusted as root's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import subprocess
import sys
from pathlib import Path

from gateway.config import load_config
from gateway.ingest.remote.accounts import DeviceAccountError, ensure_unix_account
from gateway.ingest.remote.cifs import (
    CREDSTORE,
    MOUNT_ROOT,
    TargetAction,
    judge_mount_target,
    judge_unmount_target,
    mount_plans_by_folder,
    target_path_problem,
)
from gateway.ingest.remote.mountpoint import open_target, unmount
from gateway.ingest.remote.smbconf import (
    GATEWAY_ACCOUNT,
    SMB_CONF_PATH,
    SambaSite,
    private_dir,
    render_smb_conf,
    shared_folders,
)


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    default_config: str = "/etc/dicom-gateway/gateway.toml",
) -> None:
    """Add ``share render|prepare|any|mount|unmount`` to the ``dicom-gateway`` parser."""
    share = subparsers.add_parser("share", help="SMB shares of the drop folders, device mounts")
    ssub = share.add_subparsers(dest="share_cmd", required=True)
    for name, text, func in (
        ("render", "print the smb.conf made from the config", _render),
        ("prepare", "make the share accounts and write the smb.conf (root)", _prepare),
        ("any", "exit 0 when a drop folder is shared, else 1", _any),
        ("mount", "mount the devices' own shares (ingest.folder.cifs; root)", _mount),
        ("unmount", "unmount the devices' own shares (root)", _unmount),
    ):
        cmd = ssub.add_parser(name, help=text)
        cmd.add_argument("--config", "-c", default=default_config, help="TOML config file")
        if name in ("render", "prepare"):
            cmd.add_argument(
                "--out", type=Path, default=None if name == "render" else SMB_CONF_PATH
            )
            cmd.add_argument(
                "--owner", default=GATEWAY_ACCOUNT, help="user and group files are written as"
            )
        if name in ("mount", "unmount"):
            # On the unit's command line (root's), never in gateway.toml (the gateway's).
            cmd.add_argument(
                "--mount-root",
                type=Path,
                default=MOUNT_ROOT,
                help=f"shares are mounted only on folders below this one (default {MOUNT_ROOT})",
            )
        if name == "mount":
            cmd.add_argument(
                "--owner", default=GATEWAY_ACCOUNT, help="the account a mount folder must belong to"
            )
            cmd.add_argument(
                "--credstore",
                type=Path,
                default=CREDSTORE,
                help=f"folder of the credentials files (default {CREDSTORE})",
            )
        cmd.set_defaults(func=func)


def _conf(args: argparse.Namespace) -> tuple[str, Path, int]:
    config = load_config(Path(args.config), os.environ.get("CREDENTIALS_DIRECTORY"))
    site = SambaSite(
        private_dir=private_dir(config.gateway.state_dir), owner=args.owner, group=args.owner
    )
    return render_smb_conf(config, site), site.private_dir, len(shared_folders(config))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(0o644)  # nothing secret in it; smbd and testparm read it
    tmp.replace(path)


def _render(args: argparse.Namespace) -> int:
    text, _, _ = _conf(args)
    if args.out is None:
        sys.stdout.write(text)
    else:
        _write(args.out, text)
    return 0


def _prepare(args: argparse.Namespace) -> int:
    config = load_config(Path(args.config), os.environ.get("CREDENTIALS_DIRECTORY"))
    text, private, _ = _conf(args)
    private.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(KeyError, PermissionError):
        owner = pwd.getpwnam(args.owner)
        os.chown(private, owner.pw_uid, owner.pw_gid)  # the panel sets passwords as the gateway
    private.chmod(0o700)
    for folder in shared_folders(config):
        assert folder.share_user is not None
        try:
            if ensure_unix_account(folder.share_user):
                print(f"made the share account {folder.share_user}")
        except DeviceAccountError as exc:
            print(f"share {folder.share}: {exc}", file=sys.stderr)
            return 1
    _write(args.out, text)
    return 0


def _any(args: argparse.Namespace) -> int:
    _, _, count = _conf(argparse.Namespace(config=args.config, owner=GATEWAY_ACCOUNT))
    return 0 if count else 1


def _mount(args: argparse.Namespace) -> int:
    """Mount each cifs folder whose target passes the rules (gateway.ingest.remote.cifs);
    a refused one is named on stderr and skipped, the others still mounted; 1 if any failed."""
    config = load_config(Path(args.config), os.environ.get("CREDENTIALS_DIRECTORY"))
    owner = _owner(args.owner)
    failed = 0
    # The share's files belong to the account its folder was judged for (--owner), by number.
    plans = mount_plans_by_folder(config, uid=owner[0], gid=owner[1], credstore=args.credstore)
    for folder, plan in plans:
        # A missing folder is made (the gateway's, empty) only once its path passes the rules.
        passes = target_path_problem(plan.target, args.mount_root) is None and owner[0] >= 0
        make = owner if passes else None
        with open_target(plan.target, make_as=make) as opened:
            verdict = judge_mount_target(
                plan.target, plan.source, opened.facts, owner[0], args.mount_root
            )
            if verdict.action is TargetAction.NOTHING:
                continue  # mounted already (a restart of the unit)
            if verdict.action is TargetAction.REFUSE:
                failed += 1
                print(f"ingest.folder {folder}: not mounted: {verdict.reason}", file=sys.stderr)
                continue
            assert opened.fd is not None
            result = subprocess.run(
                plan.argv(at=opened.mount_path()),
                capture_output=True,
                text=True,
                check=False,
                pass_fds=(opened.fd,),
            )
        if result.returncode != 0:
            failed += 1
            print(f"{plan.source} on {plan.target}: {result.stderr.strip()}", file=sys.stderr)
        else:
            print(f"mounted {plan.source} on {plan.target}")
    return 1 if failed else 0


def _unmount(args: argparse.Namespace) -> int:
    """Unmount each cifs folder's own mount, under the same path rules as ``share mount``;
    anything else mounted there is refused and left alone."""
    config = load_config(Path(args.config), os.environ.get("CREDENTIALS_DIRECTORY"))
    failed = 0
    for folder, plan in reversed(mount_plans_by_folder(config)):
        with open_target(plan.target) as opened:
            verdict = judge_unmount_target(plan.target, plan.source, opened.facts, args.mount_root)
            if verdict.action is TargetAction.NOTHING:
                continue
            if verdict.action is TargetAction.REFUSE:
                failed += 1
                print(f"ingest.folder {folder}: not unmounted: {verdict.reason}", file=sys.stderr)
                continue
            error = unmount(opened)
        if error is not None:
            failed += 1
            print(f"{plan.target}: {error}", file=sys.stderr)
    return 1 if failed else 0


def _owner(account: str) -> tuple[int, int]:
    """The uid and gid a mount target must belong to; -1 (no folder's) without the account."""
    try:
        entry = pwd.getpwnam(account)
    except KeyError:
        return -1, -1
    return entry.pw_uid, entry.pw_gid
