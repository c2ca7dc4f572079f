"""The release repository (maintainer side): TUF metadata over signed release bundles.

Layout of a repository folder, servable as-is by any static web server or from a USB stick::

    REPO/metadata/<N>.root.json       every root version ever signed (clients walk the chain)
    REPO/metadata/root.json           a copy of the newest root (the one to bake into a build)
    REPO/metadata/<N>.targets.json    consistent snapshots: metadata is version-prefixed ...
    REPO/metadata/<N>.snapshot.json
    REPO/metadata/timestamp.json      ... except the timestamp, the one file clients poll
    REPO/targets/<sha256>.<name>      ... and bundles are prefixed with their hash

Nothing is ever overwritten except ``timestamp.json`` and ``root.json``, and the timestamp is
written last, so a client reading during a publish sees the old set or the new one, never a mix.

Keys are PEM (PKCS#8) ed25519 private keys, one file each, in a folder kept outside the
repository; a role is signed with every key of that role found in the folder, and an operation
is refused when fewer than the role's threshold are present.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key

# Both packages re-export these names without __all__, which mypy --strict calls private.
from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]
from tuf.api.metadata import (  # type: ignore[attr-defined]
    Metadata,
    MetaFile,
    Role,
    Root,
    Signed,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from gateway.clock import Clock
from gateway.spool.durable import copy_durably, fsync_dir, write_bytes_durably

METADATA_DIR = "metadata"
TARGETS_DIR = "targets"
ROLES = (Root.type, Targets.type, Snapshot.type, Timestamp.type)
CHANNELS = ("stable", "beta")
ARCHES = ("aarch64", "x86_64")


class RepoError(Exception):
    """The repository refused an operation; the message says what to fix (keys, version, input)."""


def target_name(version: str, arch: str) -> str:
    """The target path of a release bundle, as clients look it up."""
    return f"dicom-gateway-{version}-{arch}.tar.gz"


@dataclass(frozen=True)
class ReleaseFields:
    """The signed custom fields of a release target (the maintainer/client contract)."""

    version: str
    arch: str
    hardware: tuple[str, ...]
    min_from: str
    channel: str
    rollout: int

    def __post_init__(self) -> None:
        from packaging.version import InvalidVersion, Version

        for label, value in (("version", self.version), ("min_from", self.min_from)):
            try:
                Version(value)
            except InvalidVersion:
                raise RepoError(f"{label} {value!r} is not a PEP 440 version") from None
        if self.arch not in ARCHES:
            raise RepoError(f"arch {self.arch!r}: one of {', '.join(ARCHES)}")
        if self.channel not in CHANNELS:
            raise RepoError(f"channel {self.channel!r}: one of {', '.join(CHANNELS)}")
        if not 0 <= self.rollout <= 100:
            raise RepoError(f"rollout {self.rollout}: a percentage, 0 to 100")
        if not self.hardware:
            raise RepoError("hardware: name at least one hardware profile")
        if Version(self.min_from) > Version(self.version):
            raise RepoError(f"min_from {self.min_from} is above the version {self.version}")

    def to_custom(self) -> dict[str, Any]:
        """The ``custom`` object of the target, as signed."""
        return {
            "version": self.version,
            "arch": self.arch,
            "hardware": list(self.hardware),
            "min_from": self.min_from,
            "channel": self.channel,
            "rollout": self.rollout,
        }

    @classmethod
    def from_custom(cls, custom: Mapping[str, Any]) -> ReleaseFields:
        """Read the ``custom`` object of a target; RepoError when a field is missing or wrong."""
        try:
            return cls(
                version=str(custom["version"]),
                arch=str(custom["arch"]),
                hardware=tuple(str(h) for h in custom["hardware"]),
                min_from=str(custom["min_from"]),
                channel=str(custom["channel"]),
                rollout=int(custom["rollout"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RepoError(f"target custom fields unreadable: {exc!r}") from None


@dataclass(frozen=True)
class Lifetimes:
    """How long each role's metadata stays valid after it is signed."""

    root: timedelta = timedelta(days=365)
    targets: timedelta = timedelta(days=180)
    snapshot: timedelta = timedelta(days=30)
    timestamp: timedelta = timedelta(days=3)

    def of(self, role: str) -> timedelta:
        """The lifetime of ``role``."""
        lifetime: timedelta = getattr(self, role)
        return lifetime


