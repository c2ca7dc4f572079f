"""Getting repository files over HTTP(S) or from a mounted folder, and release bundles with resume.

``RepoFetcher`` is the python-tuf fetcher for metadata (``http://``, ``https://`` and
``file://`` URLs, so a USB stick is read the same way as a web server). Metadata files are
small and python-tuf bounds them; bundles are not: ``download_bundle`` streams one into
``<downloads>/<name>.part`` in chunks, continues a ``.part`` left by an earlier attempt with an
HTTP ``Range`` request, and only renames it to ``<name>`` once its length and hashes match the
signed TUF target. A ``.part`` is never used for anything but resuming.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import urllib3
from tuf.api import exceptions
from tuf.api.metadata import TargetFile  # type: ignore[attr-defined]  # no __all__ in tuf
from tuf.ngclient.fetcher import FetcherInterface

from gateway.logsetup import event
from gateway.spool.durable import durable_replace, fsync_dir
from gateway.update.refusal import TAMPERED

log = logging.getLogger("gateway.update.fetch")

CHUNK = 256 * 1024
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class BundleRejectedError(Exception):
    """The downloaded bundle is not the signed one (length or hash): discarded, do not install.

    That is tampering whatever its form, so the message starts with ``tampered:`` as a refused
    metadata file's does (the command prints ``refused: tampered: ...``).
    """

    kind = TAMPERED

    def __init__(self, message: str) -> None:
        super().__init__(f"{self.kind}: {message}")


class RangeRefusedError(exceptions.DownloadError):
    """The server answered a Range request with a range we did not ask for: start over."""


@dataclass(frozen=True)
class DownloadResult:
    """A verified bundle on disk and how it got there."""

    path: Path
    length: int
    resumed_from: int  # bytes already in the .part when this download began (0: fresh)
    requests: int  # HTTP requests (or file opens) it took


class RepoFetcher(FetcherInterface):
    """python-tuf fetcher for ``http(s)://`` and ``file://`` URLs, with ranged reads for bundles."""

    def __init__(self, timeout: float = 30.0, user_agent: str = "dicom-gateway") -> None:
        self._timeout = urllib3.Timeout(connect=timeout, read=timeout)
        # No retries inside urllib3: a cut download is resumed by us, from the bytes we have.
        self._pool = urllib3.PoolManager(retries=False, headers={"User-Agent": user_agent})

    def _fetch(self, url: str) -> Iterator[bytes]:
        chunks, _start = self.fetch_from(url, 0)
        return chunks

    def fetch_from(self, url: str, offset: int) -> tuple[Iterator[bytes], int]:
        """The bytes of ``url`` from ``offset`` on, and where they really start (0 or offset)."""
        scheme = urlsplit(url).scheme
        if scheme == "file":
            return self._file_from(url, offset)
        if scheme not in ("http", "https"):
            raise exceptions.DownloadError(f"unsupported URL scheme in {url}")
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            response = self._pool.request(
                "GET", url, headers=headers, preload_content=False, timeout=self._timeout
            )
        except urllib3.exceptions.TimeoutError as exc:
            raise exceptions.SlowRetrievalError(f"{url}: no answer in time") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise exceptions.DownloadError(f"{url}: {exc}") from exc
        if response.status == 416 and offset:
            response.release_conn()
            return iter(()), offset  # nothing after offset: the .part is already whole
        if response.status >= 400:
            response.release_conn()
            raise exceptions.DownloadHTTPError(f"{url}: HTTP {response.status}", response.status)
        start = 0
        if offset and response.status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != offset:
                response.release_conn()
                raise RangeRefusedError(f"{url}: asked from byte {offset}, got {match}")
            start = offset
        return self._stream(response, url), start

    def _stream(self, response: urllib3.BaseHTTPResponse, url: str) -> Iterator[bytes]:
        try:
            # read1, not stream(): stream reads whole chunks and loses a partial one when the
            # connection drops, and those bytes are exactly what a resume starts from.
            while chunk := response.read1(CHUNK):
                yield chunk
        except urllib3.exceptions.TimeoutError as exc:
            raise exceptions.SlowRetrievalError(f"{url}: stalled") from exc
        except urllib3.exceptions.HTTPError as exc:
            # Connection reset or the body cut short: the caller keeps what it has and resumes.
            raise exceptions.DownloadError(f"{url}: cut short ({type(exc).__name__})") from exc
        finally:
            response.release_conn()

    def _file_from(self, url: str, offset: int) -> tuple[Iterator[bytes], int]:
        path = Path(unquote(urlsplit(url).path))
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            # python-tuf reads a 404 as "no newer root"; a missing file on a stick means the same.
            raise exceptions.DownloadHTTPError(f"{path}: not found", 404) from None
        except OSError as exc:
            raise exceptions.DownloadError(f"{path}: {exc.strerror}") from exc

        def chunks() -> Iterator[bytes]:
            with fh:
                fh.seek(offset)
                yield from iter(lambda: fh.read(CHUNK), b"")

        return chunks(), offset


