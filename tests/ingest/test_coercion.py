"""The listener's coercion hook on pydicom's own CT_small.dcm, against an in-memory worklist.

The whole path (storescu -> listener -> queue -> storescp) is in
tests/test_daemon_worklist_conflicts.py; here every key combination a received object can carry.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from gateway.ingest.coercion import CARRIER, WorklistCoercion
from gateway.worklist.binding import DETAIL_MARK, Binder
from tests.worklist.factory import make_item
from tests.worklist.test_binding import FakeLookup

JANE_US = make_item(patient_id="P-JANE", accession_number="ACC1", step_id="S1")
JANE_CT = make_item(
    patient_id="P-JANE", accession_number="ACC2", step_id="S2", study_instance_uid="1.2.3.2"
)
JOHN = make_item(
    patient_id="P-JOHN", accession_number="ACC3", step_id="S3", study_instance_uid="1.2.3.3"
)


def received(tmp_path: Path, **keys: str) -> Path:
    source = get_testdata_file("CT_small.dcm")
    assert isinstance(source, str)
    ds = pydicom.dcmread(source)
    for keyword in ("AccessionNumber", "PatientID"):
        if keyword in ds:
            del ds[keyword]
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    path = tmp_path / "received.dcm"
    ds.save_as(path)
    return path


def coerce(tmp_path: Path, **keys: str) -> tuple[Path, Path, str | None, bool]:
    """(source, target, held reason, coerced) for a received object carrying ``keys``."""
    src, dst = received(tmp_path, **keys), tmp_path / "coerced.dcm"
    hook = WorklistCoercion(Binder(FakeLookup([JANE_US, JANE_CT, JOHN]), None, False))
    result = hook(src, dst)
    if result is None:
        return src, dst, None, False
    return src, dst, result.held_reason, result.path == dst


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        # accession of Jane's step, patient ID of John (who has a step) / of nobody
        (
            {"AccessionNumber": "ACC1", "PatientID": "P-JOHN"},
            "accession number ACC1 is scheduled for patient ID P-JANE; the received object"
            " says patient ID P-JOHN, scheduled for accession number ACC3",
        ),
        (
            {"AccessionNumber": "ACC3", "PatientID": "P-NEW"},
            "accession number ACC3 is scheduled for patient ID P-JOHN; the received object"
            " says patient ID P-NEW, who has no scheduled step",
        ),
    ],
)
def test_keys_naming_two_patients_hold_the_object_as_received(
    tmp_path: Path, keys: dict[str, str], expected: str
) -> None:
    before = received(tmp_path, **keys).read_bytes()
    src, dst, reason, coerced = coerce(tmp_path, **keys)
    assert reason == (
        f"conflict: the {CARRIER}'s accession number is scheduled for another patient"
        + DETAIL_MARK
        + expected
    )
    assert not coerced and not dst.exists()  # held as received: nothing rewritten
    assert src.read_bytes() == before


def test_several_steps_of_one_patient_hold_the_object(tmp_path: Path) -> None:
    _src, _dst, reason, coerced = coerce(tmp_path, PatientID="P-JANE")
    assert reason is not None and reason.startswith("ambiguous: 2 scheduled steps")
    assert not coerced


@pytest.mark.parametrize(
    "keys",
    [
        {"AccessionNumber": "ACC2"},
        {"PatientID": "P-JOHN"},
        {"AccessionNumber": "ACC2", "PatientID": "P-JANE"},  # the accession picks Jane's step
    ],
)
def test_keys_naming_one_step_coerce_the_object(tmp_path: Path, keys: dict[str, str]) -> None:
    _src, dst, reason, coerced = coerce(tmp_path, **keys)
    assert (reason, coerced) == (None, True)
    ds = pydicom.dcmread(dst)
    assert ds.OriginalAttributesSequence[0].ReasonForTheAttributeModification == "COERCE"
    assert ds.PatientID == ("P-JOHN" if keys.get("PatientID") == "P-JOHN" else "P-JANE")


@pytest.mark.parametrize(
    "keys",
    [
        {},
        {"AccessionNumber": "ACC9"},
        {"PatientID": "P-NEW"},
        {"AccessionNumber": "ACC9", "PatientID": "P-JOHN"},  # never John's other order
    ],
)
def test_keys_naming_no_step_leave_the_object_as_it_came(
    tmp_path: Path, keys: dict[str, str]
) -> None:
    _src, dst, reason, coerced = coerce(tmp_path, **keys)
    assert (reason, coerced, dst.exists()) == (None, False, False)
