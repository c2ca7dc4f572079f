"""Device accounts (/devices): the password of each drop folder's SMB and FTP account.

A folder served as an SMB share has one Samba account (``share_user``); a folder the FTP receiver
writes into has one FTP account (``ftp_user``). Neither has a password until one is set here:
until then every login to it is refused (no guest, no default password), and this page says so.

A password is checked as the panel's own are (length, not the account name, not one of the
commonest) and as a device's setup screen can type it (gateway.ingest.remote.accounts), set in
Samba's passdb (pdbedit, password on standard input) or as an argon2id hash
(gateway.ingest.remote.ftpaccounts), and never shown again, logged or put in the audit record:
the record says who set which account's password, when. Engineers only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.datastructures import FormData

from gateway.config import GatewayConfig
from gateway.ingest.remote.accounts import DeviceAccountError, SambaAccounts, check_device_password
from gateway.ingest.remote.ftpaccounts import FtpAccounts, FtpAccountsError, ftp_dir
from gateway.ingest.remote.smbconf import private_dir
from gateway.logsetup import event
from gateway.web.auth.users import AccountError, Role, check_password
from gateway.web.deps import User, read_form, require_engineer, web_actor
from gateway.web.services import WebServices
from gateway.web.templating import NavLink, redirect, render

PATH = "/devices"
NAV = (NavLink(PATH, "Device accounts", Role.ENGINEER),)
MAX_FIELD = 1000  # characters read from a password field; longer is refused by the rule anyway
log = logging.getLogger("gateway.web.devices")

Kind = Literal["smb", "ftp"]
KIND_LABEL: dict[str, str] = {"smb": "SMB share", "ftp": "FTP"}


@dataclass(frozen=True)
class DeviceAccount:
    """One row of the page: an account of a folder and whether it can be logged in to."""

    kind: Kind
    account: str
    folder: str
    reached_as: str  # \\box\share, or ftp(s)://box:port
    has_password: bool
    problem: str = ""  # why it could not be told (Samba missing, unreadable accounts file)


def device_accounts(
    config: GatewayConfig,
    smb_with_password: set[str] | None,
    ftp_with_password: set[str] | None,
    problems: dict[str, str],
) -> list[DeviceAccount]:
    """The rows for ``config``, given which accounts have a password (None: unknown). Pure."""
    rows = []
    scheme = "ftp" if config.ingest.ftp.allow_plain else "ftps"
    for folder in config.ingest.folder:
        entries: list[tuple[Kind, str | None, str, set[str] | None]] = [
            ("smb", folder.share_user, f"\\\\box\\{folder.share}", smb_with_password),
            ("ftp", folder.ftp_user, f"{scheme}://box:{config.ingest.ftp.port}", ftp_with_password),
        ]
        for kind, account, reached, known in entries:
            if account is None:
                continue
            rows.append(
                DeviceAccount(
                    kind=kind,
                    account=account,
                    folder=folder.name,
                    reached_as=reached,
                    has_password=known is not None and account in known,
                    problem=problems.get(kind, "") if known is None else "",
                )
            )
    return rows


def routes(services: WebServices) -> APIRouter:
    """/devices and its password forms (engineer)."""
    router = APIRouter()
    samba = SambaAccounts(private_dir(services.state_dir))
    ftp = FtpAccounts(ftp_dir(services.state_dir))

    def rows() -> list[DeviceAccount]:
        problems: dict[str, str] = {}
        smb: set[str] | None = None
        ftp_set: set[str] | None = None
        folders = services.config.ingest.folder
        if any(f.share_user for f in folders):
            try:
                smb = samba.accounts()
            except (DeviceAccountError, OSError) as exc:
                problems["smb"] = str(exc)
        if any(f.ftp_user for f in folders):
            try:
                ftp_set = ftp.accounts()
            except FtpAccountsError as exc:
                problems["ftp"] = str(exc)
        return device_accounts(services.config, smb, ftp_set, problems)

    def page(
        request: Request, *, error: str = "", failed: str = "", status: int = 200
    ) -> HTMLResponse:
        return render(
            request,
            "devices.html",
            status_code=status,
            accounts=rows(),
            kinds=KIND_LABEL,
            error=error,
            failed=failed,
        )

    @router.get(PATH, response_class=HTMLResponse)
    def show(request: Request, user: Annotated[User, Depends(require_engineer)]) -> HTMLResponse:
        """Every device account with whether it has a password."""
        return page(request)

    @router.post(PATH + "/{kind}/{account}/password", response_model=None)
    def set_password(
        request: Request,
        kind: str,
        account: str,
        user: Annotated[User, Depends(require_engineer)],
        form: Annotated[FormData, Depends(read_form)],
    ) -> HTMLResponse | RedirectResponse:
        """Set (or replace) one account's password."""
        row = next((r for r in rows() if r.kind == kind and r.account == account), None)
        if row is None:
            raise HTTPException(404, f"no {kind} account {account!r} in the configuration")
        password = _field(form, "password")
        failed = f"{kind}:{account}"
        if password != _field(form, "password2"):
            return page(request, error="The two passwords differ.", failed=failed, status=422)
        try:
            check_password(password, account)
            check_device_password(password)
            if row.kind == "smb":
                samba.set_password(account, password)
            else:
                ftp.set_password(account, password)
        except (AccountError, DeviceAccountError, FtpAccountsError) as exc:
            message = str(exc)
            return page(
                request,
                error=f"{account}: {message[:1].upper()}{message[1:]}.",
                failed=failed,
                status=422,
            )
        services.audit.append(
            web_actor(user),
            "device_account.set_password",
            f"{kind}:{account}",
            {"folder": row.folder},
        )
        event(
            log,
            logging.INFO,
            "device account password set",
            kind=kind,
            account=account,
            folder=row.folder,
            user=user.username,
        )
        return redirect(
            PATH,
            f"Password of {account} ({KIND_LABEL[kind]}) set: the device logs in with it now.",
        )

    return router


def _field(form: FormData, name: str) -> str:
    value = form.get(name, "")
    return value[:MAX_FIELD] if isinstance(value, str) else ""
