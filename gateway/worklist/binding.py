"""Which patient and order an ingested file belongs to: the binding rules of docs/binding.md.

Pure logic, no I/O of its own: the worklist comes in through :class:`WorklistLookup`, the room's
selection through :class:`SelectionSource`. Nothing is ever guessed. Sources are tried in this
order: (a) the procedure selected for the room, while its item is in the worklist cache; (b) the
carrier's accession number and/or patient ID (a file name's, a device message's or a received
object's) looked up in the cache; (c) the sidecar's, looked up the same way. Each source's keys
are judged by :func:`gateway.worklist.keys.judge_keys`: keys of one source that name different
patients hold the object as a conflict, whatever the other sources say. The first source that
names exactly one scheduled step chooses it, and every identifier any source gave must then
agree with that step, or the object is held as a conflict. No unique match: held (ambiguous, or
no match), except that with ``require_match`` off the carrier's and sidecar's own identity is
used, as it is without a worklist at all.

A held reason is a summary that names sources and fields, never values, optionally followed by
:data:`DETAIL_MARK` and the values an operator needs to act on it (accession numbers, patient
IDs; never names). The queue keeps the whole reason, for ``held list``, the API and the panel;
logs carry :func:`loggable_reason`, the summary alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from gateway.identity import PatientIdentity
from gateway.ingest.sidecar import Sidecar
from gateway.worklist.item import WorklistItem
from gateway.worklist.keys import KeyJudgement, KeyVerdict, judge_keys
from gateway.worklist.lookup import WorklistLookup
from gateway.worklist.selection import Selection

HELD_NO_IDENTITY = "patient identity unknown"
DETAIL_MARK = " — "  # in a held reason, what follows names IDs: for the operator, not logs
FILE_NAME = "file name"  # the carrier of folder intake's identity (the default of Binder.bind)

BindingSource = Literal["selection", "filename", "sidecar", "file-name identity", "none"]

_LABELS: Mapping[BindingSource, str] = {
    "selection": "selected procedure",
    "filename": FILE_NAME,
    "sidecar": "sidecar",
}


class SelectionSource(Protocol):
    """What binding needs of the room selection (gateway.worklist.selection.RoomSelection)."""

    def current(self) -> Selection | None: ...


@dataclass(frozen=True)
class Binding:
    """The outcome for one file: the step it is bound to, or why it is held.

    ``identity`` is what the object carries: the item's patient and accession when bound, else
    the file name's identity completed by the sidecar's (the file name wins where they differ).
    ``source`` says where the item or the identity came from; "none" whenever the object is held.
    """

    item: WorklistItem | None
    identity: PatientIdentity
    held_reason: str | None
    source: BindingSource

    @property
    def held(self) -> bool:
        """True when the object must wait for an operator."""
        return self.held_reason is not None

    @classmethod
    def from_identity(cls, identity: PatientIdentity) -> Binding:
        """No worklist: the identity as it is, held only when it has no patient ID."""
        if identity.known:
            return cls(None, identity, None, "file-name identity")
        return cls(None, identity, HELD_NO_IDENTITY, "none")


def item_identity(item: WorklistItem) -> PatientIdentity:
    """The patient and accession a worklist item gives an object."""
    return PatientIdentity(
        patient_id=item.patient_id or None,
        patient_name=item.patient_name or None,
        accession_number=item.accession_number or None,
        birth_date=item.patient_birth_date or None,
        sex=item.patient_sex or None,
    )


def loggable_reason(reason: str | None) -> str:
    """What logs may say of a held reason: its summary, without the IDs after DETAIL_MARK."""
    return "" if reason is None else reason.split(DETAIL_MARK, 1)[0]


class Binder:
    """Applies the binding rules; thread-safe as long as the lookup and selection are."""

    def __init__(
        self,
        lookup: WorklistLookup | None,
        selection: SelectionSource | None,
        require_match: bool,
    ) -> None:
        self.lookup = lookup
        self.selection = selection
        self.require_match = require_match

    def bind(
        self,
        filename_identity: PatientIdentity,
        sidecar: Sidecar | None,
        *,
        carrier: str = FILE_NAME,
    ) -> Binding:
        """The binding of one object from its carrier's identity and its sidecar (if any).

        ``carrier`` names where ``filename_identity`` came from in held reasons: the file name
        (folder intake), or e.g. "device message", "received object". Binding.source stays
        "filename" for all of them.
        """
        labels = {**_LABELS, "filename": carrier}
        side = PatientIdentity() if sidecar is None else sidecar.identity
        written, differing = _merge(filename_identity, side)
        if sidecar is not None and sidecar.problem is not None:
            # The device meant to tell us something we could not read: binding without it
            # could contradict it.
            return _held(written, f"sidecar malformed: {sidecar.problem}")
        if self.lookup is None:
            return self._unbound(written, differing, filename_identity)
        claims: tuple[tuple[BindingSource, PatientIdentity], ...] = (
            ("filename", filename_identity),
            ("sidecar", side),
        )
        return self._bind_to_worklist(self.lookup, claims, written, differing, labels)

    def _bind_to_worklist(
        self,
        lookup: WorklistLookup,
        claims: tuple[tuple[BindingSource, PatientIdentity], ...],
        written: PatientIdentity,
        differing: list[str],
        labels: Mapping[BindingSource, str],
    ) -> Binding:
        judged: list[tuple[BindingSource, KeyJudgement]] = []
        for source, claim in claims:
            judgement = _judge(lookup, claim)
            if judgement.verdict is KeyVerdict.CONTRADICTION:
                # One source naming two patients is wrong whatever the others say.
                return _held(written, _contradiction_reason(judgement, labels[source]))
            judged.append((source, judgement))
        chosen: tuple[BindingSource, WorklistItem] | None = None
        stale_selection = False
        selected = self.selection.current() if self.selection is not None else None
        if selected is not None:
            item = lookup.get(selected.item_key)
            if item is None:
                stale_selection = True  # expired or withdrawn from the worklist since
            else:
                chosen = ("selection", item)
        ambiguous: list[tuple[BindingSource, KeyJudgement]] = []
        unmatched: list[BindingSource] = []
        if chosen is None:
            for source, judgement in judged:
                if judgement.step is not None:
                    chosen = (source, judgement.step)
                    break
                if judgement.verdict is KeyVerdict.AMBIGUOUS:
                    ambiguous.append((source, judgement))
                elif judgement.verdict is KeyVerdict.UNMATCHED:
                    unmatched.append(source)
        if chosen is not None:
            source, item = chosen
            conflict = _conflict(source, item, claims, labels)
            if conflict is not None:
                return _held(written, conflict)
            return Binding(item, item_identity(item), None, source)
        if ambiguous:
            where, judgement = ambiguous[0]
            label = labels[where]
            summary = (
                f"ambiguous: {len(judgement.steps)} scheduled steps match the {label}'s identifiers"
            )
            return _held(written, summary + DETAIL_MARK + judgement.detail(label))
        if self.require_match:
            return _held(written, _no_match_reason(unmatched, stale_selection, labels))
        return self._unbound(written, differing, claims[0][1])

    @staticmethod
    def _unbound(
        written: PatientIdentity, differing: list[str], filename: PatientIdentity
    ) -> Binding:
        if differing:
            return _held(
                written, f"conflict: the file name and the sidecar give different {differing[0]}"
            )
        if not written.known:
            return _held(written, HELD_NO_IDENTITY)
        source: BindingSource = "file-name identity" if filename.patient_id else "sidecar"
        return Binding(None, written, None, source)


def _judge(lookup: WorklistLookup, claim: PatientIdentity) -> KeyJudgement:
    """Look each key up on its own (a joint lookup would hide a contradiction) and judge."""
    acc, pid = claim.accession_number, claim.patient_id
    return judge_keys(
        acc,
        pid,
        lookup.find(accession_number=acc) if acc else [],
        lookup.find(patient_id=pid) if pid else [],
    )


def _contradiction_reason(judgement: KeyJudgement, label: str) -> str:
    if len(judgement.scheduled_patients) > 1:
        summary = (
            f"conflict: the worklist schedules the {label}'s accession number for several patients"
        )
    else:
        summary = f"conflict: the {label}'s accession number is scheduled for another patient"
    return summary + DETAIL_MARK + judgement.detail(label)


def _held(identity: PatientIdentity, reason: str) -> Binding:
    return Binding(None, identity, reason, "none")


def _merge(filename: PatientIdentity, side: PatientIdentity) -> tuple[PatientIdentity, list[str]]:
    """The file name's identity completed by the sidecar's, and the fields they disagree on."""
    fields = (
        ("patient_id", "patient ID"),
        ("patient_name", "patient name"),
        ("accession_number", "accession number"),
        ("birth_date", "birth date"),
        ("sex", "sex"),
    )
    merged: dict[str, str | None] = {}
    differing: list[str] = []
    for name, label in fields:
        mine, theirs = getattr(filename, name), getattr(side, name)
        if mine and theirs and mine != theirs:
            differing.append(label)
        merged[name] = mine or theirs
    return PatientIdentity(**merged), differing


def _conflict(
    chosen: BindingSource,
    item: WorklistItem,
    claims: tuple[tuple[BindingSource, PatientIdentity], ...],
    labels: Mapping[BindingSource, str],
) -> str | None:
    """Why a source's identifiers contradict the chosen step, or None when all agree.

    Names are not compared: they are not identifiers, and spelling and case differ between a
    device's file names and the RIS without meaning another patient. The reason's detail
    names the IDs that disagree (birth date and sex are named as fields only).
    """
    for source, claim in claims:
        checks = (
            ("patient ID", claim.patient_id, item.patient_id),
            ("accession number", claim.accession_number, item.accession_number),
            ("birth date", claim.birth_date, item.patient_birth_date),
            ("sex", claim.sex, item.patient_sex),
        )
        for label, given, scheduled in checks:
            # An empty worklist value cannot contradict, but a given accession or patient ID
            # must be the step's own: an order the step does not have is another order.
            strict = label in ("patient ID", "accession number")
            if given and (scheduled or strict) and given != scheduled:
                summary = f"conflict: the {labels[source]}'s {label} is not the {labels[chosen]}'s"
                if not strict:
                    return summary
                step = f"accession number {item.accession_number or '(none)'}"
                step += f" for patient ID {item.patient_id or '(none)'}"
                return (
                    f"{summary}{DETAIL_MARK}the step chosen by the {labels[chosen]} is {step};"
                    f" the {labels[source]} says {label} {given}"
                )
    return None


def _no_match_reason(
    unmatched: list[BindingSource], stale_selection: bool, labels: Mapping[BindingSource, str]
) -> str:
    parts = []
    if stale_selection:
        parts.append("the selected procedure is no longer in the worklist")
    if unmatched:
        names = " or ".join(f"the {labels[s]}'s identifiers" for s in unmatched)
        parts.append(f"no scheduled step matches {names}")
    if not parts:
        parts.append(
            f"no procedure selected and no identifiers in the {labels['filename']} or a sidecar"
        )
    return "no worklist match: " + "; ".join(parts)
