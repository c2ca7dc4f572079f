"""The serial converter: one DeviceMessage and its binding in, DICOM Part 10 files out.

Measurements become one Comprehensive SR (gateway.convert.sr); free text becomes an
Encapsulated PDF rendered like the printout (gateway.convert.textpdf) and, when the profile asks,
a Basic Text SR (gateway.convert.textsr). Patient, study, equipment and UIDs are made as the file
converter makes them (gateway.convert.converter): the worklist step when bound, else the
identity; study grouping by StudyGrouper; the SOP Instance UID derived from the message bytes,
the port and the binding, so a retransmitted message yields the same instance (a duplicate in
the queue) while the same bytes bound to another patient never share a UID.

A series holds one modality, so StudyGrouper files each object by its modality: a port's print
PDFs (DOC) form one series of the study, its measurement SRs and the Basic Text SRs of its print
jobs (SR) another, each numbered in its own series.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import EncapsulatedPDFStorage, ExplicitVRLittleEndian

from gateway.convert import pdf, sr, textpdf, textsr
from gateway.convert.bound import assign_study, binding_parts, held_reason
from gateway.convert.grouping import StudyGrouper
from gateway.convert.modules import ObjectIds, build_common, check_identity, write_part10
from gateway.convert.result import ConversionError, ConvertedObject
from gateway.convert.settings import ConvertSettings
from gateway.convert.uids import UidFactory
from gateway.ingest.serial.message import Concept, DeviceMessage
from gateway.ingest.serial.profile import ConceptSpec, DeviceProfile, PrintCaptureProtocol
from gateway.logsetup import event
from gateway.worklist.binding import Binding

__all__ = ["SerialConverter"]

log = logging.getLogger(__name__)

DOCUMENT_MODALITY = "DOC"
# Printer geometry for text from a profile that is not a print capture (e.g. a line-kv report).
_DEFAULT_COLUMNS = 80
_DEFAULT_LINES = 66


class SerialConverter:
    """Turns a DeviceMessage into SR / Encapsulated PDF objects for one port's profile.

    Built once per [[ingest.serial]] port; thread-safe as far as the grouper is (it is).
    """

    def __init__(
        self,
        settings: ConvertSettings,
        grouper: StudyGrouper,
        uids: UidFactory,
        profile: DeviceProfile,
    ) -> None:
        self.settings = settings
        self.grouper = grouper
        self.uids = uids
        self.profile = profile

    def convert(
        self, message: DeviceMessage, binding: Binding, staging: Callable[[], Path]
    ) -> list[ConvertedObject]:
        """Write the message's objects to fresh ``staging()`` paths (the caller enqueues them).

        ConversionError when the message cannot become DICOM (the caller keeps its raw bytes);
        then no file is left behind.
        """
        # Everything that can refuse the message runs before grouping, so a refused message
        # neither opens a study nor takes an instance number.
        check_identity(binding.identity)
        written: list[ConvertedObject] = []
        try:
            if message.kind == "measurements":
                written.append(self._measurement_sr(message, binding, staging()))
            else:
                written.extend(self._text_objects(message, binding, staging))
        except BaseException:
            for obj in written:
                obj.path.unlink(missing_ok=True)
            raise
        for obj in written:
            event(
                log,
                logging.DEBUG,
                "serial-converted",
                source=message.source,
                sequence=message.sequence,
                sop_class_uid=obj.sop_class_uid,
                sop_instance_uid=obj.sop_instance_uid,
            )
        return written

    # -- object kinds -------------------------------------------------------------------

    def _measurement_sr(
        self, message: DeviceMessage, binding: Binding, out_path: Path
    ) -> ConvertedObject:
        children = [
            *self._context(message),
            *(sr.measurement_item(m) for m in message.measurements),
            *sr.text_items(message.text),
        ]
        digest = _digest(message, "measurement-sr")
        ids = self._ids(message, binding, digest, sr.COMPREHENSIVE_SR, sr.SR_MODALITY)
        ds = self._common(message, binding, ids, sr.SR_MODALITY)
        sr.add_sr_document(ds, self._title(), children, binding.item)
        return self._write(ds, out_path, ids, binding, "sr")

    def _text_objects(
        self, message: DeviceMessage, binding: Binding, staging: Callable[[], Path]
    ) -> list[ConvertedObject]:
        output = self.profile.output
        if not (output.text_pdf or output.text_sr):
            raise ConversionError("the profile turns off both text outputs (text_pdf, text_sr)")
        text = message.text or ""
        objects: list[ConvertedObject] = []
        if output.text_pdf:
            columns, lines = self._geometry()
            data = textpdf.render_print_job(
                text, columns, lines, message.received_at, self._document_title(message)
            )
            pdf.check_pdf(data)
            if len(data) > self.settings.max_encapsulated_bytes:
                raise ConversionError("rendered PDF larger than the encapsulation limit")
            pdf_ids = self._ids(
                message,
                binding,
                _digest(message, "print-pdf"),
                EncapsulatedPDFStorage,
                DOCUMENT_MODALITY,
            )
            ds = self._common(message, binding, pdf_ids, DOCUMENT_MODALITY)
            pdf.add_pdf_document(ds, data)
            ds.DocumentTitle = self._document_title(message)
            ds.ConceptNameCodeSequence = [_code(self.profile.output.document_title)]
            objects.append(self._write(ds, staging(), pdf_ids, binding, "print"))
        if output.text_sr:
            try:
                objects.append(self._text_sr(message, binding, staging()))
            except BaseException:
                for obj in objects:
                    obj.path.unlink(missing_ok=True)
                raise
        return objects

    def _text_sr(self, message: DeviceMessage, binding: Binding, out_path: Path) -> ConvertedObject:
        digest = _digest(message, "text-sr")
        ids = self._ids(message, binding, digest, textsr.BASIC_TEXT_SR, sr.SR_MODALITY)
        children = textsr.text_report_children(self._context(message), message.text or "")
        ds = self._common(message, binding, ids, sr.SR_MODALITY)
        sr.add_sr_document(ds, self._title(), children, binding.item)
        return self._write(ds, out_path, ids, binding, "txtsr")

    # -- shared pieces ------------------------------------------------------------------

    def _ids(
        self,
        message: DeviceMessage,
        binding: Binding,
        digest: str,
        sop_class_uid: str,
        modality: str,
    ) -> ObjectIds:
        assignment = assign_study(
            self.grouper, binding, message.source, message.received_at, digest, modality
        )
        sop_instance_uid = self.uids.derive("sop", digest, message.source, *binding_parts(binding))
        return ObjectIds(sop_class_uid, sop_instance_uid, assignment, digest)

    def _common(
        self, message: DeviceMessage, binding: Binding, ids: ObjectIds, modality: str
    ) -> Dataset:
        ds = build_common(
            self.settings, binding.identity, ids, modality, message.received_at, binding.item
        )
        if self.profile.output.series_description:
            ds.SeriesDescription = self.profile.output.series_description
        return ds

    def _context(self, message: DeviceMessage) -> list[Dataset]:
        settings = self.settings
        device_uid = self.uids.derive(
            "device-observer",
            message.source,
            settings.manufacturer,
            settings.model_name,
            settings.device_serial_number,
        )
        return list(sr.observation_context(settings, device_uid, message.source))

    def _title(self) -> Concept:
        t = self.profile.output.document_title
        return Concept(t.value, t.scheme, t.meaning)

    def _document_title(self, message: DeviceMessage) -> str:
        title = message.title or self.profile.output.document_title.meaning
        return sr.clean_text(" ".join(title.split()))[:64]

    def _geometry(self) -> tuple[int, int]:
        link = self.profile.link
        if isinstance(link, PrintCaptureProtocol):
            return link.columns, link.lines_per_page
        return _DEFAULT_COLUMNS, _DEFAULT_LINES

    def _write(
        self, ds: Dataset, out_path: Path, ids: ObjectIds, binding: Binding, kind: str
    ) -> ConvertedObject:
        try:
            write_part10(ds, out_path, ExplicitVRLittleEndian, self.settings)
        except BaseException:
            out_path.unlink(missing_ok=True)
            raise
        return ConvertedObject(
            path=out_path,
            sop_class_uid=ids.sop_class_uid,
            sop_instance_uid=ids.sop_instance_uid,
            transfer_syntax_uid=str(ExplicitVRLittleEndian),
            study_instance_uid=ids.assignment.study_instance_uid,
            source_sha256=ids.source_sha256,
            kind=kind,
            held_reason=held_reason(binding),
        )


def _digest(message: DeviceMessage, role: str) -> str:
    # One message may give several objects; each needs its own key in grouping and the queue.
    digest = hashlib.sha256(message.digest_input)
    digest.update(b"\x00" + role.encode())
    return digest.hexdigest()


def _code(concept: ConceptSpec) -> Dataset:
    code = Dataset()
    code.CodeValue = concept.value
    code.CodingSchemeDesignator = concept.scheme
    code.CodeMeaning = concept.meaning
    return code
