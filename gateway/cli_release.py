"""`dicom-gateway release ...`: the maintainer's side of updates (build, sign, publish).

Runs on a release machine, never on a box. Keys live in a folder outside the repository
(``--keys``); see docs/updates.md for which keys stay offline. Every command that signs needs
the keys of the roles it touches: publish and rollout the targets, snapshot and timestamp keys;
refresh-timestamp the timestamp (and snapshot) key; rotate-key the root keys too.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gateway.clock import SystemClock
from gateway.update.bundle import DEFAULT_MTIME, BundleError, build_bundle, read_release_info
from gateway.update.deb import DEFAULT_MAINTAINER, PACKAGE, DebError, build_deb
from gateway.update.repo import (
    ARCHES,
    CHANNELS,
    ROLES,
    KeyRing,
    ReleaseFields,
    RepoError,
    TufRepository,
    target_name,
)

DEFAULT_RELEASES_ROOT = Path("/opt/dicom-gateway/releases")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``release`` and its commands to the ``dicom-gateway`` parser."""
    release = subparsers.add_parser("release", help="build, sign and publish releases (maintainer)")
    sub = release.add_subparsers(dest="release_cmd", required=True)

    init = sub.add_parser("init-repo", help="create a TUF repository and its keys")
    init.add_argument("repo", type=Path, help="repository folder (what the web server serves)")
    init.add_argument("--keys", type=Path, required=True, help="keys folder, outside the repo")
    init.add_argument("--root-keys", type=int, default=1, help="number of root keys (e.g. 3)")
    init.add_argument("--root-threshold", type=int, default=1, help="root signatures needed")
    init.set_defaults(func=cmd_init_repo)

    build = sub.add_parser("build", help="build a release bundle (a ready virtualenv, tarred)")
    build.add_argument("--version", required=True, help="must equal gateway.__version__")
    build.add_argument("--arch", required=True, choices=ARCHES)
    build.add_argument("--out", type=Path, required=True, help="bundle file to write")
    build.add_argument("--wheels", type=Path, help="install offline from this wheel folder")
    build.add_argument(
        "--trusted-root",
        type=Path,
        required=True,
        help="REPO/metadata/root.json: the root the box trusts first (baked into the bundle)",
    )
    build.add_argument(
        "--releases-root",
        type=Path,
        default=DEFAULT_RELEASES_ROOT,
        help="where the venv is built: the path it will have on the box",
    )
    build.add_argument("--source", type=Path, default=Path(), help="gateway source tree")
    build.add_argument("--python", default="/usr/bin/python3", help="base interpreter")
    build.set_defaults(func=cmd_build)

    deb = sub.add_parser("deb", help="wrap a bundle into a .deb for a site's own Debian 12 box")
    deb.add_argument("bundle", type=Path, help="a bundle made by `release build`")
    deb.add_argument("--out", type=Path, required=True, help="folder to write the .deb to")
    deb.add_argument("--source", type=Path, default=Path(), help="gateway source tree")
    deb.add_argument("--maintainer", default=DEFAULT_MAINTAINER, help="the Maintainer: field")
    deb.add_argument(
        "--mtime",
        type=int,
        default=int(os.environ.get("SOURCE_DATE_EPOCH", DEFAULT_MTIME)),
        help="every file's time (default: $SOURCE_DATE_EPOCH, else 1980-01-01)",
    )
    deb.set_defaults(func=cmd_deb)

    publish = sub.add_parser("publish", help="sign a bundle into the repository")
    publish.add_argument("repo", type=Path)
    publish.add_argument("bundle", type=Path)
    publish.add_argument("--keys", type=Path, required=True)
    publish.add_argument("--channel", choices=CHANNELS, required=True)
    publish.add_argument("--rollout", type=int, required=True, help="percent of boxes, 0-100")
    publish.add_argument("--min-from", required=True, help="oldest version that may upgrade")
    publish.add_argument("--hardware", required=True, help="comma list, e.g. rpi4,rpi5")
    publish.set_defaults(func=cmd_publish)

    rollout = sub.add_parser("rollout", help="change a published release's rollout percentage")
    rollout.add_argument("repo", type=Path)
    rollout.add_argument("--keys", type=Path, required=True)
    rollout.add_argument("--version", required=True)
    rollout.add_argument("--arch", required=True, choices=ARCHES)
    rollout.add_argument("--percent", type=int, required=True)
    rollout.set_defaults(func=cmd_rollout)

    refresh = sub.add_parser("refresh-timestamp", help="re-sign the timestamp before it expires")
    refresh.add_argument("repo", type=Path)
    refresh.add_argument("--keys", type=Path, required=True)
    refresh.set_defaults(func=cmd_refresh_timestamp)

    rotate = sub.add_parser("rotate-key", help="replace a role's key (signs a new root)")
    rotate.add_argument("repo", type=Path)
    rotate.add_argument("--keys", type=Path, required=True)
    rotate.add_argument("--role", choices=ROLES, required=True)
    rotate.add_argument(
        "--revoke", action="append", help="key id (prefix) to drop; default: all of the role's"
    )
    rotate.set_defaults(func=cmd_rotate_key)

    listing = sub.add_parser("list", help="published releases and key expiry")
    listing.add_argument("repo", type=Path)
    listing.set_defaults(func=cmd_list)


