"""Patient identity from a dropped file's name, through the source's filename_pattern.

A value is taken only when it is a valid DICOM value as it stands: surrounding spaces are
stripped and the text normalised to Unicode NFC (a name typed on a Mac arrives decomposed),
nothing else; an empty value is unknown (None). A value that is too long, holds a control or
invisible format character or a backslash (the DICOM value separator) is not cut to fit: the
whole identity is then unknown, because a truncated ID may be another patient's and a held
object is better than a misfiled one.

What was wrong is not thrown away: :func:`read_filename_identity` says, per field, why a value
was refused ("patient name from file name is 70 characters, DICOM allows 64"), and which values
were valid in themselves (the hint). The hint is never bound or written into the object; it is
shown to the operator beside the hold reason, and the operator's worklist candidates are looked
up by its patient ID and accession number (docs/reconciliation.md). A file name that is not
UTF-8 (Python decodes it with surrogate escapes) holds no valid value, since an undecodable
byte is a character nobody typed; its problems say so.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from gateway.identity import PatientIdentity

LO_MAX = 64  # Patient ID (0010,0020) is LO
SH_MAX = 16  # Accession Number (0008,0050) is SH
PN_GROUP_MAX = 64  # each component group of a PN value
PN_COMPONENTS = 5  # family^given^middle^prefix^suffix
PN_GROUPS = 3  # alphabetic=ideographic=phonetic


_FIELDS = (
    ("patient_id", "patient ID", LO_MAX),
    ("patient_name", "patient name", PN_GROUP_MAX),
    ("accession_number", "accession number", SH_MAX),
)


@dataclass(frozen=True)
class FilenameIdentity:
    """What a file name says about the patient: the usable identity, or why there is none.

    ``identity`` is empty whenever a ``problem`` was found (one bad value makes the whole
    identity unusable). ``hint`` then holds the values that were valid on their own, for the
    operator only; it is empty when the identity is usable (the identity says it all).
    """

    identity: PatientIdentity
    hint: PatientIdentity = field(default_factory=PatientIdentity)
    problems: tuple[str, ...] = ()

    @property
    def note(self) -> str | None:
        """The problems as one line for hold reasons, or None; it holds no patient data.

        Only lengths and kinds of characters are named, never a value, since hold reasons are
        logged; the hint's values go to the operator views only.
        """
        return "; ".join(self.problems) if self.problems else None


def identity_from_filename(pattern: re.Pattern[str] | None, filename: str) -> PatientIdentity:
    """The identity the pattern finds in ``filename``; unknown when absent or not valid DICOM."""
    return read_filename_identity(pattern, filename).identity


def read_filename_identity(pattern: re.Pattern[str] | None, filename: str) -> FilenameIdentity:
    """The identity the pattern finds in ``filename``, with what was wrong in it, if anything."""
    if pattern is None:
        return FilenameIdentity(PatientIdentity())
    match = pattern.search(filename)
    if match is None:
        return FilenameIdentity(PatientIdentity())
    groups = match.groupdict()
    values: dict[str, str | None] = {}
    problems: list[str] = []
    for key, label, _ in _FIELDS:
        value = clean_value(groups.get(key))
        problem = None if value is None else value_problem(key, value)
        if problem is not None:
            problems.append(f"{label} from file name {problem}")
            value = None
        values[key] = value
    found = PatientIdentity(
        patient_id=values["patient_id"],
        patient_name=values["patient_name"],
        accession_number=values["accession_number"],
    )
    if problems:
        return FilenameIdentity(PatientIdentity(), hint=found, problems=tuple(problems))
    return FilenameIdentity(found)


def value_problem(key: str, value: str) -> str | None:
    """Why ``value`` cannot be the DICOM value of field ``key`` (None: it can), as a clause."""
    if key == "patient_name":
        groups = value.split("=")
        if len(groups) > PN_GROUPS:
            return f"has {len(groups)} component groups, DICOM allows {PN_GROUPS}"
        for group in groups:
            if group.count("^") >= PN_COMPONENTS:
                return f"has {group.count('^') + 1} components, DICOM allows {PN_COMPONENTS}"
            problem = text_problem(group, PN_GROUP_MAX)
            if problem is not None:
                return problem
        return None
    limit = LO_MAX if key == "patient_id" else SH_MAX
    return text_problem(value, limit)


def text_problem(value: str, max_chars: int) -> str | None:
    """Why ``value`` is not an LO/SH value of at most ``max_chars`` (None: it is one)."""
    if any(0xDC80 <= ord(c) <= 0xDCFF for c in value):
        return "holds bytes that are not UTF-8"  # os.fsdecode's surrogate escapes
    if len(value) > max_chars:
        return f"is {len(value)} characters, DICOM allows {max_chars}"
    if "\\" in value:
        return "holds a backslash (the DICOM value separator)"
    if any(_unseen(c) for c in value):
        return "holds a control or invisible character"
    return None


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
    return text_problem(value, max_chars) is None


def valid_person_name(value: str) -> bool:
    """A PN value as given ('^' between components): DICOM's group and component limits."""
    return value_problem("patient_name", value) is None


def _unseen(char: str) -> bool:
    # Cc controls, Cf format (zero-width, bidi overrides), Cs/Co/Cn: nothing a person types.
    return unicodedata.category(char).startswith("C")
