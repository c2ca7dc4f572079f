"""The converter: one settled dropped file in, one DICOM Part 10 file out, or ConversionError."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import EncapsulatedPDFStorage, ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from gateway.convert import jpeg, pdf, raster
from gateway.convert.bound import assign_study, binding_parts, held_reason
from gateway.convert.dicomcheck import check_part10, copy_with_hash
from gateway.convert.grouping import StudyGrouper, file_key
from gateway.convert.modules import (
    ObjectIds,
    add_image_basics,
    build_common,
    check_identity,
    write_part10,
)
from gateway.convert.result import ConversionError, ConvertedObject
from gateway.convert.settings import ConvertSettings
from gateway.convert.sniff import Kind, sniff_file
from gateway.convert.uids import UidFactory
from gateway.ingest.items import RawItem
from gateway.logsetup import event
from gateway.worklist.binding import HELD_NO_IDENTITY

__all__ = ["HELD_NO_IDENTITY", "Converter"]

log = logging.getLogger(__name__)

DOCUMENT_MODALITY = "DOC"  # Encapsulated Document Series: defined term for documents
_HASH_CHUNK = 1024 * 1024


class Converter:
    """Turns a RawItem into a Part 10 file: created SC / Encapsulated PDF, or DICOM as it came.

    A created object carries its binding (``item.binding``): the worklist step's patient, study
    and order, or the identity, and the binding's held reason. Its SOP Instance UID is derived
    from the source bytes, the ingest source, the file's name in it and the binding (the step's
    key, or the identity), so converting the same drop again (a resend after a crash) yields the
    same instance, while two files never share a UID, even with the same bytes and an identity
    the file names could not give (issue 10 A2: the second would have been dropped as a
    duplicate of the first, another patient's), and the same bytes bound to another step or
    patient never do either. DICOM files are
    forwarded as they came: their own attributes stand and the binding is not applied.
    """

    def __init__(self, settings: ConvertSettings, grouper: StudyGrouper, uids: UidFactory) -> None:
        self.settings = settings
        self.grouper = grouper
        self.uids = uids

    def convert(self, item: RawItem, out_path: Path) -> ConvertedObject:
        """Write ``item`` as Part 10 to ``out_path`` (the caller fsyncs and renames it)."""
        try:
            before = _signature(item.path)
            kind = sniff_file(item.path)
            if kind == "dicom":
                result = self._pass_through(item, out_path)
            else:
                result = self._create(item, kind, out_path)
            if _signature(item.path) != before:
                raise ConversionError("file changed while it was being converted")
        except BaseException:
            out_path.unlink(missing_ok=True)
            raise
        event(
            log,
            logging.DEBUG,
            "converted",
            file=item.path.name,
            kind=kind,
            sop_instance_uid=result.sop_instance_uid,
        )
        return result

    def _pass_through(self, item: RawItem, out_path: Path) -> ConvertedObject:
        # Copy first, then check the copy: what was checked is exactly what is forwarded.
        sha256 = copy_with_hash(item.path, out_path)
        facts = check_part10(out_path)
        return ConvertedObject(
            path=out_path,
            sop_class_uid=facts.sop_class_uid,
            sop_instance_uid=facts.sop_instance_uid,
            transfer_syntax_uid=facts.transfer_syntax_uid,
            study_instance_uid=facts.study_instance_uid,
            source_sha256=sha256,
            kind="dicom",
            held_reason=None,
        )

    def _create(self, item: RawItem, kind: Kind, out_path: Path) -> ConvertedObject:
        # Everything that can refuse the input runs before grouping, so a rejected file
        # neither opens a study nor takes an instance number.
        check_identity(item.identity)
        if kind == "jpeg":
            data = self._read_limited(item.path)
            info = jpeg.parse_jpeg(data)
            jpeg.check_decodes(data, info, self.settings.max_image_pixels)
            if info.upright:
                return self._create_jpeg(item, data, info, out_path)
            if info.precision != 8:
                raise ConversionError(
                    f"12-bit JPEG with EXIF Orientation {info.orientation} cannot be turned "
                    "upright (it would be shown rotated); save it upright"
                )
            # Not upright: decoded, turned and stored uncompressed like a raster file.
        if kind == "pdf":
            return self._create_pdf(item, out_path)
        return self._create_raster(item, kind, out_path)

    def _create_jpeg(
        self, item: RawItem, data: bytes, info: jpeg.JpegInfo, out_path: Path
    ) -> ConvertedObject:
        modality = self.settings.modality
        sha256 = hashlib.sha256(data).hexdigest()
        ids = self._ids(item, sha256, SecondaryCaptureImageStorage, modality)
        ds = build_common(
            self.settings, item.identity, ids, modality, item.mtime, item.binding.item
        )
        add_image_basics(ds)
        jpeg.add_jpeg_image(ds, data, info)
        return self._write(ds, out_path, info.transfer_syntax_uid, ids, item, "jpeg")

    def _create_pdf(self, item: RawItem, out_path: Path) -> ConvertedObject:
        data = self._read_limited(item.path)
        pdf.check_pdf(data)
        sha256 = hashlib.sha256(data).hexdigest()
        ids = self._ids(item, sha256, EncapsulatedPDFStorage, DOCUMENT_MODALITY)
        ds = build_common(
            self.settings, item.identity, ids, DOCUMENT_MODALITY, item.mtime, item.binding.item
        )
        pdf.add_pdf_document(ds, data)
        return self._write(ds, out_path, ExplicitVRLittleEndian, ids, item, "pdf")

    def _create_raster(self, item: RawItem, kind: Kind, out_path: Path) -> ConvertedObject:
        modality = self.settings.modality
        sha256 = _hash_file(item.path)
        scratch = out_path.parent
        with raster.decode_raster(item.path, kind, self.settings.max_image_pixels, scratch) as px:
            ids = self._ids(item, sha256, raster.raster_sop_class(px), modality)
            ds = build_common(
                self.settings, item.identity, ids, modality, item.mtime, item.binding.item
            )
            add_image_basics(ds)
            raster.add_raster_image(ds, px)
            return self._write(ds, out_path, ExplicitVRLittleEndian, ids, item, kind)

    def _write(
        self,
        ds: Dataset,
        out_path: Path,
        syntax: str,
        ids: ObjectIds,
        item: RawItem,
        kind: str,
    ) -> ConvertedObject:
        write_part10(ds, out_path, syntax, self.settings)
        return ConvertedObject(
            path=out_path,
            sop_class_uid=ids.sop_class_uid,
            sop_instance_uid=ids.sop_instance_uid,
            transfer_syntax_uid=str(syntax),
            study_instance_uid=ids.assignment.study_instance_uid,
            source_sha256=ids.source_sha256,
            kind=kind,
            held_reason=held_reason(item.binding),
        )

    def _ids(self, item: RawItem, sha256: str, sop_class_uid: str, modality: str) -> ObjectIds:
        # Grouping knows the file by what its SOP Instance UID is derived from (bytes and path).
        object_key = file_key(sha256, item.file_name)
        assignment = assign_study(
            self.grouper, item.binding, item.source, item.mtime, object_key, modality
        )
        sop_instance_uid = self.uids.derive(
            "sop", sha256, item.source, *binding_parts(item.binding), "file", item.file_name
        )
        return ObjectIds(str(sop_class_uid), sop_instance_uid, assignment, sha256)

    def _read_limited(self, path: Path) -> bytes:
        limit = self.settings.max_encapsulated_bytes
        with path.open("rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise ConversionError(f"file larger than the limit of {limit} bytes")
        return data


def _signature(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError as exc:
        raise ConversionError(f"cannot read file: {exc.strerror or exc}") from exc
    return st.st_size, st.st_mtime_ns


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
