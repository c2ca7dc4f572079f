"""MwlService: the gateway's Modality Worklist C-FIND SCP handler (live from the RIS, else cache).

For each query from the modality:

1. If a RIS client is configured and the RIS has not failed in the last ``live_retry_seconds``,
   the query is passed on live, bounded by ``live_timeout``; its matches are returned.
2. Otherwise (no client, RIS down, too slow, failure status, undecodable answer) the query is
   answered from the cache with :mod:`gateway.worklist.matching`: the modality sees no outage.
   A query whose step start date is one plain date reads only that day's records (an index
   kept per cache generation): the same answers as matching every record, at a fraction of it.
   So does a query for one exact Patient ID (a scanned wristband), from a Patient ID index.
   A response is built and encoded once per record, query shape (requested keys, sequence
   values), character set and transfer syntax, then sent as those bytes
   (:mod:`gateway.listener.tuning`): a modality asks the same shape all day.

Responses carry exactly the requested keys. Specific Character Set of a response: the set the
query declared when every value of that response encodes in it; otherwise ISO_IR 192 (UTF-8);
a query that declared none gets no Specific Character Set while the response is plain ASCII
(the default repertoire, PS3.3 C.12.1.1.2), ISO_IR 192 as soon as it is not.

Statuses: 0xFF00 per match, 0x0000 at the end, 0xFE00 once the modality cancels; a query that
is not shaped like an MWL query gets 0xA900, one that cannot be decoded 0xC000 (with an Error
Comment that never holds patient data). The handler never raises.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydicom.charset import python_encoding
from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode as encode_dataset

from gateway.clock import Clock, SystemClock
from gateway.listener.tuning import EncodedIdentifier
from gateway.logsetup import event as log_event
from gateway.worklist.cache import CacheSnapshot
from gateway.worklist.charset import (
    TEXT_VRS,
    UndecodableError,
    decode_identifier,
    parse_character_set,
)
from gateway.worklist.client import MODALITY_WORKLIST_FIND, WorklistUnavailable
from gateway.worklist.matching import (
    Query,
    QueryError,
    Record,
    build_response,
    compile_query,
    exact_patient_id,
    exact_step_date,
    patient_ids,
    record_from_json,
    response_from_record,
    response_shape,
    step_dates,
)

PENDING = 0xFF00
SUCCESS = 0x0000
CANCEL = 0xFE00
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000
SOP_CLASS_NOT_SUPPORTED = 0x0122
UTF8 = "ISO_IR 192"
_RETRIEVE_ONLY = ("QueryRetrieveLevel",)
_DEFAULT_TERMS = frozenset({"", "ISO_IR 6", "ISO 2022 IR 6"})
MAX_RESPONSE_SHAPES = 8  # encoded answers kept for this many query shapes (a site has a few)

Encoding = tuple[bool, bool]  # (implicit VR, little endian)
# Encoded responses of one query shape: item key -> (the record they were built from, the
# response). The response is kept whole, not only its bytes: decoding the bytes again for every
# answer cost more than anything else on the way out. Nothing changes a response once built.
_Encoded = dict[str, tuple["Record", EncodedIdentifier]]


class LiveWorklist(Protocol):
    """What MwlService needs of a WorklistClient."""

    def query(self, identifier: Dataset, deadline: float | None = None) -> list[Dataset]: ...


class CachedWorklist(Protocol):
    """What MwlService needs of a WorklistCache."""

    def snapshot(self) -> CacheSnapshot: ...


@dataclass(frozen=True)
class _Prepared:
    key: str
    expires_at: float
    dataset_json: str
    record: Record


class MwlService:
    """pynetdicom EVT_C_FIND handler for Modality Worklist Information Model - FIND."""

    def __init__(
        self,
        cache: CachedWorklist,
        client: LiveWorklist | None,
        live_timeout: float,
        logger: logging.Logger,
        *,
        live_retry_seconds: float = 30.0,
        query_charset_fallback: str = "ISO_IR 100",
        clock: Clock | None = None,
    ) -> None:
        self._cache = cache
        self._client = client
        self._live_timeout = live_timeout
        self._log = logger
        self._live_retry = live_retry_seconds
        self._fallback = query_charset_fallback
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._lock = threading.Lock()
        self._generation: int | None = None
        self._prepared: dict[str, _Prepared] = {}
        # Records by step start date: a modality's query names one day, so it reads that day's
        # records instead of the whole cache.
        self._by_date: dict[str, list[_Prepared]] = {}
        self._by_patient: dict[str, list[_Prepared]] = {}  # a scanned wristband's query
        self._encoded: dict[tuple[Any, ...], _Encoded] = {}
        self._live_failed_at: float | None = None

    def handle_find(self, event: Any) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        """Answer one C-FIND request; yields (status, identifier) pairs as pynetdicom expects."""
        try:
            yield from self._answer(event)
        except Exception as exc:  # noqa: BLE001 - the listener must survive any query
            log_event(self._log, logging.ERROR, "mwl query failed", error=type(exc).__name__)
            yield _failure(UNABLE_TO_PROCESS, "internal error while answering the query"), None

    def _answer(self, event: Any) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        calling = _calling_ae(event)
        sop_class = str(getattr(event.request, "AffectedSOPClassUID", "") or "")
        if sop_class and sop_class != MODALITY_WORKLIST_FIND:
            yield _failure(SOP_CLASS_NOT_SUPPORTED, "only Modality Worklist FIND"), None
            return
        try:
            raw = event.identifier
            terms = _declared_terms(raw)
            query = decode_identifier(raw, self._fallback)
        except (UndecodableError, ValueError, KeyError, TypeError) as exc:
            reason = str(exc) if isinstance(exc, UndecodableError) else "identifier not decodable"
            yield _failure(UNABLE_TO_PROCESS, _ascii(reason)), None
            return
        if any(keyword in raw for keyword in _RETRIEVE_ONLY):
            yield _failure(IDENTIFIER_DOES_NOT_MATCH, "Query/Retrieve identifier, not MWL"), None
            return
        try:
            compiled = compile_query(query)
        except QueryError as exc:
            yield _failure(IDENTIFIER_DOES_NOT_MATCH, _ascii(str(exc))), None
            return

        started = time.monotonic()
        source, live = self._live(query, terms)
        responses: Iterable[Dataset]
        if live is None:
            matched = self._matching(compiled, exact_step_date(query), exact_patient_id(query))
            responses = self._from_cache(query, compiled, terms, matched, _encoding(event))
        else:
            responses = _with_character_set(live, terms)
        count = 0
        for response in responses:
            if event.is_cancelled:
                log_event(self._log, logging.INFO, "mwl query cancelled", calling_ae=calling)
                yield CANCEL, None
                return
            count += 1
            yield PENDING, response
        log_event(
            self._log,
            logging.INFO,
            "mwl query answered",
            source=source,
            matches=count,
            calling_ae=calling,
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        yield SUCCESS, None

    def _live(
        self, query: Dataset, terms: list[str] | None
    ) -> tuple[str, Sequence[Dataset] | None]:
        if self._client is None:
            return "cache", None
        with self._lock:
            failed_at = self._live_failed_at
        if failed_at is not None and time.monotonic() - failed_at < self._live_retry:
            return "cache", None
        to_ris = Dataset()
        to_ris.update(query)
        _set_character_set(to_ris, terms)
        try:
            results = self._client.query(to_ris, time.monotonic() + self._live_timeout)
        except WorklistUnavailable as exc:
            with self._lock:
                first = self._live_failed_at is None
                self._live_failed_at = time.monotonic()
            level = logging.WARNING if first else logging.DEBUG
            log_event(self._log, level, "mwl answering from cache", reason=exc.reason)
            return "cache", None
        with self._lock:
            if self._live_failed_at is not None:
                log_event(self._log, logging.INFO, "mwl answering live again")
            self._live_failed_at = None
        return "live", [build_response(query, ds) for ds in results]

    def prepare(self) -> int:
        """Index the cached items for matching now (else on the first query); returns count."""
        return len(self._current())

    def _current(
        self, step_date: str | None = None, patient_id: str | None = None
    ) -> list[_Prepared]:
        """Unexpired records in cache order; only those with this patient ID or step date."""
        snapshot = self._cache.snapshot()
        with self._lock:
            if snapshot.generation != self._generation:
                self._prepared = self._reindex(snapshot)
                self._by_date = _index(self._prepared.values(), step_dates)
                self._by_patient = _index(self._prepared.values(), patient_ids)
                self._generation = snapshot.generation
                self._encoded = {}
            pool: Iterable[_Prepared] = self._prepared.values()
            if patient_id is not None:
                pool = self._by_patient.get(patient_id, ())
            elif step_date is not None:
                pool = self._by_date.get(step_date, ())
        now = self._clock.now()
        return [p for p in pool if p.expires_at > now]

    def _reindex(self, snapshot: CacheSnapshot) -> dict[str, _Prepared]:
        # A refresh mostly brings the same items again: keep their records, parse only changes.
        known = self._prepared
        fresh: dict[str, _Prepared] = {}
        for expires, item in snapshot.entries:
            key = item.key
            old = known.get(key)
            if old is not None and old.dataset_json == item.dataset_json:
                record = old.record
            else:
                record = record_from_json(json.loads(item.dataset_json))
            fresh[key] = _Prepared(key, expires, item.dataset_json, record)
        return fresh

    def _matching(
        self, compiled: Query, step_date: str | None, patient_id: str | None
    ) -> Iterator[_Prepared]:
        for prepared in self._current(step_date, patient_id):
            if compiled.matches(prepared.record):
                yield prepared

    def _from_cache(
        self,
        query: Dataset,
        compiled: Query,
        terms: list[str] | None,
        matched: Iterable[_Prepared],
        encoding: Encoding | None,
    ) -> Iterator[Dataset]:
        """Responses for the matched records, each encoded once (see the module docstring)."""
        known = None if encoding is None else self._known(query, terms, encoding)
        for prepared in matched:
            hit = None if known is None else known.get(prepared.key)
            if hit is not None and hit[0] is prepared.record:
                yield hit[1]
                continue
            response = response_from_record(query, prepared.record, compiled)
            _set_character_set(response, terms)
            raw = None if encoding is None else encode_dataset(response, *encoding)
            if known is None or encoding is None or not raw:  # pynetdicom will say why
                yield response
                continue
            identifier = EncodedIdentifier(raw, *encoding)
            known[prepared.key] = (prepared.record, identifier)
            yield identifier

    def _known(self, query: Dataset, terms: list[str] | None, encoding: Encoding) -> _Encoded:
        shape = (response_shape(query), None if terms is None else tuple(terms), encoding)
        with self._lock:
            known = self._encoded.get(shape)
            if known is None:
                if len(self._encoded) >= MAX_RESPONSE_SHAPES:
                    del self._encoded[next(iter(self._encoded))]  # the oldest shape
                known = self._encoded[shape] = {}
            return known


def _index(
    prepared: Iterable[_Prepared], keys: Callable[[Record], frozenset[str]]
) -> dict[str, list[_Prepared]]:
    index: dict[str, list[_Prepared]] = {}
    for entry in prepared:  # in cache order, which each key's list keeps
        for key in keys(entry.record):
            index.setdefault(key, []).append(entry)
    return index


def _encoding(event: Any) -> Encoding | None:
    """The negotiated encoding of the request's presentation context; None: do not cache."""
    try:
        syntax = event.context.transfer_syntax
        if syntax.is_deflated:
            return None
        return bool(syntax.is_implicit_VR), bool(syntax.is_little_endian)
    except (AttributeError, ValueError):
        return None


