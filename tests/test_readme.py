"""The README stays true: every setting of every service is in its configuration table."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from services.auth.settings import AuthSettings
from services.gateway.settings import GatewaySettings
from services.ingestor.settings import IngestorSettings
from services.recorder.settings import RecorderSettings
from services.simulator.settings import SimulatorSettings
from services.tools.settings import ToolSettings

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize(
    "settings_class",
    [
        AuthSettings,
        GatewaySettings,
        IngestorSettings,
        RecorderSettings,
        SimulatorSettings,
        ToolSettings,
    ],
)
def test_every_setting_is_documented(settings_class: type[BaseSettings]) -> None:
    text = README.read_text(encoding="utf-8")
    missing = [
        name.upper() for name in settings_class.model_fields if f"| `{name.upper()}` |" not in text
    ]
    assert missing == [], f"README's configuration table lacks {missing}"
