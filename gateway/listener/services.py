"""What the listener answers: services declared as data, bound to pynetdicom event handlers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.events import Event, EventType

VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"
UNCOMPRESSED_SYNTAXES = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian)


@dataclass(frozen=True)
class ListenerService:
    """One DICOM service on the listener: its abstract syntaxes and pynetdicom handlers."""

    name: str
    sop_classes: tuple[str, ...]  # abstract syntaxes this service answers
    transfer_syntaxes: tuple[str, ...]
    handlers: tuple[tuple[EventType, Callable[..., Any]], ...]  # pynetdicom (event, handler)
    # Called in the association's thread once it is over and no handler of it runs any more.
    on_association_end: Callable[[Association], None] | None = None


def _echo(event: Event) -> int:
    return 0x0000


def verification_service() -> ListenerService:
    """C-ECHO (Verification SOP Class), always answered with Success."""
    return ListenerService(
        name="verification",
        sop_classes=(VERIFICATION_SOP_CLASS,),
        transfer_syntaxes=tuple(str(s) for s in UNCOMPRESSED_SYNTAXES),
        handlers=((evt.EVT_C_ECHO, _echo),),
    )