def _with_character_set(responses: Iterable[Dataset], terms: list[str] | None) -> Iterator[Dataset]:
    for response in responses:
        _set_character_set(response, terms)
        yield response


def _calling_ae(event: Any) -> str:
    try:
        return str(event.assoc.requestor.ae_title).strip()
    except AttributeError:
        return ""


def _declared_terms(raw: Dataset) -> list[str] | None:
    """The query's Specific Character Set values as sent (None: it declared none)."""
    if "SpecificCharacterSet" not in raw:
        return None
    value = raw.SpecificCharacterSet
    values = [value] if isinstance(value, str) else [str(v) for v in value]
    if not any(v.strip() for v in values):
        return None
    parse_character_set(values, "ISO_IR 6")  # refuses unknown terms
    return [v.strip() for v in values]


def _failure(status: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:64]
    return ds


def _ascii(text: str) -> str:
    return text.encode("ascii", errors="replace").decode("ascii")


def _texts(ds: Dataset) -> Iterator[str]:
    for element in ds:
        if element.VR == "SQ":
            for item in element.value or ():
                yield from _texts(item)
        elif element.VR in TEXT_VRS and element.value is not None:
            values = element.value if element.VM > 1 else [element.value]
            yield from (str(value) for value in values)


def _encodes(texts: list[str], terms: Sequence[str]) -> bool:
    # pydicom maps the default repertoire to Latin-1; for this check it is ASCII.
    encodings = ["ascii" if t in _DEFAULT_TERMS else python_encoding[t] for t in terms]
    if len(encodings) == 1:
        try:
            for text in texts:
                text.encode(encodings[0])
        except UnicodeError:
            return False
        return True
    # With code extensions each character needs some declared set (pydicom switches per run).
    for text in texts:
        for ch in set(text):
            if not any(_char_encodes(ch, enc) for enc in encodings):
                return False
    return True


def _char_encodes(ch: str, encoding: str) -> bool:
    try:
        ch.encode(encoding)
    except UnicodeError:
        return False
    return True


def _set_character_set(ds: Dataset, terms: list[str] | None) -> None:
    """Declare the set the values will be encoded in (see the module docstring)."""
    texts = list(_texts(ds))
    if terms is not None and _encodes(texts, terms):
        ds.SpecificCharacterSet = terms if len(terms) > 1 else terms[0]
    elif terms is None and all(text.isascii() for text in texts):
        if "SpecificCharacterSet" in ds:
            del ds.SpecificCharacterSet
    else:
        ds.SpecificCharacterSet = UTF8
