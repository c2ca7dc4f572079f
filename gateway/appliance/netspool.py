"""The privilege boundary: the panel asks for network changes through files, root decides.

The daemon runs as ``dicom-gateway`` without capabilities and cannot write /run/systemd/network
or talk to networkd. The panel therefore only *writes a request*: a JSON file in
``/run/dicom-gateway-network/requests/`` (:func:`submit`; root:dicom-gateway 2770, made by
systemd/tmpfiles.d/dicom-gateway-network.conf). ``dicom-gateway-network-apply.path`` (root's
systemd) sees a ``*.json`` there and starts ``dicom-gateway-network-apply.service``, which runs
``dicom-gateway appliance network handle``: :func:`handle_requests`, as root.

Root trusts nothing in a request:

* it opens each file without following a symlink, takes only a regular file of at most
  :data:`MAX_REQUEST_BYTES`, and removes it whatever it holds (so the path unit does not fire for
  ever on a bad file); contents never reach a message;
* the kinds are ``apply`` (``toml``: a whole network.toml, validated again here by the same
  :func:`gateway.appliance.network.parse_network`; ``seconds``: the confirmation time, bounded)
  ``confirm`` (``trial``: the trial's id; ``via``: the local address the confirming request
  reached, which the panel took from its socket) and ``revert`` (``trial``: roll it back now,
  from any address); anything else is refused;
* no request can run a command: the commands are the keeper's fixed argv lists.

The outcome is the status file root writes (``/run/dicom-gateway-network/status.json``, group
dicom-gateway), which the panel shows.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

from gateway.appliance.nettrial import (
    MAX_REQUEST_BYTES,
    REQUESTS_DIR,
    NetworkKeeper,
    NetworkStatus,
)
from gateway.spool.durable import write_bytes_durably
from gateway.textsafe import one_line

MAX_ACTOR = 80


class RequestError(ValueError):
    """A request file that is refused; the message names why, never its contents."""


def submit(spool: Path, kind: str, fields: dict[str, Any]) -> Path:
    """Write one request (daemon side); the name sorts by time so requests run in order."""
    requests = spool / REQUESTS_DIR
    requests.mkdir(parents=True, exist_ok=True)
    path = requests / f"{time.time_ns():020d}-{os.getpid()}-{kind}.json"
    # write_bytes_durably writes a dot-named temporary first: the path unit's *.json glob
    # sees the request only once it is whole.
    write_bytes_durably(path, json.dumps({"kind": kind, **fields}).encode(), 0o640)
    return path


def read_request(path: Path) -> dict[str, Any]:
    """A request file's JSON object, read without following links; RequestError if refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise RequestError(f"cannot open ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RequestError("not a regular file")
        if info.st_size > MAX_REQUEST_BYTES:
            raise RequestError(f"larger than {MAX_REQUEST_BYTES} bytes")
        raw = os.read(fd, MAX_REQUEST_BYTES + 1)
    finally:
        os.close(fd)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise RequestError("not JSON") from None
    if not isinstance(data, dict):
        raise RequestError("not a JSON object")
    return data


def _text(data: dict[str, Any], key: str, limit: int) -> str:
    value = data.get(key)
    if not isinstance(value, str) or len(value) > limit:
        raise RequestError(f"{key} missing or too long")
    return value


def dispatch(keeper: NetworkKeeper, data: dict[str, Any]) -> NetworkStatus:
    """Carry out one parsed request."""
    kind = data.get("kind")
    actor = one_line(_text(data, "actor", MAX_ACTOR))
    if kind == "apply":
        seconds = data.get("seconds")
        if not isinstance(seconds, int) or isinstance(seconds, bool):
            raise RequestError("seconds missing")
        return keeper.apply(_text(data, "toml", MAX_REQUEST_BYTES), actor, seconds)
    if kind == "confirm":
        return keeper.confirm(_text(data, "trial", 64), _text(data, "via", 64))
    if kind == "revert":
        return keeper.revert(_text(data, "trial", 64), actor)
    raise RequestError("unknown kind")


def handle_requests(keeper: NetworkKeeper) -> list[NetworkStatus]:
    """Carry out every waiting request in order (root side), after the rollback check."""
    outcomes = []
    due = keeper.rollback_due()
    if due is not None:
        outcomes.append(due)
    requests = keeper.spool_dir / REQUESTS_DIR
    try:
        names = sorted(p for p in requests.iterdir() if p.name.endswith(".json"))
    except FileNotFoundError:
        return outcomes
    for path in names:
        if path.name.startswith("."):
            continue  # a request still being written
        outcomes.append(_take(keeper, path))
    return outcomes


def _take(keeper: NetworkKeeper, path: Path) -> NetworkStatus:
    # Removed before it is carried out: a crash mid-way must not make the path unit repeat it.
    try:
        try:
            data = read_request(path)
        finally:
            _discard(path)
        return dispatch(keeper, data)
    except RequestError as exc:
        return keeper.refuse(f"request {path.name} refused: {exc}")


def _discard(path: Path) -> None:
    """Take ``path`` out of the path unit's glob, whatever it is: a file or link is removed, an
    empty directory too; anything else is renamed to a dot name not ending in ``.json``,
    so a planted directory cannot make the unit fire for ever."""
    try:
        path.unlink(missing_ok=True)
        return
    except IsADirectoryError:
        pass
    try:
        path.rmdir()
    except OSError:
        path.rename(path.with_name(f".{path.name}.{time.time_ns()}.refused"))
