"""Query parameters several panel pages share, defined once (their bounds, their OpenAPI text)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

# The first row of a listing's page, as gateway.paging counts it.
Offset = Annotated[int, Query(ge=0, le=2**62, description="Rows to skip: the page to show.")]