def _fail(exc: Exception) -> int:
    print(f"release: {exc}", file=sys.stderr)
    return 2


def cmd_init_repo(args: argparse.Namespace) -> int:
    """Create the repository; print the key ids per role."""
    try:
        repo = TufRepository.init(
            args.repo,
            args.keys,
            SystemClock(),
            root_keys=args.root_keys,
            root_threshold=args.root_threshold,
        )
    except RepoError as exc:
        return _fail(exc)
    root = repo.root().signed
    for role in ROLES:
        ids = ", ".join(k[:12] for k in root.roles[role].keyids)
        print(f"{role}: threshold {root.roles[role].threshold}, keys {ids}")
    print(f"trust anchor to bake into builds: {repo.metadata_dir / 'root.json'}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    """Build one bundle."""
    try:
        info = build_bundle(
            version=args.version,
            arch=args.arch,
            out=args.out,
            releases_root=args.releases_root,
            source=args.source,
            clock=SystemClock(),
            wheels=args.wheels,
            trusted_root=args.trusted_root,
            python=args.python,
        )
    except BundleError as exc:
        return _fail(exc)
    print(
        f"{args.out}: {info.version} {info.arch}, python {info.python}, "
        f"{len(info.dependencies)} packages"
    )
    return 0


def cmd_deb(args: argparse.Namespace) -> int:
    """Build the .deb of one bundle."""
    try:
        built = build_deb(
            args.bundle, args.source, args.out, maintainer=args.maintainer, mtime=args.mtime
        )
    except DebError as exc:
        return _fail(exc)
    print(f"{built.path}: {PACKAGE} {built.version} {built.arch}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    """Sign a bundle into the repository, version and arch taken from its RELEASE.json."""
    try:
        info = read_release_info(args.bundle)
        fields = ReleaseFields(
            version=info.version,
            arch=info.arch,
            hardware=tuple(h.strip() for h in args.hardware.split(",") if h.strip()),
            min_from=args.min_from,
            channel=args.channel,
            rollout=args.rollout,
        )
        repo = TufRepository(args.repo, SystemClock())
        target = repo.add_target(args.bundle, fields, KeyRing.load(args.keys))
    except (BundleError, RepoError) as exc:
        return _fail(exc)
    print(
        f"published {target.path} sha256 {target.hashes['sha256']} "
        f"({fields.channel}, rollout {fields.rollout}%)"
    )
    return 0


def cmd_rollout(args: argparse.Namespace) -> int:
    """Widen (or pause, with 0) a release's rollout."""
    try:
        repo = TufRepository(args.repo, SystemClock())
        fields = repo.set_rollout(args.version, args.arch, args.percent, KeyRing.load(args.keys))
    except RepoError as exc:
        return _fail(exc)
    print(f"{target_name(fields.version, fields.arch)}: rollout {fields.rollout}%")
    return 0


def cmd_refresh_timestamp(args: argparse.Namespace) -> int:
    """Re-sign the timestamp (and the snapshot when due)."""
    try:
        repo = TufRepository(args.repo, SystemClock())
        version = repo.refresh_timestamp(KeyRing.load(args.keys))
    except RepoError as exc:
        return _fail(exc)
    expires = repo.timestamp().signed.expires.isoformat()
    print(f"timestamp version {version}, expires {expires}")
    return 0


def cmd_rotate_key(args: argparse.Namespace) -> int:
    """Replace keys of one role; the new key file is written to --keys."""
    try:
        repo = TufRepository(args.repo, SystemClock())
        new = repo.rotate_key(args.role, args.keys, args.revoke)
    except RepoError as exc:
        return _fail(exc)
    print(
        f"{args.role}: new key {new.public_key.keyid[:12]}; root version "
        f"{repo.root().signed.version}; move the old key file out of {args.keys} and destroy it"
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """What is published, and when each role's metadata expires."""
    repo = TufRepository(args.repo, SystemClock())
    try:
        releases = repo.releases()
        expiry = {
            "root": repo.root().signed.expires,
            "targets": repo.targets().signed.expires,
            "snapshot": repo.snapshot().signed.expires,
            "timestamp": repo.timestamp().signed.expires,
        }
    except (RepoError, OSError) as exc:
        return _fail(exc)
    for name, f in releases.items():
        print(
            f"{name}: {f.channel} rollout {f.rollout}% min_from {f.min_from} "
            f"hardware {','.join(f.hardware)}"
        )
    for role, when in expiry.items():
        print(f"{role} expires {when.isoformat()}")
    return 0
