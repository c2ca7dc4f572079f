"""What an error of python-tuf's metadata refresh means: refused (and why), or try again later.

A compromised mirror must never pass for a network outage: "try later" is for a repository that
could not be read at all, and anything the repository *sent* that does not verify is refused.
The first row whose class the error is an instance of decides (subclasses come first)::

    python-tuf raises                 kind         the box does
    ExpiredMetadataError              expired      refuse (exit 1, audited "refused")
    BadVersionNumberError             replayed     refuse: older than what this box trusts
      (EqualVersionNumberError too)                 (python-tuf handles the harmless case)
    UnsignedMetadataError             tampered     refuse: the signature does not verify
    LengthOrHashMismatchError         tampered     refuse: not the signed length or hash
    DownloadLengthMismatchError       tampered     refuse: longer than signed (or than the
                                                   bound for a role with no signed length)
    DeserializationError              tampered     refuse: the bytes sent are not metadata
    RepositoryError (any other)       invalid      refuse: signed, but not a consistent
                                                   repository (a role missing from snapshot)
    DownloadError (HTTP status,       unreachable  try later (exit 75; 0 from the timer)
      slow or cut transfer, ...)

Anything else is not a verdict on the repository and is not classified here.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuf.api import exceptions as tuf_errors
from tuf.api.serialization import DeserializationError

TAMPERED = "tampered"
REPLAYED = "replayed"
EXPIRED = "expired"
INVALID = "invalid"
UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class MetadataVerdict:
    """How to treat one refresh error: ``kind`` (a constant above) and the reason to report."""

    kind: str
    reason: str

    @property
    def refused(self) -> bool:
        """The repository sent something that does not verify: alert a human, install nothing."""
        return self.kind != UNREACHABLE


# (class, kind, what the reason says before python-tuf's own message), first match wins.
_RULES: tuple[tuple[type[Exception], str, str], ...] = (
    (tuf_errors.ExpiredMetadataError, EXPIRED, "metadata has expired"),
    (tuf_errors.BadVersionNumberError, REPLAYED, "metadata older than this box already trusts"),
    (tuf_errors.UnsignedMetadataError, TAMPERED, "signature does not verify"),
    (tuf_errors.LengthOrHashMismatchError, TAMPERED, "metadata does not match"),
    (tuf_errors.DownloadLengthMismatchError, TAMPERED, "metadata longer than signed or allowed"),
    (DeserializationError, TAMPERED, "metadata does not parse"),
    (tuf_errors.RepositoryError, INVALID, "inconsistent repository"),
    (tuf_errors.DownloadError, UNREACHABLE, "repository not read"),
)


def classify_refresh_error(exc: Exception) -> MetadataVerdict | None:
    """The verdict on an error raised by ``Updater.refresh()``; None when it is not python-tuf's."""
    for cls, kind, what in _RULES:
        if isinstance(exc, cls):
            return MetadataVerdict(kind, f"{what} ({exc})")
    return None
