"""The MWL benchmark's worklist and queries: generated, deterministic for a given day.

``--items`` scheduled procedure steps over today ±3 days, several modalities and station AE
titles, patients with several steps; names in ASCII, Latin-1, UTF-8 and ISO 2022 Japanese, each
step written in its own character set. The same steps go two ways, neither timed: one ``.wl``
file per step for DCMTK ``wlmscpfs``, and a WorklistCache for the gateway.
"""

from __future__ import annotations

import datetime
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian

from gateway.clock import SystemClock
from gateway.convert.uids import UidFactory
from gateway.worklist.cache import WorklistCache
from gateway.worklist.client import MODALITY_WORKLIST_FIND
from gateway.worklist.item import WorklistItem

SEED = 20240105
# The cache would expire steps of past days; the bench compares like with like, so none expire.
GRACE_HOURS = 24.0 * 8
QUERY_CHARSET = "ISO_IR 100"  # what a European modality declares

# (family name, character set of the worklist file it goes into); None: plain ASCII, no set.
FAMILIES: tuple[tuple[str, str | list[str] | None], ...] = (
    ("Smith", None),
    ("Jones", None),
    ("Martin", None),
    ("Meyer", None),
    ("Moreau", None),
    ("Mancini", None),
    ("Brown", None),
    ("Garcia", None),
    ("Rossi", None),
    ("Nowak", None),
    ("Wilson", None),
    ("Dubois", None),
    ("Schmidt", None),
    ("Fischer", None),
    ("Weber", None),
    ("Bianchi", None),
    ("Taylor", None),
    ("Andersen", None),
    ("Müller", "ISO_IR 100"),
    ("Ménard", "ISO_IR 100"),
    ("Jørgensen", "ISO_IR 100"),
    ("Groß", "ISO_IR 100"),
    ("Łukasiewicz", "ISO_IR 192"),
    ("Παπαδόπουλος", "ISO_IR 192"),
)
GIVEN = ("Anna", "Jean", "Maria", "Peter", "Zoë", "José", "Li", "Sven", "Chloé", "Omar")
JAPANESE: tuple[str, str | list[str] | None] = (
    "Yamada^Tarou=山田^太郎=やまだ^たろう",
    ["", "ISO 2022 IR 87"],
)
MODALITIES = {
    "US": ("Abdomen", "Thyroid", "Carotid"),
    "CT": ("Head", "Chest", "Abdomen"),
    "MR": ("Knee", "Brain", "Spine"),
    "CR": ("Chest PA", "Hand"),
    "DX": ("Chest", "Pelvis"),
    "XA": ("Coronary",),
}
STATIONS_PER_MODALITY = 4


@dataclass(frozen=True)
class Step:
    """One generated worklist item: its dataset and the file character set it is written in."""

    dataset: Dataset
    charset: str | list[str] | None
    accession: str
    family: str
    date: str
    modality: str
    station: str


