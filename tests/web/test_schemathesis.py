"""schemathesis against the panel's /api/v1 OpenAPI document, over the real HTTPS server with an
engineer's session and CSRF header: no 5xx, every answer matches the document. Bounded examples
per operation so it stays well under a minute."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core import NotSet
from schemathesis.specs.openapi.checks import positive_data_acceptance

from gateway.web.api import OPENAPI_URL
from gateway.web.auth import Role
from tests.web.test_pages_operator import MakePanel, Panel, make_panel, token

__all__ = ["make_panel"]


@pytest.fixture
def session_panel(make_panel: MakePanel) -> tuple[Panel, httpx.Client]:
    panel = make_panel()
    panel.held_object()
    panel.failed_object()
    return panel, panel.client(Role.ENGINEER)


def test_the_api_answers_every_request_by_its_document(
    session_panel: tuple[Panel, httpx.Client],
) -> None:
    panel, client = session_panel
    # The document is for signed-in engineers only: fetched with the engineer's session.
    assert panel.client(None).get(OPENAPI_URL).status_code == 401
    document = client.get(OPENAPI_URL)
    assert document.status_code == 200
    schema = schemathesis.openapi.from_dict(document.json())
    headers = {"X-CSRF-Token": token(client.get("/queue").text)}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10

    for operation in operations:

        @given(operation.as_strategy())
        @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
        def answers(case: schemathesis.Case) -> None:
            response = client.request(
                case.method,
                case.formatted_path,
                params=case.query,
                json=None if isinstance(case.body, NotSet) else case.body,
                headers=headers,
            )
            assert response.status_code < 500, response.text
            # BindRequest's "exactly one way to bind" rule is a model validator the document
            # cannot express, so a schema-valid body may be refused with 422: not checked here.
            case.validate_response(response, excluded_checks=[positive_data_acceptance])

        answers()
