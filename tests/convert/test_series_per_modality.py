"""A series holds one modality: every pair of kinds the gateway creates, through the converters.

The kinds: Secondary Capture from JPEG, PNG, BMP and TIFF (the configured modality, OT here),
Encapsulated PDF from a dropped PDF (DOC), and from one serial port the measurement SR (SR), a
text report's PDF (DOC) and its Basic Text SR (SR). Objects of one patient from one source
share a study; bound to one worklist step, objects of every source share the step's study. In
both cases a series holds the objects of one source and one modality, and only those.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset

from gateway.convert.converter import Converter
from gateway.convert.grouping import StudyGrouper
from gateway.convert.serialconv import SerialConverter
from gateway.convert.settings import ConvertSettings
from gateway.convert.uids import UidFactory
from gateway.ingest.serial.message import DeviceMessage
from gateway.ingest.serial.profile import DeviceProfile, LineKvProtocol, OutputSpec
from gateway.worklist.binding import Binding
from tests.convert.builders import gradient_rgb, minimal_pdf, noise
from tests.convert.conftest import IDENTITY, MTIME, ItemFactory, Staging
from tests.convert.test_serialconv import LAB_TITLE, STEP, bound, measurements, print_job

FILE_KINDS = ("jpeg", "png", "bmp", "tiff", "pdf")
SERIAL_KINDS = ("measurement-sr", "text-pdf", "text-sr")
PORT = "lab1"  # measurements() comes from this port; the text reports are sent from it too


@dataclass
class Maker:
    """Creates one object of a kind, unbound or bound to STEP, and returns its dataset."""

    tmp_path: Path
    converter: Converter
    make_item: ItemFactory
    serial: Callable[[DeviceProfile], SerialConverter]
    staging: Staging
    bind: bool

    def __call__(self, kind: str, seed: int) -> Dataset:
        if kind in FILE_KINDS:
            return self._file(kind, seed)
        return self._serial(kind, seed)

    def _file(self, kind: str, seed: int) -> Dataset:
        path = self.tmp_path / f"{kind}-{seed}.{ {'jpeg': 'jpg', 'tiff': 'tif'}.get(kind, kind) }"
        if kind == "pdf":
            path.write_bytes(minimal_pdf(text_pages=seed + 1))
        elif kind == "jpeg":
            gradient_rgb(60 + seed, 80).save(path, format="JPEG")
        else:
            Image.fromarray(noise((20, 30, 3), seed=seed)).save(path)
        binding = bound() if self.bind else None
        item = self.make_item(path, mtime=MTIME + 60 * seed, binding=binding)
        out = self.staging()
        self.converter.convert(item, out)
        return pydicom.dcmread(out)

    def _serial(self, kind: str, seed: int) -> Dataset:
        output = OutputSpec(
            document_title=LAB_TITLE, text_pdf=kind == "text-pdf", text_sr=kind == "text-sr"
        )
        profile = DeviceProfile(name="kv", link=LineKvProtocol(protocol="line-kv"), output=output)
        if kind == "measurement-sr":
            message = measurements(identity=IDENTITY, raw=b"R|%d|GLU|98\r" % seed)
        else:
            job = print_job(identity=IDENTITY, text=f"report {seed}\n")
            message = DeviceMessage(
                source=PORT,
                kind=job.kind,
                identity=job.identity,
                received_at=job.received_at,
                text=job.text,
                title=job.title,
                raw=job.raw,
            )
        binding = bound() if self.bind else Binding.from_identity(message.identity)
        (obj,) = self.serial(profile).convert(message, binding, self.staging)
        return pydicom.dcmread(obj.path)


@pytest.fixture
def maker(
    tmp_path: Path,
    converter: Converter,
    make_item: ItemFactory,
    settings: ConvertSettings,
    grouper: StudyGrouper,
    uids: UidFactory,
    staging: Staging,
) -> Callable[[bool], Maker]:
    def build(bind: bool) -> Maker:
        def serial(profile: DeviceProfile) -> SerialConverter:
            return SerialConverter(settings, grouper, uids, profile)

        return Maker(tmp_path, converter, make_item, serial, staging, bind)

    return build


def source_of(kind: str) -> str:
    return PORT if kind in SERIAL_KINDS else "scope"


def assert_one_modality_per_series(datasets: list[Dataset]) -> None:
    """Every rule of series membership, over objects known to share one study."""
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    assert len({ds.StudyID for ds in datasets}) == 1
    assert len({(ds.StudyDate, ds.StudyTime) for ds in datasets}) == 1
    by_series: dict[str, list[Dataset]] = {}
    for ds in datasets:
        by_series.setdefault(ds.SeriesInstanceUID, []).append(ds)
    for members in by_series.values():
        assert len({ds.Modality for ds in members}) == 1, [ds.Modality for ds in members]
        assert len({ds.SeriesNumber for ds in members}) == 1
        numbers = sorted(int(ds.InstanceNumber) for ds in members)
        assert numbers == list(range(1, len(members) + 1))
    numbers = [members[0].SeriesNumber for members in by_series.values()]
    assert len(set(numbers)) == len(numbers)  # distinct series, distinct numbers


UNBOUND_PAIRS = [
    *itertools.combinations_with_replacement(FILE_KINDS, 2),
    *itertools.combinations_with_replacement(SERIAL_KINDS, 2),
]


@pytest.mark.parametrize(("first", "second"), UNBOUND_PAIRS, ids="+".join)
def test_two_kinds_of_one_patient_and_source_share_the_study_and_a_series_only_by_modality(
    first: str, second: str, maker: Callable[[bool], Maker]
) -> None:
    make = maker(False)
    a, b = make(first, 0), make(second, 1)
    assert_one_modality_per_series([a, b])
    assert (a.SeriesInstanceUID == b.SeriesInstanceUID) == (a.Modality == b.Modality)


BOUND_KINDS = FILE_KINDS + SERIAL_KINDS


@pytest.mark.parametrize(
    ("first", "second"), list(itertools.combinations_with_replacement(BOUND_KINDS, 2)), ids="+".join
)
def test_two_kinds_bound_to_one_step_share_its_study_and_a_series_only_by_source_and_modality(
    first: str, second: str, maker: Callable[[bool], Maker]
) -> None:
    make = maker(True)
    a, b = make(first, 0), make(second, 1)
    assert a.StudyInstanceUID == STEP.study_instance_uid
    assert_one_modality_per_series([a, b])
    same_series = (source_of(first), a.Modality) == (source_of(second), b.Modality)
    assert (a.SeriesInstanceUID == b.SeriesInstanceUID) == same_series


def test_every_kind_of_one_step_in_one_study(maker: Callable[[bool], Maker]) -> None:
    make = maker(True)
    datasets = [make(kind, seed) for seed, kind in enumerate(BOUND_KINDS)]
    assert_one_modality_per_series(datasets)
    series = {
        (source_of(k), ds.Modality): ds.SeriesInstanceUID
        for k, ds in zip(BOUND_KINDS, datasets, strict=True)
    }
    # Four series: the folder's SC images, the folder's PDF, the port's SRs, the port's PDF.
    assert sorted(series) == [("lab1", "DOC"), ("lab1", "SR"), ("scope", "DOC"), ("scope", "OT")]
    assert len(set(series.values())) == 4
    assert sorted({int(ds.SeriesNumber) for ds in datasets}) == [1, 2, 3, 4]
