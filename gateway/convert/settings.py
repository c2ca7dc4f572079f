"""What the converter writes into every object it creates, taken from the configuration."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import GatewayConfig


@dataclass(frozen=True)
class ConvertSettings:
    """Equipment identity, UID root, grouping window and the resource limits of conversion."""

    ae_title: str
    uid_root: str | None
    institution_name: str
    station_name: str
    modality: str
    manufacturer: str
    model_name: str
    device_serial_number: str
    software_versions: str
    study_window_seconds: float
    max_image_pixels: int = 100_000_000  # width × height × frames of one raster input
    max_encapsulated_bytes: int = 512 * 1024 * 1024  # JPEG/PDF read into memory are limited to this

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            # A backslash would split a DICOM string into several values; controls are invalid.
            if isinstance(value, str) and any(c == "\\" or ord(c) < 0x20 for c in value):
                raise ValueError(f"{field.name} must not contain '\\' or control characters")
        if self.max_image_pixels <= 0 or self.max_encapsulated_bytes <= 0:
            raise ValueError("conversion limits must be positive")

    @classmethod
    def from_config(cls, config: GatewayConfig) -> ConvertSettings:
        """Settings from the [gateway] and [modality] sections."""
        gw, mod = config.gateway, config.modality
        return cls(
            ae_title=gw.ae_title,
            uid_root=gw.uid_root,
            institution_name=gw.institution_name,
            station_name=gw.station_name,
            modality=mod.modality.strip(),
            manufacturer=mod.manufacturer,
            model_name=mod.model_name,
            device_serial_number=mod.device_serial_number,
            software_versions=mod.software_versions,
            study_window_seconds=gw.study_window_minutes * 60.0,
        )
