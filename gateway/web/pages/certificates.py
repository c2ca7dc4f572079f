"""Certificates (/certificates): every TLS certificate the box uses, with expiry warnings; a key
and CSR made on the box (the key never leaves it); installing the signed certificate and CA.

Uploads are PEM text posted in a textarea (filled from a local file by static/engineer.js).
Installing checks that the certificate holds the key's public half and chains to the CA bundle
(gateway.certstore). Pointing a destination or the listener at the files is then a config
change on the destinations or configuration screen. Engineers only; every change is audited.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from gateway.certstore import CertificateError, CertInfo, CertStore, inspect
from gateway.config import GatewayConfig, TlsSettings
from gateway.web.auth.users import Role
from gateway.web.deps import User, read_form, require_engineer, web_actor
from gateway.web.services import WebServices
from gateway.web.templating import NavLink, redirect, render

PATH = "/certificates"
NAV = (NavLink(PATH, "Certificates", Role.ENGINEER),)


def certificate_files(config: GatewayConfig, state_dir: Path) -> list[tuple[Path, str]]:
    """Every certificate file the configuration uses, with the role it plays (keys excluded)."""
    out: list[tuple[Path, str]] = []
    if config.web.cert is not None:
        out.append((config.web.cert, "web panel"))
    else:
        out.extend((p, "web panel (generated)") for p in sorted((state_dir / "web").glob("*.pem")))
    sections: list[tuple[str, TlsSettings | None]] = [
        (f"destination {d.name}", d.tls) for d in config.destination
    ]
    if config.dicom_listener is not None:
        sections.append(("DICOM listener", config.dicom_listener.tls))
    if config.worklist is not None:
        sections.append(("worklist", config.worklist.tls))
    for owner, tls in sections:
        if tls is not None:
            out.append((tls.cert, f"{owner}: our certificate"))
            out.append((tls.ca, f"{owner}: trusted CA"))
    return out


def routes(services: WebServices) -> APIRouter:
    """/certificates: inventory, CSR generation and download, installation (engineer)."""
    router = APIRouter()
    store = CertStore(services.state_dir)

    def page(request: Request, *, error: str = "", status: int = 200) -> HTMLResponse:
        now = dt.datetime.now(dt.UTC)
        used: list[CertInfo] = [
            inspect(path, role, now)
            for path, role in certificate_files(services.config, services.state_dir)
        ]
        generated = []
        for name in store.names():
            files = store.paths(name)
            generated.append(
                {
                    "name": name,
                    "csr": files["csr"].is_file(),
                    "cert": inspect(files["cert"], name, now) if files["cert"].is_file() else None,
                    "paths": {k: str(v) for k, v in files.items()},
                }
            )
        return render(
            request,
            "certificates.html",
            status_code=status,
            used=used,
            generated=generated,
            error=error,
        )

    @router.get(PATH, response_class=HTMLResponse)
    def show(request: Request, user: Annotated[User, Depends(require_engineer)]) -> HTMLResponse:
        """Certificates in use and keys made on the box."""
        return page(request)

    @router.post(PATH + "/generate", response_model=None)
    def generate(
        request: Request,
        user: Annotated[User, Depends(require_engineer)],
        form: Annotated[FormData, Depends(read_form)],
    ) -> HTMLResponse | RedirectResponse:
        """A new key and CSR under <state_dir>/tls."""
        name = str(form.get("name", "")).strip()
        hosts = str(form.get("hosts", "")).replace(",", " ").split()
        try:
            store.generate(name, str(form.get("common_name", "")), hosts)
        except CertificateError as exc:
            return page(request, error=str(exc), status=422)
        services.audit.append(web_actor(user), "tls.generate_key", f"tls:{name}", {"hosts": hosts})
        return redirect(PATH, f"Key {name} made on the box; download its CSR for your CA.")

    @router.get(PATH + "/{name}/csr")
    def download_csr(name: str, user: Annotated[User, Depends(require_engineer)]) -> Response:
        """The certificate signing request (never the key)."""
        try:
            csr = store.csr(name)
        except CertificateError:
            csr = None
        if csr is None:
            raise HTTPException(404, f"no CSR named {name!r}")
        return Response(
            csr,
            media_type="application/pkcs10",
            headers={"content-disposition": f'attachment; filename="{name}.csr"'},
        )

    @router.post(PATH + "/{name}/install", response_model=None)
    def install(
        request: Request,
        name: str,
        user: Annotated[User, Depends(require_engineer)],
        form: Annotated[FormData, Depends(read_form)],
    ) -> HTMLResponse | RedirectResponse:
        """Check and store the signed certificate and its CA bundle."""
        try:
            info = store.install(name, str(form.get("cert", "")), str(form.get("ca", "")))
        except CertificateError as exc:
            return page(request, error=f"{name}: {exc}", status=422)
        services.audit.append(
            web_actor(user),
            "tls.install_certificate",
            f"tls:{name}",
            {"subject": info.subject, "not_after": str(info.not_after)},
        )
        return redirect(PATH, f"Certificate {name} installed ({info.subject}).")

    return router
