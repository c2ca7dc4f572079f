"""LocalApiServer: the socket's mode and owner, stale and foreign sockets, the peer's identity,
bounded bodies, clean stop."""

from __future__ import annotations

import getpass
import logging
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException, Request

from gateway.web.api import MAX_BODY_BYTES
from gateway.web.localapi import LocalApiError, LocalApiServer, bind_socket, peer_actor
from tests.web.conftest import Box


def _whoami_app() -> FastAPI:
    app = FastAPI()

    @app.get("/whoami")
    def whoami(actor: Annotated[str, Depends(peer_actor)]) -> dict[str, str]:
        return {"actor": actor}

    return app


@pytest.fixture
def whoami(tmp_path: Path) -> Iterator[LocalApiServer]:
    server = LocalApiServer(_whoami_app(), tmp_path / "run" / "api.sock", logging.getLogger("t"))
    server.start()
    yield server
    server.stop()


def _client(path: Path) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), base_url="http://gateway")


def test_the_socket_is_mode_0660_and_owned_by_the_daemons_user(box: Box) -> None:
    st = box.server.path.lstat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_uid == os.geteuid()
    assert st.st_gid == os.getegid()
    # The private folder it was bound in is gone: only the state files and the socket remain.
    assert not [p for p in box.state.iterdir() if p.name.startswith(".api-")]


def test_healthz_answers_ok_with_nothing_else(box: Box) -> None:
    response = box.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_the_caller_is_named_by_its_uid_as_local_user(whoami: LocalApiServer) -> None:
    with _client(whoami.path) as client:
        assert client.get("/whoami").json() == {"actor": f"local:{getpass.getuser()}"}


def test_without_peer_credentials_nobody_may_act() -> None:
    # A request that did not come through LocalApiServer: there is no peer to name.
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    with pytest.raises(HTTPException) as refused:
        peer_actor(request)
    assert refused.value.status_code == 403


def test_stop_removes_the_socket_and_ends_the_thread(tmp_path: Path) -> None:
    server = LocalApiServer(_whoami_app(), tmp_path / "api.sock", logging.getLogger("t"))
    server.start()
    assert server.running
    server.stop()
    assert not server.running
    assert not server.path.exists()
    with pytest.raises(OSError), socket.socket(socket.AF_UNIX) as probe:
        probe.connect(str(server.path))


def test_a_stale_socket_from_a_crash_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: what a killed daemon leaves
    server = LocalApiServer(_whoami_app(), path, logging.getLogger("t"))
    server.start()
    try:
        with _client(path) as client:
            assert client.get("/whoami").status_code == 200
    finally:
        server.stop()


def test_a_socket_in_use_by_another_server_is_not_taken_over(whoami: LocalApiServer) -> None:
    second = LocalApiServer(_whoami_app(), whoami.path, logging.getLogger("t"))
    with pytest.raises(LocalApiError, match="in use by another process"):
        second.start()
    with _client(whoami.path) as client:  # the first one still answers
        assert client.get("/whoami").status_code == 200


def test_a_file_that_is_not_a_socket_is_never_removed(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    path.write_text("not mine")
    with pytest.raises(LocalApiError, match="not a socket"):
        bind_socket(path)
    assert path.read_text() == "not mine"


def test_stopping_leaves_a_socket_that_replaced_ours_alone(tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    server = LocalApiServer(_whoami_app(), path, logging.getLogger("t"))
    server.start()
    path.unlink()  # someone removed ours and another process bound the path
    other = bind_socket(path)
    try:
        server.stop()
        assert stat.S_ISSOCK(path.lstat().st_mode)
    finally:
        other.close()
        path.unlink()


def test_a_declared_oversize_body_is_refused_with_413(box: Box) -> None:
    body = b'{"reason": "' + b"x" * MAX_BODY_BYTES + b'"}'
    response = box.client.post(
        "/api/v1/held/1/discard", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]


def test_a_chunked_oversize_body_is_refused_with_413(box: Box) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"reason": "'
        for _ in range(MAX_BODY_BYTES // 1024 + 1):
            yield b"x" * 1024
        yield b'"}'

    response = box.client.post(
        "/api/v1/held/1/discard", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def test_a_small_chunked_body_reaches_the_endpoint(box: Box) -> None:
    object_id = box.held_object()

    def chunks() -> Iterator[bytes]:
        yield b'{"reason": '
        yield b'"test shot"}'

    response = box.client.post(
        f"/api/v1/held/{object_id}/discard",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
