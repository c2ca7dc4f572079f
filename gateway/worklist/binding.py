"""Which patient and order an ingested file belongs to: the binding rules of docs/binding.md.

Pure logic, no I/O of its own: the worklist comes in through :class:`WorklistLookup`, the room's
selection through :class:`SelectionSource`. Nothing is ever guessed. Sources are tried in this
order: (a) the procedure selected for the room, while its item is in the worklist cache; (b) the
file name's accession number and/or patient ID looked up in the cache; (c) the sidecar's, looked
up the same way. The first one that names exactly one scheduled step chooses it, and every
identifier any source gave must then agree with that step, or the object is held as a conflict.
No unique match: held (ambiguous, or no match), except that with ``require_match`` off the file
name's and sidecar's own identity is used, as it is without a worklist at all. Held reasons
name sources and fields, never values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from gateway.identity import PatientIdentity
from gateway.ingest.sidecar import Sidecar
from gateway.worklist.item import WorklistItem
from gateway.worklist.lookup import WorklistLookup
from gateway.worklist.selection import Selection

HELD_NO_IDENTITY = "patient identity unknown"

BindingSource = Literal["selection", "filename", "sidecar", "file-name identity", "none"]

_LABELS = {"selection": "selected procedure", "filename": "file name", "sidecar": "sidecar"}


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

    def bind(self, filename_identity: PatientIdentity, sidecar: Sidecar | None) -> Binding:
        """The binding of one file from its file-name identity and its sidecar (if any)."""
        side = PatientIdentity() if sidecar is None else sidecar.identity
        written, differing = _merge(filename_identity, side)
        if sidecar is not None and sidecar.problem is not None:
            # The device meant to tell us something we could not read: binding without it
            # could contradict it.
            return _held(written, f"sidecar malformed: {sidecar.problem}")
        if self.lookup is None:
            return self._unbound(written, differing, filename_identity)
        return self._bind_to_worklist(self.lookup, filename_identity, side, written, differing)

    def _bind_to_worklist(
        self,
        lookup: WorklistLookup,
        filename: PatientIdentity,
        side: PatientIdentity,
        written: PatientIdentity,
        differing: list[str],
    ) -> Binding:
        claims: tuple[tuple[BindingSource, PatientIdentity], ...] = (
            ("filename", filename),
            ("sidecar", side),
        )
        chosen: tuple[BindingSource, WorklistItem] | None = None
        stale_selection = False
        selected = self.selection.current() if self.selection is not None else None
        if selected is not None:
            item = lookup.get(selected.item_key)
            if item is None:
                stale_selection = True  # expired or withdrawn from the worklist since
            else:
                chosen = ("selection", item)
        ambiguous: list[tuple[str, int]] = []
        unmatched: list[str] = []
        if chosen is None:
            for source, claim in claims:
                if not (claim.accession_number or claim.patient_id):
                    continue
                matches = lookup.find(
                    accession_number=claim.accession_number, patient_id=claim.patient_id
                )
                if len(matches) == 1:
                    chosen = (source, matches[0])
                    break
                if matches:
                    ambiguous.append((source, len(matches)))
                else:
                    unmatched.append(source)
        if chosen is not None:
            source, item = chosen
            conflict = _conflict(source, item, claims)
            if conflict is not None:
                return _held(written, conflict)
            return Binding(item, item_identity(item), None, source)
        if ambiguous:
            where, count = ambiguous[0]
            return _held(
                written,
                f"ambiguous: {count} scheduled steps match the {_LABELS[where]}'s identifiers",
            )
        if self.require_match:
            return _held(written, _no_match_reason(unmatched, stale_selection))
        return self._unbound(written, differing, filename)

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
) -> str | None:
    """Why a source's identifiers contradict the chosen step, or None when all agree.

    Names are not compared: they are not identifiers, and spelling and case differ between a
    device's file names and the RIS without meaning another patient.
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
                return f"conflict: the {_LABELS[source]}'s {label} is not the {_LABELS[chosen]}'s"
    return None


def _no_match_reason(unmatched: list[str], stale_selection: bool) -> str:
    parts = []
    if stale_selection:
        parts.append("the selected procedure is no longer in the worklist")
    if unmatched:
        names = " or ".join(f"the {_LABELS[s]}'s identifiers" for s in unmatched)
        parts.append(f"no scheduled step matches {names}")
    if not parts:
        parts.append("no procedure selected and no identifiers in the file name or a sidecar")
    return "no worklist match: " + "; ".join(parts)
