from __future__ import annotations

import pytest

from gateway.config import parse_config
from gateway.convert.settings import ConvertSettings
from tests.convert.conftest import make_settings


def test_settings_come_from_gateway_and_modality_sections() -> None:
    config = parse_config(
        {
            "gateway": {
                "ae_title": "GW1",
                "uid_root": "1.2.3",
                "institution_name": "Clinic",
                "station_name": "ROOM2",
                "study_window_minutes": 10,
            },
            "modality": {"modality": "XC", "manufacturer": "Acme", "model_name": "M"},
        }
    )
    settings = ConvertSettings.from_config(config)
    assert settings.ae_title == "GW1"
    assert settings.uid_root == "1.2.3"
    assert settings.station_name == "ROOM2"
    assert settings.modality == "XC"
    assert settings.study_window_seconds == 600.0
    assert settings.max_image_pixels == 100_000_000


@pytest.mark.parametrize("field", ["institution_name", "manufacturer", "station_name"])
def test_backslash_in_a_written_value_is_refused(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        make_settings(**{field: "A\\B"})


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        make_settings(max_image_pixels=0)
