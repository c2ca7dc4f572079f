"""What the engineer screens share: the config file as data, applied through the ConfigStore.

Forms edit the TOML *file* (``services.config_path``), not the running configuration: a change
is validated, written with a trial marker, and the gateway restarts on it (rolled back if it does
not become ready). Every apply is audited as ``config.apply`` with the version it made.
"""

from __future__ import annotations

import tomllib
from typing import Any

from gateway.configstore import ApplyResult, ConfigStore
from gateway.configtoml import dumps
from gateway.web.services import WebServices


def config_store(services: WebServices) -> ConfigStore:
    """The store of the gateway's config file and its history under state_dir."""
    return ConfigStore(
        services.config_path,
        services.state_dir,
        services.clock,
        credentials_dir=services.credentials_dir,
    )


def file_data(services: WebServices) -> dict[str, Any]:
    """The config file as it is on disk now, parsed ({} if it does not parse)."""
    try:
        return tomllib.loads(config_store(services).current_text())
    except tomllib.TOMLDecodeError:
        return {}


def apply_text(services: WebServices, text: str, actor: str, comment: str, via: str) -> ApplyResult:
    """Validate and apply ``text`` (restart requested when the daemon allows), audited."""
    result = config_store(services).apply(text, actor, comment, services.request_restart)
    if result.ok and result.version is not None:
        services.audit.append(
            actor,
            "config.apply",
            f"config:{result.version.version_id}",
            {
                "via": via,
                "comment": comment,
                "previous": result.previous.version_id if result.previous else None,
                "restarting": result.restarting,
            },
        )
    return result


def apply_data(
    services: WebServices, data: dict[str, Any], actor: str, comment: str, via: str
) -> ApplyResult:
    """Apply a config given as data (written back as canonical TOML)."""
    return apply_text(services, dumps(data), actor, comment, via)


def applied_message(result: ApplyResult) -> str:
    """One sentence for the flash after a successful apply."""
    assert result.version is not None
    if result.restarting:
        return (
            f"Saved as version {result.version.version_id}; the gateway restarts with it and "
            "goes back to the previous version by itself if it does not come up."
        )
    return f"Saved as version {result.version.version_id}; it takes effect at the next restart."
