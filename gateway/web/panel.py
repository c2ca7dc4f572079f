"""The panel as one supervisor step: accounts, setup token, certificate, app and HTTPS server.

``start()`` opens the panel database, makes the setup token while no account exists (and logs
where to read it, once per start; never the token), makes the metrics scrape token, makes or
reuses the certificate, then serves. ``stop()`` stops the server. Nothing here touches the
images: a panel that cannot start is the daemon's to log and carry on without.
"""

from __future__ import annotations

import logging

from argon2 import PasswordHasher

from gateway.logsetup import event
from gateway.web.app import create_web_app
from gateway.web.auth import PanelAuth, open_auth
from gateway.web.auth.setup import token_path
from gateway.web.metrics import ensure_metrics_token
from gateway.web.server import WebServer, panel_ssl_context
from gateway.web.services import WebServices
from gateway.web.tlscert import PanelCertificate, ensure_certificate


class WebPanel:
    """Starts and stops the HTTPS panel for the supervisor (step "web")."""

    def __init__(
        self,
        services: WebServices,
        logger: logging.Logger,
        *,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self.services = services
        self._log = logger
        self._hasher = hasher
        self.server: WebServer | None = None
        self.auth: PanelAuth | None = None
        self.certificate: PanelCertificate | None = None

    @property
    def url(self) -> str | None:
        """The panel's address as seen from this box, once started."""
        return self.server.url if self.server is not None else None

    def start(self) -> None:
        """Prepare accounts, tokens and certificate, then listen (ServerStartError if not)."""
        s = self.services
        web = s.config.web
        state = s.state_dir
        auth = open_auth(state, web, s.clock, self._hasher)
        self.auth = auth
        token = auth.setup.ensure()
        if token is not None:
            # Where to read it, never the token: the journal goes into the support bundle,
            # which leaves the box. The appliance prints it on its console and the card.
            event(
                self._log,
                logging.WARNING,
                "web panel not set up: open it and enter the setup token",
                token_file=str(token_path(state)),
                read_it_with="dicom-gateway setup-token --config <file> (or the box's console)",
            )
        ensure_metrics_token(state)
        cert = ensure_certificate(state, web, s.credentials_dir)
        self.certificate = cert
        app = create_web_app(s, auth)
        server = WebServer(
            app, web.bind, web.port, panel_ssl_context(cert.cert, cert.key), self._log
        )
        server.start()
        self.server = server
        event(
            self._log,
            logging.INFO,
            "web panel ready",
            url=server.url,
            certificate=str(cert.cert),
            self_signed=cert.self_signed,
            expires=f"{cert.not_after:%Y-%m-%d}",
        )

    def stop(self) -> None:
        """Stop serving."""
        if self.server is not None:
            self.server.stop()
            self.server = None
