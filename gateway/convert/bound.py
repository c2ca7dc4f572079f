"""What a worklist binding means for a created object's study, SOP Instance UID and hold.

The file converter and the serial converter both turn a binding into these three; one place
decides them so a file and a device message bound the same way are grouped, named and held by
the same rules:

- a bound object (``binding.item`` set) goes to the step's study (its Study Instance UID when the
  worklist gives one), keyed by the step; an unbound one is grouped by identity, held or not;
- the SOP Instance UID is derived from the step's key when bound, else from the identity's
  patient ID, name and accession number;
- the held reason is the binder's; an unbound object without a known identity is held for lack of
  one even if the binder let it through (the binder never does; this keeps it so whatever it says).
"""

from __future__ import annotations

from gateway.convert.grouping import StudyAssignment, StudyGrouper
from gateway.worklist.binding import HELD_NO_IDENTITY, Binding


def assign_study(
    grouper: StudyGrouper,
    binding: Binding,
    source: str,
    acquired_at: float,
    object_key: str,
    modality: str,
) -> StudyAssignment:
    """The study and series ``grouper`` gives the object under ``binding``."""
    step = binding.item
    if step is None:
        return grouper.assign(
            source,
            binding.identity,
            acquired_at,
            object_key,
            modality=modality,
            held=binding.held,
        )
    return grouper.assign(
        source,
        binding.identity,
        acquired_at,
        object_key,
        modality=modality,
        order_key=step.key,
        study_instance_uid=step.study_instance_uid or None,
    )


def binding_parts(binding: Binding) -> tuple[str, ...]:
    """What of the binding a SOP Instance UID is derived from."""
    if binding.item is not None:
        return ("worklist-step", binding.item.key)
    identity = binding.identity
    return (
        identity.patient_id or "",
        identity.patient_name or "",
        identity.accession_number or "",
    )


def held_reason(binding: Binding) -> str | None:
    """Why the object waits for an operator, or None when it goes out."""
    if binding.held_reason is not None:
        return binding.held_reason
    if binding.item is None and not binding.identity.known:
        return HELD_NO_IDENTITY
    return None
