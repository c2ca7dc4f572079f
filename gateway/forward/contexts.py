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
    ExplicitVRBigEndian,
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
    TO_LITTLE_ENDIAN = "to_little_endian"  # Explicit VR Big Endian, values byte-swapped
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
    if transfer_syntax_uid == ExplicitVRBigEndian:
        # pynetdicom re-encodes only within one byte order: the byte swap is ours (transcode).
        return Route.TO_LITTLE_ENDIAN
    try:
        compressed = UID(transfer_syntax_uid).is_compressed
    except ValueError:  # a private or unknown transfer syntax: pydicom cannot decode it
        return Route.NONE
    return Route.DECODE if compressed else Route.NONE


def no_route_reason(
    accepted: Collection[Pair], sop_class_uid: str, transfer_syntax_uid: str
) -> str:
    """What failed when ``choose_route`` found no route, and what the operator can do about it."""
    sop, syntax = _name(sop_class_uid), _name(transfer_syntax_uid)
    taken = sorted(_name(ts) for s, ts in accepted if s == sop_class_uid)
    if not taken:
        proposed = ", ".join(
            _name(ts) for _, ts in contexts_for(sop_class_uid, transfer_syntax_uid)
        )
        return (
            f"the PACS accepted {sop} in none of the proposed transfer syntaxes ({proposed}); "
            f"enable {sop} for this gateway on the PACS, then retry (queue retry)"
        )
    return (
        f"the PACS accepts {sop} only as {', '.join(taken)}, and the gateway cannot convert "
        f"{syntax} to that; enable {syntax} or {_name(ExplicitVRLittleEndian)} for {sop} on "
        "the PACS, then retry (queue retry)"
    )


def conversion_failed_reason(
    route: Route, sop_class_uid: str, transfer_syntax_uid: str, detail: str
) -> str:
    """Why the conversion ``route`` failed (``detail``: the cause), and what to do instead."""
    sop, syntax = _name(sop_class_uid), _name(transfer_syntax_uid)
    if route is Route.DECODE:
        step = f"cannot decode {syntax} pixel data for a PACS that accepts {sop} only uncompressed"
    elif route is Route.TO_LITTLE_ENDIAN:
        step = f"cannot convert {syntax} to little endian for a PACS that does not accept it"
    else:
        step = f"cannot re-encode {syntax} in a transfer syntax the PACS accepts for {sop}"
    return (
        f"{step}: {detail}; enable {syntax} for {sop} on the PACS and retry (queue retry), "
        "or have the source send the object in another transfer syntax"
    )


def conversion_note(route: Route, transfer_syntax_uid: str) -> str:
    """What a delivered object's record says about a conversion that changed its encoding."""
    syntax, target = _name(transfer_syntax_uid), _name(ExplicitVRLittleEndian)
    if route is Route.DECODE:
        return (
            f"decoded from {syntax} to {target}: "
            "the PACS does not accept the compressed transfer syntax"
        )
    if route is Route.TO_LITTLE_ENDIAN:
        return f"converted from {syntax} to {target}: the PACS does not accept big endian"
    return ""


def _name(uid: str) -> str:
    return UID(uid).name