@dataclass(frozen=True)
class KeyRing:
    """The private keys found in one keys folder, by key id."""

    folder: Path
    signers: Mapping[str, CryptoSigner] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path) -> KeyRing:
        """Read every ``*.pem`` in ``folder``; unreadable files are an error, not skipped."""
        if not folder.is_dir():
            raise RepoError(f"keys folder {folder} does not exist")
        signers: dict[str, CryptoSigner] = {}
        for path in sorted(folder.glob("*.pem")):
            try:
                private = load_pem_private_key(path.read_bytes(), password=None)
                signer = CryptoSigner(private)
            except (ValueError, TypeError) as exc:
                raise RepoError(f"{path}: not an unencrypted PKCS#8 private key ({exc})") from None
            signers[signer.public_key.keyid] = signer
        return cls(folder, signers)

    @staticmethod
    def path_of(folder: Path, role: str, signer: CryptoSigner) -> Path:
        """Where ``generate`` writes a key: the role and the start of the key id, for people."""
        return folder / f"{role}-{signer.public_key.keyid[:12]}.pem"

    @staticmethod
    def generate(folder: Path, role: str) -> CryptoSigner:
        """Make a new ed25519 key for ``role`` and write it to ``folder`` (owner-only, 0600)."""
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        signer = CryptoSigner.generate_ed25519()
        path = KeyRing.path_of(folder, role, signer)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(signer.private_bytes)
            fh.flush()
            os.fsync(fh.fileno())
        fsync_dir(folder)
        return signer


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class TufRepository:
    """A TUF repository in a folder: create it, publish releases, keep it fresh, rotate keys."""

    def __init__(self, path: Path, clock: Clock, lifetimes: Lifetimes | None = None) -> None:
        self.path = path
        self.metadata_dir = path / METADATA_DIR
        self.targets_dir = path / TARGETS_DIR
        self._clock = clock
        self._lifetimes = lifetimes or Lifetimes()
        self._serializer = JSONSerializer(compact=False)

    # -- creating ---------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        path: Path,
        keys_dir: Path,
        clock: Clock,
        *,
        root_keys: int = 1,
        root_threshold: int = 1,
        lifetimes: Lifetimes | None = None,
    ) -> TufRepository:
        """Create an empty repository and one key per online/targets role, ``root_keys`` for root.

        Refuses a keys folder inside the repository (it would be published with it).
        """
        if not 1 <= root_threshold <= root_keys:
            raise RepoError(f"root threshold {root_threshold} of {root_keys} keys is impossible")
        if keys_dir.resolve().is_relative_to(path.resolve()):
            raise RepoError(f"keys folder {keys_dir} is inside the repository {path}")
        repo = cls(path, clock, lifetimes)
        if repo.metadata_dir.exists() and any(repo.metadata_dir.iterdir()):
            raise RepoError(f"{repo.metadata_dir} is not empty: a repository is already there")
        repo.metadata_dir.mkdir(parents=True, exist_ok=True)
        repo.targets_dir.mkdir(parents=True, exist_ok=True)

        root = Root(expires=repo._expiry(Root.type), consistent_snapshot=True)
        for role in ROLES:
            count = root_keys if role == Root.type else 1
            for _ in range(count):
                root.add_key(KeyRing.generate(keys_dir, role).public_key, role)
        root.roles[Root.type].threshold = root_threshold
        keys = KeyRing.load(keys_dir)
        repo._write_root(Metadata(root), keys, previous=None)
        targets = Metadata(Targets(expires=repo._expiry(Targets.type)))
        repo._publish_chain(targets, keys)
        return repo

    # -- reading ----------------------------------------------------------------------------

    def root(self) -> Metadata[Root]:
        """The newest root."""
        return Metadata[Root].from_bytes((self.metadata_dir / "root.json").read_bytes())

    def root_bytes(self) -> bytes:
        """The newest root.json exactly as published (the trust anchor to bake into a build)."""
        return (self.metadata_dir / "root.json").read_bytes()

    def timestamp(self) -> Metadata[Timestamp]:
        """The current timestamp."""
        return Metadata[Timestamp].from_bytes((self.metadata_dir / "timestamp.json").read_bytes())

    def snapshot(self) -> Metadata[Snapshot]:
        """The snapshot the current timestamp names."""
        version = self.timestamp().signed.snapshot_meta.version
        return Metadata[Snapshot].from_file(str(self.metadata_dir / f"{version}.snapshot.json"))

    def targets(self) -> Metadata[Targets]:
        """The top-level targets the current snapshot names."""
        version = self.snapshot().signed.meta[f"{Targets.type}.json"].version
        return Metadata[Targets].from_file(str(self.metadata_dir / f"{version}.targets.json"))

    def releases(self) -> dict[str, ReleaseFields]:
        """Every published release by target name."""
        return {
            name: ReleaseFields.from_custom(info.custom)
            for name, info in sorted(self.targets().signed.targets.items())
        }

    # -- publishing -------------------------------------------------------------------------

    def add_target(self, bundle: Path, fields: ReleaseFields, keys: KeyRing) -> TargetFile:
        """Publish ``bundle`` as the release ``fields`` names: targets → snapshot → timestamp.

        Publishing the same bundle again only updates its signed fields (how a rollout is
        widened); a different bundle under a version already published is refused.
        """
        name = target_name(fields.version, fields.arch)
        info = TargetFile.from_file(name, str(bundle), ["sha256"])
        info.unrecognized_fields["custom"] = fields.to_custom()
        targets = self.targets()
        known = targets.signed.targets.get(name)
        if known is not None and known.hashes != info.hashes:
            raise RepoError(
                f"{name} is already published with other contents; publish a new version"
            )
        self._copy_target(bundle, info)
        targets.signed.targets[name] = info
        self._publish_chain(targets, keys)
        return info

    def set_rollout(self, version: str, arch: str, rollout: int, keys: KeyRing) -> ReleaseFields:
        """Change the rollout percentage of a published release."""
        name = target_name(version, arch)
        targets = self.targets()
        info = targets.signed.targets.get(name)
        if info is None:
            raise RepoError(f"{name} is not published")
        old = ReleaseFields.from_custom(info.custom)
        fields = ReleaseFields(
            old.version, old.arch, old.hardware, old.min_from, old.channel, rollout
        )
        info.unrecognized_fields["custom"] = fields.to_custom()
        self._publish_chain(targets, keys)
        return fields

    def refresh_timestamp(self, keys: KeyRing) -> int:
        """Sign a new timestamp (and a new snapshot when it would expire first); its version."""
        snapshot = self.snapshot()
        timestamp_expiry = self._expiry(Timestamp.type)
        if snapshot.signed.expires <= timestamp_expiry:
            snapshot_bytes = self._write_snapshot(snapshot, keys)
        else:
            snapshot_bytes = (
                self.metadata_dir / f"{snapshot.signed.version}.snapshot.json"
            ).read_bytes()
        return self._write_timestamp(snapshot.signed.version, snapshot_bytes, keys)

    # -- keys -------------------------------------------------------------------------------

    def rotate_key(
        self, role: str, keys_dir: Path, revoke: Sequence[str] | None = None
    ) -> CryptoSigner:
        """Replace keys of ``role`` by a new key written to ``keys_dir``; a new root is signed.

        ``revoke`` names key ids (or unique prefixes) to drop; by default all of the role's.
        The new root carries signatures from the old root's threshold and the new one's, so
        boxes walk the chain; metadata the rotated role signs is re-signed at once.
        """
        if role not in ROLES:
            raise RepoError(f"role {role!r}: one of {', '.join(ROLES)}")
        previous = self.root()
        root = Metadata[Root].from_bytes(previous.to_bytes())
        current_ids = list(root.signed.roles[role].keyids)
        dropped = current_ids if revoke is None else [_match(k, current_ids) for k in revoke]
        new = KeyRing.generate(keys_dir, role)
        root.signed.add_key(new.public_key, role)
        for keyid in dropped:
            root.signed.revoke_key(keyid, role)
        keys = KeyRing.load(keys_dir)
        try:
            if len(root.signed.roles[role].keyids) < root.signed.roles[role].threshold:
                raise RepoError(f"{role} would keep fewer keys than its threshold")
            self._write_root(root, keys, previous=previous)
        except RepoError:
            # Nothing was signed: a key no root lists must not be mistaken for a live one.
            KeyRing.path_of(keys_dir, role, new).unlink()
            raise
        if role == Targets.type:
            self._publish_chain(self.targets(), keys)
        elif role == Snapshot.type:
            snapshot = self.snapshot()
            snapshot_bytes = self._write_snapshot(snapshot, keys)
            self._write_timestamp(snapshot.signed.version, snapshot_bytes, keys)
        elif role == Timestamp.type:
            self.refresh_timestamp(keys)
        return new

    # -- internals --------------------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.fromtimestamp(int(self._clock.now()), tz=UTC)

    def _expiry(self, role: str) -> datetime:
        return self._now() + self._lifetimes.of(role)

    def _sign(self, md: Metadata[Any], keys: KeyRing, roots: Iterable[Root]) -> None:
        """Sign with every available key the given root(s) list for the role; enforce thresholds."""
        role = md.signed.type
        md.signatures.clear()
        for root in roots:
            spec: Role = root.roles[role]
            found = [keys.signers[k] for k in spec.keyids if k in keys.signers]
            if len(found) < spec.threshold:
                raise RepoError(
                    f"{role}: {len(found)} of the {spec.threshold} keys needed are in "
                    f"{keys.folder} (root version {root.version})"
                )
            for signer in found:
                if signer.public_key.keyid not in md.signatures:
                    md.sign(signer, append=True)

    def _bump(self, signed: Signed) -> None:
        signed.version += 1
        signed.expires = self._expiry(signed.type)

    def _write_root(
        self, root: Metadata[Root], keys: KeyRing, previous: Metadata[Root] | None
    ) -> None:
        if previous is not None:
            root.signed.version = previous.signed.version + 1
        root.signed.expires = self._expiry(Root.type)
        roots = [root.signed] if previous is None else [previous.signed, root.signed]
        self._sign(root, keys, roots)
        data = root.to_bytes(self._serializer)
        self._write_new(f"{root.signed.version}.root.json", data)
        write_bytes_durably(self.metadata_dir / "root.json", data)

    def _publish_chain(self, targets: Metadata[Targets], keys: KeyRing) -> None:
        root = self.root().signed
        if (self.metadata_dir / "timestamp.json").exists():
            self._bump(targets.signed)
        else:
            targets.signed.expires = self._expiry(Targets.type)
        self._sign(targets, keys, [root])
        targets_bytes = targets.to_bytes(self._serializer)
        self._write_new(f"{targets.signed.version}.targets.json", targets_bytes)

        if (self.metadata_dir / "timestamp.json").exists():
            snapshot = self.snapshot()
        else:
            snapshot = Metadata(Snapshot(expires=self._expiry(Snapshot.type)))
        snapshot.signed.meta[f"{Targets.type}.json"] = MetaFile(
            targets.signed.version,
            len(targets_bytes),
            {"sha256": hashlib.sha256(targets_bytes).hexdigest()},
        )
        snapshot_bytes = self._write_snapshot(snapshot, keys)
        self._write_timestamp(snapshot.signed.version, snapshot_bytes, keys)

    def _write_snapshot(self, snapshot: Metadata[Snapshot], keys: KeyRing) -> bytes:
        if (self.metadata_dir / f"{snapshot.signed.version}.snapshot.json").exists():
            self._bump(snapshot.signed)
        self._sign(snapshot, keys, [self.root().signed])
        data = snapshot.to_bytes(self._serializer)
        self._write_new(f"{snapshot.signed.version}.snapshot.json", data)
        return data

    def _write_timestamp(self, snapshot_version: int, snapshot_bytes: bytes, keys: KeyRing) -> int:
        path = self.metadata_dir / "timestamp.json"
        if path.exists():
            timestamp = self.timestamp()
            self._bump(timestamp.signed)
        else:
            timestamp = Metadata(Timestamp(expires=self._expiry(Timestamp.type)))
        timestamp.signed.snapshot_meta = MetaFile(
            snapshot_version,
            len(snapshot_bytes),
            {"sha256": hashlib.sha256(snapshot_bytes).hexdigest()},
        )
        self._sign(timestamp, keys, [self.root().signed])
        write_bytes_durably(path, timestamp.to_bytes(self._serializer))
        return timestamp.signed.version

    def _write_new(self, name: str, data: bytes) -> None:
        """Write a version-prefixed file; these never change once written."""
        path = self.metadata_dir / name
        if path.exists():
            raise RepoError(f"{path} exists: the repository was changed behind our back")
        write_bytes_durably(path, data)

    def _copy_target(self, bundle: Path, info: TargetFile) -> None:
        dest = self.targets_dir / f"{info.hashes['sha256']}.{info.path}"
        if dest.exists() and _sha256_file(dest) == info.hashes["sha256"]:
            return
        copy_durably(bundle, dest)


def _match(prefix: str, keyids: Sequence[str]) -> str:
    hits = [k for k in keyids if k.startswith(prefix)]
    if len(hits) != 1:
        raise RepoError(f"key id {prefix!r} matches {len(hits)} keys of the role")
    return hits[0]
