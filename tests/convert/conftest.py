"""Fixtures for the conversion tests: settings, a grouper on tmp_path, a converter."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.convert.converter import Converter
from gateway.convert.grouping import StudyGrouper
from gateway.convert.settings import ConvertSettings
from gateway.convert.uids import UidFactory
from gateway.identity import PatientIdentity
from gateway.ingest.items import RawItem
from gateway.worklist.binding import Binding

IDENTITY = PatientIdentity(patient_id="PID-0001", patient_name="Doe^Jane", accession_number="A1")
MTIME = 1_767_000_000.0  # a fixed acquisition time: outputs must not depend on "now"


def make_settings(**changes: object) -> ConvertSettings:
    values: dict[str, object] = {
        "ae_title": "EDGE_GW",
        "uid_root": "1.2.826.0.1.3680043.10.999",
        "institution_name": "Clinic",
        "station_name": "US1",
        "modality": "OT",
        "manufacturer": "Acme",
        "model_name": "Scope 9",
        "device_serial_number": "SN-77",
        "software_versions": "4.2",
        "study_window_seconds": 1800.0,
    }
    values.update(changes)
    return ConvertSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings() -> ConvertSettings:
    return make_settings()


@pytest.fixture
def uids(settings: ConvertSettings) -> UidFactory:
    return UidFactory(settings.uid_root)


@pytest.fixture
def grouper(tmp_path: Path, settings: ConvertSettings, uids: UidFactory) -> Iterator[StudyGrouper]:
    g = StudyGrouper(tmp_path / "grouping.sqlite", settings.study_window_seconds, uids)
    g.open()
    yield g
    g.close()


@pytest.fixture
def converter(settings: ConvertSettings, grouper: StudyGrouper, uids: UidFactory) -> Converter:
    return Converter(settings, grouper, uids)


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    path = tmp_path / "staging"
    path.mkdir()
    return path


ItemFactory = Callable[..., RawItem]
Staging = Callable[[], Path]


@pytest.fixture
def staging(out_dir: Path) -> Staging:
    """Fresh output paths in the staging folder, as the spool hands them to a converter."""
    counter = itertools.count()
    return lambda: out_dir / f"{next(counter)}.dcm"


@pytest.fixture
def make_item() -> ItemFactory:
    """RawItem for a file, with a fixed mtime and a known identity unless told otherwise.

    ``binding`` replaces the identity's (no-worklist) binding, e.g. one to a worklist step.
    """

    def build(
        path: Path,
        identity: PatientIdentity = IDENTITY,
        mtime: float = MTIME,
        source: str = "scope",
        binding: Binding | None = None,
    ) -> RawItem:
        return RawItem(
            path=path,
            source=source,
            size=path.stat().st_size,
            mtime=mtime,
            binding=binding if binding is not None else Binding.from_identity(identity),
        )

    return build
