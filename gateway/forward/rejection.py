"""A-ASSOCIATE-RJ result, source and reason in words (PS3.8 Table 9-21), and who must act: pure.

A rejection is transient (result 2: the PACS is busy or congested; retrying later is the cure)
or permanent (result 1: "the same request will be rejected again"). A permanent rejection is a
configuration that a person must change, on our side or the PACS's; the advice names what to
change, with the values the PACS administrator needs:

==========================================  ===================================================
permanent rejection, reason                 advice
==========================================  ===================================================
calling AE title not recognised (1, 3)      the PACS does not know our AE title: ask its
                                            administrator to add <our AE> at <our address>
called AE title not recognised (1, 7)       the PACS does not answer to the AE title we call:
                                            check the destination's ``ae_title``; some PACS
                                            (DCMTK's dcmqrscp) give this reason for an unknown
                                            calling AE title too, so ask as for (1, 3)
application context not supported (1, 2)    not a DICOM PACS, or a wrong port
anything else (no reason given, ...)        the PACS refuses us for good: ask its administrator
                                            whether it knows <our AE> at <our address>
==========================================  ===================================================

The lane treats a permanent rejection as the destination's condition REJECTED
(gateway.forward.condition): nothing is lost, attempts continue at the backoff ceiling.
"""

from __future__ import annotations

from dataclasses import dataclass

PERMANENT = 1
TRANSIENT = 2
SERVICE_USER = 1
CALLING_AE_NOT_RECOGNISED = 3
CALLED_AE_NOT_RECOGNISED = 7
CONTEXT_NAME_NOT_SUPPORTED = 2

_RESULTS = {PERMANENT: "permanent", TRANSIENT: "transient"}
_SOURCES = {
    1: "service-user",
    2: "service-provider (ACSE)",
    3: "service-provider (presentation)",
}
_REASONS = {
    (1, 1): "no reason given",
    (1, CONTEXT_NAME_NOT_SUPPORTED): "application context name not supported",
    (1, CALLING_AE_NOT_RECOGNISED): "calling AE title not recognised",
    (1, CALLED_AE_NOT_RECOGNISED): "called AE title not recognised",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}


def describe_rejection(result: int | None, source: int | None, reason: int | None) -> str:
    """E.g. ``rejected (permanent) by service-user: called AE title not recognised``."""
    result_word = _RESULTS.get(result or 0, f"result {result}")
    source_word = _SOURCES.get(source or 0, f"source {source}")
    reason_word = _REASONS.get((source or 0, reason or 0), f"reason {reason}")
    return f"rejected ({result_word}) by {source_word}: {reason_word}"


def is_permanent(result: int | None) -> bool:
    """Whether the PACS says the same request will be rejected again (result 1)."""
    return result == PERMANENT


@dataclass(frozen=True)
class Parties:
    """Who asked whom: what a PACS administrator needs to recognise us."""

    calling_ae_title: str  # ours
    called_ae_title: str  # the destination's ae_title
    local_address: str | None  # our address as the PACS saw it; None when unknown
    where: str  # the destination, e.g. ``PACS@10.0.0.7:104``


def rejection_advice(source: int | None, reason: int | None, parties: Parties) -> str:
    """What a person must do about a permanent rejection (the table in the module docstring)."""
    ours = f"AE title {parties.calling_ae_title}"
    if parties.local_address:
        ours += f" at {parties.local_address}"
    ask = f"ask the PACS administrator to add {ours}"
    if source == SERVICE_USER and reason == CALLING_AE_NOT_RECOGNISED:
        return f"PACS rejected our AE title: calling AE title not recognised — {ask}"
    if source == SERVICE_USER and reason == CALLED_AE_NOT_RECOGNISED:
        return (
            f"PACS rejected the AE title we call: called AE title {parties.called_ae_title} "
            f"not recognised — check the destination's ae_title against the PACS's, "
            f"and {ask} (some PACS give this reason for an unknown calling AE title too)"
        )
    if source == SERVICE_USER and reason == CONTEXT_NAME_NOT_SUPPORTED:
        return (
            f"{parties.where} does not speak the DICOM application context — check the "
            "destination's host and port"
        )
    return f"PACS rejected the association for good — {ask}, or ask why it refuses us"
