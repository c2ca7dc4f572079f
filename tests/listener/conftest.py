"""Fixtures for listener tests: listeners that are always stopped when the test ends."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Iterator, Sequence

import pytest

from gateway.config import DicomListenerSection
from gateway.listener.admission import AdmissionLimits
from gateway.listener.server import DicomListener
from gateway.listener.services import ListenerService
from tests.listener.support import LISTENER_AE

StartListener = Callable[..., DicomListener]


@pytest.fixture
def start_listener() -> Iterator[StartListener]:
    """Start DicomListeners; every one is stopped (and its threads joined) at teardown."""
    started: list[DicomListener] = []

    def start(
        settings: DicomListenerSection,
        *,
        ssl_context: ssl.SSLContext | None = None,
        services: Sequence[ListenerService] = (),
        admission: AdmissionLimits | None = None,
    ) -> DicomListener:
        listener = DicomListener(
            settings,
            LISTENER_AE,
            ssl_context,
            services,
            logging.getLogger("test.listener"),
            admission=admission,
        )
        listener.start()
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.stop()
