"""Deterministic UIDs: the same inputs always give the same UID (PS3.5 §9, Annex B)."""

from __future__ import annotations

import hashlib
import re

MAX_UID_LENGTH = 64
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


def is_valid_uid(value: str) -> bool:
    """True for a syntactically valid UID: ≤64 chars, digits and dots, no leading zeros."""
    return len(value) <= MAX_UID_LENGTH and _UID_RE.match(value) is not None


class UidFactory:
    """Derives UIDs from hashed parts under an organisation root, or under 2.25 without one."""

    def __init__(self, uid_root: str | None) -> None:
        if uid_root is not None:
            uid_root = uid_root.rstrip(".")
            # The root needs room for a dot and enough hash digits to stay unique.
            if not is_valid_uid(uid_root + ".1") or len(uid_root) > 40:
                raise ValueError("uid_root must be a dotted-decimal UID of at most 40 characters")
        self.uid_root = uid_root

    def derive(self, *parts: str) -> str:
        """The UID for ``parts``: same parts, same UID.

        A part may hold surrogate escapes (a file name that is not UTF-8, from os.fsdecode):
        they stand for the name's own bytes, so two such names differ here as they do on disk.
        """
        digest = hashlib.sha256()
        for part in parts:
            # Length-prefixed so ("ab", "c") and ("a", "bc") differ.
            encoded = part.encode("utf-8", "surrogateescape")
            digest.update(len(encoded).to_bytes(8, "big"))
            digest.update(encoded)
        number = int.from_bytes(digest.digest(), "big")
        if self.uid_root is None:
            # PS3.5 B.2: 2.25 followed by the decimal form of a 128-bit number.
            return f"2.25.{number >> 128}"
        room = MAX_UID_LENGTH - len(self.uid_root) - 1
        # str() of a positive int has no leading zero, and cutting its tail keeps that true.
        return f"{self.uid_root}.{str(number)[:room]}"
