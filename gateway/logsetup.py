"""Structured logging: one JSON event a line on stdout, for journald.

Log spool ids and UIDs, never patient names or IDs. Values are logged as they are (a user name
typed at the login form, a file name from a drop folder): the formatter is the one place that
makes each record one line (:func:`gateway.textsafe.json_line`), whatever a value holds.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO, Any

from pynetdicom import _config as pynetdicom_config

from gateway.textsafe import json_line

_RESERVED = set(vars(logging.makeLogRecord({})))


class JsonLineFormatter(logging.Formatter):
    """Formats a record as one JSON object: ts, level, logger, event and the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = (
                    value if isinstance(value, str | int | float | bool | None) else str(value)
                )
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json_line(out)


def setup_logging(level: str = "INFO", stream: IO[str] | None = None) -> None:
    """Route every logger to one JSON-lines handler; quiet pynetdicom's per-PDU chatter."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonLineFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # pynetdicom logs identifiers at INFO/DEBUG and every failed attempt with a traceback at
    # ERROR; our outcomes carry the reasons, logged once per transition.
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    # And skip building its per-PDU debug text at all (about a tenth of an MWL answer's CPU).
    pynetdicom_config.LOG_HANDLER_LEVEL = "none"
    logging.getLogger("watchdog").setLevel(logging.WARNING)


def event(logger: logging.Logger, level: int, name: str, **fields: Any) -> None:
    """Log one structured event: ``name`` plus key=value fields (no patient data).

    Values need no escaping by the caller: the formatter writes each event as one JSON line.
    """
    logger.log(level, name, extra=fields)
