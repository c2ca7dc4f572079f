"""Which presentation contexts to propose and how to send an object over what was accepted: pure.

Each object asks for its own transfer syntax plus Explicit and Implicit VR Little Endian, each
as a separate presentation context (one transfer syntax per context, so the PACS's answer tells
exactly which it takes). An association proposes the union of what recent objects needed,
at most 128 contexts (PS3.8 limits context IDs to odd numbers 1..255).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection
from enum import StrEnum

from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

MAX_CONTEXTS = 128
FALLBACK_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
# Syntaxes pynetdicom can re-encode into one another without touching the pixel data.
_REENCODABLE = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
_REENCODABLE_SOURCES = _REENCODABLE | {DeflatedExplicitVRLittleEndian}

Pair = tuple[str, str]
"""(SOP class UID, transfer syntax UID) of one presentation context."""


class Route(StrEnum):
    """How an object goes over the accepted contexts."""

    AS_STORED = "as_stored"  # its own syntax was accepted: stream the file unchanged
    REENCODE = "reencode"  # uncompressed, re-encoded to an accepted little-endian syntax
    DECODE = "decode"  # compressed; the PACS takes only uncompressed: decode the pixel data
    NONE = "none"  # nothing accepted for its SOP class that we can produce


def contexts_for(sop_class_uid: str, transfer_syntax_uid: str) -> list[Pair]:
    """The contexts one object asks for: its own syntax first, then the fallbacks."""
    pairs = [(sop_class_uid, transfer_syntax_uid)]
    pairs += [(sop_class_uid, ts) for ts in FALLBACK_SYNTAXES if ts != transfer_syntax_uid]
    return pairs


class ContextPlan:
    """The contexts to propose next: what recent objects needed; the least recent go first."""

    def __init__(self, limit: int = MAX_CONTEXTS) -> None:
        self._limit = limit
        self._pairs: OrderedDict[Pair, None] = OrderedDict()

    def want(self, sop_class_uid: str, transfer_syntax_uid: str) -> None:
        """Note that an object needs these contexts now."""
        for pair in contexts_for(sop_class_uid, transfer_syntax_uid):
            self._pairs[pair] = None
            self._pairs.move_to_end(pair)
        while len(self._pairs) > self._limit:
            self._pairs.popitem(last=False)

    def forget(self, sop_class_uid: str) -> None:
        """Stop proposing a SOP class the PACS refused outright."""
        for pair in [p for p in self._pairs if p[0] == sop_class_uid]:
            del self._pairs[pair]

    def proposal(self) -> list[Pair]:
        """Contexts for the next A-ASSOCIATE-RQ, in the order they were first wanted."""
        return list(self._pairs)


def choose_route(accepted: Collection[Pair], sop_class_uid: str, transfer_syntax_uid: str) -> Route:
    """How to send an object of this SOP class and syntax over the ``accepted`` contexts."""
    if (sop_class_uid, transfer_syntax_uid) in accepted:
        return Route.AS_STORED
    takes_uncompressed = any((sop_class_uid, ts) in accepted for ts in sorted(_REENCODABLE))
    if not takes_uncompressed:
        return Route.NONE
    if transfer_syntax_uid in _REENCODABLE_SOURCES:
        return Route.REENCODE
    try:
        compressed = UID(transfer_syntax_uid).is_compressed
    except ValueError:  # a private or unknown transfer syntax: pydicom cannot decode it
        return Route.NONE
    # Explicit VR Big Endian (retired) is neither: pynetdicom cannot swap byte order for us.
    return Route.DECODE if compressed else Route.NONE