def generate(count: int, today: datetime.date) -> list[Step]:
    """``count`` steps, the same for the same ``count`` and day."""
    rng = random.Random(SEED)
    uids = UidFactory(None)
    patients: list[tuple[str, str, str | list[str] | None, str, str]] = []
    for number in range(max(1, count * 2 // 3)):  # some patients have several steps
        if rng.random() < 0.01:
            name, charset = JAPANESE
            family = "Yamada"
        else:
            family, charset = rng.choice(FAMILIES)
            name = f"{family}^{rng.choice(GIVEN)}"
            if charset is None and not name.isascii():
                charset = "ISO_IR 100"  # a given name with an accent
        born = datetime.date(1930, 1, 1) + datetime.timedelta(days=rng.randrange(32000))
        patients.append((f"P{number:07d}", name, charset, family, f"{born:%Y%m%d}"))
    steps = []
    for index in range(count):
        pid, name, charset, family, birth = rng.choice(patients)
        modality = rng.choice(sorted(MODALITIES))
        station = f"{modality}_ROOM{rng.randint(1, STATIONS_PER_MODALITY)}"
        date = f"{today + datetime.timedelta(days=rng.randint(-3, 3)):%Y%m%d}"
        accession = f"ACC{index:07d}"
        ds = Dataset()
        ds.PatientName = name
        ds.PatientID = pid
        ds.IssuerOfPatientID = "HOSP"
        ds.PatientBirthDate = birth
        ds.PatientSex = rng.choice("MF")
        ds.AccessionNumber = accession
        ds.ReferringPhysicianName = "Ref^Doctor"
        ds.StudyInstanceUID = uids.derive("bench-mwl", "study", str(index))
        ds.RequestedProcedureID = f"RP{index:07d}"
        ds.RequestedProcedureDescription = f"{modality} {rng.choice(MODALITIES[modality])}"
        step = Dataset()
        step.ScheduledStationAETitle = station
        step.ScheduledProcedureStepStartDate = date
        step.ScheduledProcedureStepStartTime = (
            f"{rng.randint(7, 18):02d}{rng.randrange(0, 60, 15):02d}00"
        )
        step.Modality = modality
        step.ScheduledPerformingPhysicianName = "Perf^Doctor"
        step.ScheduledProcedureStepDescription = ds.RequestedProcedureDescription
        step.ScheduledProcedureStepID = f"SPS{index:07d}"
        ds.ScheduledProcedureStepSequence = DicomSequence([step])
        steps.append(Step(ds, charset, accession, family, date, modality, station))
    return steps


def write_wl_files(steps: Sequence[Step], folder: Path) -> None:
    """One DICOM worklist file per step, text encoded in the step's character set."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lockfile").touch()  # wlmscpfs refuses an AE title folder without it
    for step in steps:
        out = Dataset()
        out.update(step.dataset)
        if step.charset is not None:
            out.SpecificCharacterSet = step.charset
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MODALITY_WORKLIST_FIND
        meta.MediaStorageSOPInstanceUID = step.dataset.StudyInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        out.file_meta = meta
        out.save_as(folder / f"{step.accession}.wl", enforce_file_format=True)


def fill_cache(steps: Sequence[Step], path: Path) -> None:
    """Make the steps the whole content of a WorklistCache database at ``path``."""
    cache = WorklistCache(path, SystemClock(), GRACE_HOURS)
    cache.open()
    try:
        cache.replace([WorklistItem.from_dataset(s.dataset) for s in steps], time.time())
    finally:
        cache.close()


# -- query shapes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """A query the modality sends, and which generated steps it must find."""

    name: str
    description: str
    query: Dataset
    expected: frozenset[str]  # accession numbers


def _query(name: str, date: str, modality: str, station: str, patient_id: str = "") -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = QUERY_CHARSET
    for keyword in (
        "PatientID",
        "IssuerOfPatientID",
        "PatientBirthDate",
        "PatientSex",
        "AccessionNumber",
        "ReferringPhysicianName",
        "StudyInstanceUID",
        "RequestedProcedureID",
        "RequestedProcedureDescription",
    ):
        setattr(ds, keyword, "")
    ds.PatientName = name
    ds.PatientID = patient_id
    step = Dataset()
    step.ScheduledStationAETitle = station
    step.ScheduledProcedureStepStartDate = date
    step.ScheduledProcedureStepStartTime = ""
    step.Modality = modality
    step.ScheduledPerformingPhysicianName = ""
    step.ScheduledProcedureStepDescription = ""
    step.ScheduledProcedureStepID = ""
    ds.ScheduledProcedureStepSequence = DicomSequence([step])
    return ds


def shapes(steps: Sequence[Step], today: datetime.date) -> list[Shape]:
    """The query shapes, with the accession numbers each must return."""
    date = f"{today:%Y%m%d}"
    modality, station = "US", "US_ROOM1"
    by_station = frozenset(
        s.accession
        for s in steps
        if s.date == date and s.modality == modality and s.station == station
    )
    # Every generated family name starts with a capital letter, so "M*" means the same
    # to a case-sensitive matcher (wlmscpfs) and a case-insensitive one (the gateway, for PN).
    by_name = frozenset(
        s.accession
        for s in steps
        if s.date == date and s.modality == modality and s.family[0] == "M"
    )
    # A scanned wristband: one patient, no date, so no index helps the gateway here.
    patient = str(min(steps, key=lambda s: s.accession).dataset.PatientID)
    by_patient = frozenset(s.accession for s in steps if s.dataset.PatientID == patient)
    keys = "10 keys and 7 in the step sequence"
    return [
        Shape(
            "station",
            f"date {date}, modality {modality}, station {station}; {keys}",
            _query("", date, modality, station),
            by_station,
        ),
        Shape(
            "name",
            f'patient name "M*", date {date}, modality {modality}; {keys}',
            _query("M*", date, modality, ""),
            by_name,
        ),
        Shape(
            "patient",
            f"patient ID {patient}, any date, modality or station; {keys}",
            _query("", "", "", "", patient),
            by_patient,
        ),
    ]
