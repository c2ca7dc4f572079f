"""Free text (a print job or report) as a Basic Text SR (PS3.3 A.35.1), when a profile asks.

    CONTAINER (profile's document title), SEPARATE
      HAS OBS CONTEXT  device observer and subject class Patient (as in gateway.convert.sr)
      CONTAINS TEXT    Comment: one item per printed page (form feeds split pages)

A page is kept whole, line breaks as CR LF, so the SR reads like the printout; the PDF next to
it shows the layout.
"""

from __future__ import annotations

from collections.abc import Iterable

import highdicom as hd
from pydicom.dataset import Dataset

from gateway.convert.sr import COMMENT, clean_text

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def pages(text: str) -> list[str]:
    """The non-blank pages of ``text`` (split at form feeds), cleaned for a UT value."""
    cleaned = (clean_text(page) for page in text.split("\f"))
    return [page for page in cleaned if page.strip()]


def page_items(text: str) -> list[hd.sr.ContentItem]:
    """One Comment TEXT item per non-blank page."""
    return [
        hd.sr.TextContentItem(
            COMMENT, page, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
        )
        for page in pages(text)
    ]


def text_report_children(context: Iterable[Dataset], text: str) -> list[Dataset]:
    """Observation context first, then the pages (PS3.3 C.17.3: context precedes content)."""
    return [*context, *page_items(text)]