def download_bundle(
    fetcher: RepoFetcher,
    url: str,
    target: TargetFile,
    downloads: Path,
    *,
    attempts: int = 5,
) -> DownloadResult:
    """Download ``target`` from ``url`` into ``downloads/<name>``, resuming a cut transfer.

    Raises ``BundleRejectedError`` when the whole file does not match the signed length and hashes
    (the ``.part`` is deleted, so the next try starts over), and the last download error when
    ``attempts`` requests in a row brought no byte.
    """
    downloads.mkdir(parents=True, exist_ok=True)
    name = Path(target.path).name
    final = downloads / name
    part = downloads / f"{name}.part"
    if final.exists():
        with contextlib.suppress(BundleRejectedError):
            _verify(final, target)
            return DownloadResult(final, target.length, target.length, 0)
        final.unlink(missing_ok=True)  # _verify removed it already; be sure
    resumed_from = _size(part)
    if resumed_from > target.length:
        part.unlink()  # longer than the signed file: not ours to continue
        resumed_from = 0
    requests = 0
    idle = 0
    while _size(part) < target.length:
        have = _size(part)
        requests += 1
        try:
            _append_from(fetcher, url, part, have, target.length)
        except BundleRejectedError:
            part.unlink()
            raise
        except exceptions.DownloadHTTPError:
            raise  # the server answered: asking again at once gets the same answer
        except RangeRefusedError as exc:
            event(log, logging.WARNING, "update.download.restart", target=name, error=str(exc))
            part.unlink(missing_ok=True)
            idle += 1
            if idle >= attempts:
                raise
            continue
        except exceptions.DownloadError as exc:
            got = _size(part) - have
            idle = 0 if got else idle + 1
            event(
                log,
                logging.INFO if got else logging.WARNING,
                "update.download.cut",
                target=name,
                have=_size(part),
                length=target.length,
                error=str(exc),
            )
            if idle >= attempts:
                raise
            continue
        if _size(part) == have:
            break  # the server says there is no more: verification will tell
    _verify(part, target)
    durable_replace(part, final)
    event(
        log,
        logging.INFO,
        "update.download.done",
        target=name,
        length=target.length,
        resumed_from=resumed_from,
        requests=requests,
    )
    return DownloadResult(final, target.length, resumed_from, requests)


def _append_from(fetcher: RepoFetcher, url: str, part: Path, have: int, length: int) -> None:
    chunks, start = fetcher.fetch_from(url, have)
    mode = "ab" if start == have and have else "wb"  # a 200 to a Range request: start over
    written = start
    created = not part.exists()
    with part.open(mode) as fh:
        try:
            for chunk in chunks:
                written += len(chunk)
                if written > length:
                    raise BundleRejectedError(
                        f"{part.name}: the server sends more than the signed {length} bytes"
                    )
                fh.write(chunk)
        finally:
            fh.flush()
            os.fsync(fh.fileno())
    if created:
        fsync_dir(part.parent)


def _verify(path: Path, target: TargetFile) -> None:
    try:
        with path.open("rb") as fh:
            target.verify_length_and_hashes(fh)
    except exceptions.LengthOrHashMismatchError as exc:
        path.unlink()
        raise BundleRejectedError(
            f"{target.path}: does not match its signed target ({exc})"
        ) from None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
