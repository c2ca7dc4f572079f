"""The daemon's worklist cache, opened by a command run beside the daemon (``held``,
``quarantine``).

Rules: the cache is read where the daemon keeps it (``<state_dir>/worklist.sqlite``); when it
does not exist or no ``[worklist]`` is configured the command gets an empty lookup, and never
creates the file (it is the daemon's: its owner and mode must stay the daemon's).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from gateway.clock import SystemClock
from gateway.config import GatewayConfig
from gateway.worklist.lookup import EmptyWorklist, WorklistLookup

WORKLIST_FILE = "worklist.sqlite"


@contextmanager
def open_worklist_cache(config: GatewayConfig) -> Iterator[WorklistLookup]:
    """The daemon's worklist cache, read beside it; an empty lookup when it does not exist."""
    path = config.gateway.state_dir / WORKLIST_FILE
    if not path.exists() or config.worklist is None:
        yield EmptyWorklist()
        return
    from gateway.worklist.cache import WorklistCache

    cache = WorklistCache(path, SystemClock(), config.worklist.expire_grace_hours)
    cache.open()
    try:
        yield cache
    finally:
        cache.close()
