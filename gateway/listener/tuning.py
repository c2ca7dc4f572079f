"""Two shortcuts in pynetdicom 3.0.x's C-FIND response path; the bytes on the wire are unchanged.

Measured on the MWL benchmark (52 matches per query), most of the SCP's CPU per pending
response went to encoding: pydicom encoding the identifier, and pynetdicom building and
encoding the same command set twice per response (once for its group length). Both are
repeated work: a worklist answer is the same bytes for the same record and key set, and every
pending response to one request carries the same command set.

* :class:`EncodedIdentifier` is a C-FIND identifier that knows its own encoding. It is a real
  Dataset (decoded from those bytes), so without the shortcut pynetdicom encodes it as any
  other. :func:`install` wraps the ``encode`` name in ``pynetdicom.service_class`` (what
  ``_c_find_scp`` calls) to return the known bytes for it; every other dataset goes through.
* :class:`FindResponseDimse` replaces an association's DIMSE provider: a pending C-FIND
  response's command set is encoded once per (request, status) and the P-DATA fragments are
  cut as pynetdicom cuts them. Anything else, or any handler bound to EVT_DIMSE_SENT (it
  wants the message object), takes pynetdicom's own path.

Both lean on pynetdicom internals (a module global, ``Association.dimse``, ``send_msg``), so
they apply to pynetdicom 3.0.x only (pyproject pins <3.1); tests/listener/test_tuning.py
checks that the bytes are the same with and without them.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from math import ceil
from typing import TYPE_CHECKING, Any, cast

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pynetdicom import __version__ as pynetdicom_version
from pynetdicom import evt, service_class
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode as pynetdicom_encode
from pynetdicom.pdu_primitives import P_DATA

if TYPE_CHECKING:
    from pynetdicom.association import Association

SUPPORTED = pynetdicom_version.startswith("3.0.")
_PENDING = (0xFF00, 0xFF01)
_COMMAND_MORE, _COMMAND_LAST, _DATA_MORE, _DATA_LAST = b"\x01", b"\x03", b"\x00", b"\x02"

Encoder = Callable[..., "bytes | None"]


class EncodedIdentifier(Dataset):
    """A response identifier decoded from ``encoded``, which pynetdicom may send as it is."""

    def __init__(self, encoded: bytes, implicit_vr: bool, little_endian: bool) -> None:
        decoded = read_dataset(BytesIO(encoded), implicit_vr, little_endian)
        super().__init__(decoded)  # shares the decoded elements (raw until accessed)
        self.set_original_encoding(implicit_vr, little_endian, decoded.original_character_set)
        self.__dict__["encoded_as"] = (encoded, implicit_vr, little_endian)

    def encoded_for(self, implicit_vr: bool, little_endian: bool, deflated: bool) -> bytes | None:
        """The bytes when asked for the encoding they are in, else None."""
        encoded, implicit, little = self.__dict__["encoded_as"]
        if deflated or implicit != implicit_vr or little != little_endian:
            return None
        return cast(bytes, encoded)


def _encode_known(
    ds: Dataset, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False
) -> bytes | None:
    if isinstance(ds, EncodedIdentifier):
        known = ds.encoded_for(is_implicit_vr, is_little_endian, deflated)
        if known is not None:
            return known
    return pynetdicom_encode(ds, is_implicit_vr, is_little_endian, deflated)


def install() -> bool:
    """Let pynetdicom's C-FIND SCP send known encodings as they are; False if not 3.0.x."""
    if not SUPPORTED:
        return False
    service_class.encode = _encode_known  # type: ignore[attr-defined]  # idempotent
    return True


def installed() -> bool:
    """True when :func:`install` is in effect."""
    return getattr(service_class, "encode", None) is _encode_known


class FindResponseDimse(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider, encoding a pending C-FIND response's command set once."""

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self._commands: dict[tuple[Any, ...], bytes] = {}

    def send_msg(self, primitive: Any, context_id: int) -> None:
        """As pynetdicom's, with the shortcut for pending C-FIND responses."""
        command = self._pending_find_command(primitive)
        max_pdu = self.maximum_pdu_size
        if command is None or 0 < max_pdu < 7 or self.assoc.get_handlers(evt.EVT_DIMSE_SENT):
            super().send_msg(primitive, context_id)
            return
        send = self.dul.send_pdu
        for pdata in _pdata(context_id, command, _COMMAND_MORE, _COMMAND_LAST, max_pdu):
            send(pdata)
        identifier = primitive.Identifier
        data = identifier.getvalue() if identifier is not None else b""
        if data:
            for pdata in _pdata(context_id, data, _DATA_MORE, _DATA_LAST, max_pdu):
                send(pdata)

    def _pending_find_command(self, primitive: Any) -> bytes | None:
        if type(primitive) is not C_FIND or primitive.MessageIDBeingRespondedTo is None:
            return None
        if primitive.Status not in _PENDING or primitive.Identifier is None:
            return None
        if primitive.OffendingElement is not None or primitive.ErrorComment is not None:
            return None
        key = (
            primitive.MessageIDBeingRespondedTo,
            str(primitive.AffectedSOPClassUID),
            primitive.Status,
        )
        command = self._commands.get(key)
        if command is None:
            message = C_FIND_RSP()
            message.primitive_to_message(primitive)
            command = cast(bytes, pynetdicom_encode(message.command_set, True, True))
            self._commands[key] = command
        return command


def _pdata(context_id: int, data: bytes, more: bytes, last: bytes, max_pdu: int) -> list[P_DATA]:
    """One P-DATA per PDV, fragments of ``max_pdu - 6`` bytes, as pynetdicom's encode_msg."""
    step = len(data) if max_pdu == 0 else max_pdu - 6
    count = 1 if max_pdu == 0 else ceil(len(data) / step)
    out = []
    for index in range(count):
        pdata = P_DATA()
        control = last if index == count - 1 else more
        fragment = data[index * step : (index + 1) * step]
        pdata.presentation_data_value_list.append((context_id, control + fragment))
        out.append(pdata)
    return out


def tune_association(assoc: Association) -> None:
    """Give a new (not yet running) acceptor association the shortcut DIMSE provider."""
    if SUPPORTED:
        assoc.dimse = FindResponseDimse(assoc)
