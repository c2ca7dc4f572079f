"""tests/image runs only when asked for by marker (``-m image``: make image-test).

A bare ``pytest`` (a developer's habit) would otherwise boot an emulated box for half an hour, or
fail for want of a built image; ``make test`` deselects the marker itself (Makefile).
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "image" in (config.getoption("markexpr") or "").replace("not image", ""):
        return
    skip = pytest.mark.skip(reason="boots the image: run with -m image (make image-test)")
    for item in items:
        if item.get_closest_marker("image"):
            item.add_marker(skip)
