"""Patient identity from a dropped file's name, through the source's filename_pattern.

A value is taken only when it is a valid DICOM value as it stands: surrounding spaces are
stripped and the text normalised to Unicode NFC (a name typed on a Mac arrives decomposed),
nothing else; an empty value is unknown (None). A value that is too long, holds a control or
invisible format character or a backslash (the DICOM value separator) is not cut to fit: the
whole identity is then unknown, because a truncated ID may be another patient's and a held
object is better than a misfiled one.
"""

from __future__ import annotations

import re
import unicodedata

from gateway.identity import PatientIdentity

LO_MAX = 64  # Patient ID (0010,0020) is LO
SH_MAX = 16  # Accession Number (0008,0050) is SH
PN_GROUP_MAX = 64  # each component group of a PN value
PN_COMPONENTS = 5  # family^given^middle^prefix^suffix
PN_GROUPS = 3  # alphabetic=ideographic=phonetic


def identity_from_filename(pattern: re.Pattern[str] | None, filename: str) -> PatientIdentity:
    """The identity the pattern finds in ``filename``; unknown when absent or not valid DICOM."""
    if pattern is None:
        return PatientIdentity()
    match = pattern.search(filename)
    if match is None:
        return PatientIdentity()
    groups = match.groupdict()
    patient_id = clean_value(groups.get("patient_id"))
    patient_name = clean_value(groups.get("patient_name"))
    accession = clean_value(groups.get("accession_number"))
    valid = (
        (patient_id is None or valid_text(patient_id, LO_MAX))
        and (patient_name is None or valid_person_name(patient_name))
        and (accession is None or valid_text(accession, SH_MAX))
    )
    if not valid:
        return PatientIdentity()
    return PatientIdentity(
        patient_id=patient_id, patient_name=patient_name, accession_number=accession
    )


def clean_value(value: str | None) -> str | None:
    if value is None:
        return None
    value = unicodedata.normalize("NFC", value)
    start, end = 0, len(value)
    # Only spaces are trimmed: a tab or newline at the edge is a control character, so the value
    # is refused below rather than quietly repaired.
    while start < end and unicodedata.category(value[start]) == "Zs":
        start += 1
    while end > start and unicodedata.category(value[end - 1]) == "Zs":
        end -= 1
    return value[start:end] or None


def valid_text(value: str, max_chars: int) -> bool:
    """An LO/SH value: at most ``max_chars``, no backslash, no control or format characters."""
    return len(value) <= max_chars and "\\" not in value and not any(_unseen(c) for c in value)


def valid_person_name(value: str) -> bool:
    """A PN value as given ('^' between components): DICOM's group and component limits."""
    groups = value.split("=")
    return len(groups) <= PN_GROUPS and all(
        valid_text(group, PN_GROUP_MAX) and group.count("^") < PN_COMPONENTS for group in groups
    )


def _unseen(char: str) -> bool:
    # Cc controls, Cf format (zero-width, bidi overrides), Cs/Co/Cn: nothing a person types.
    return unicodedata.category(char).startswith("C")
