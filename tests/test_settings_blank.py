"""An empty variable means the setting's default, in every service's settings: compose passes a
variable left empty in `.env` (`GATEWAY_MAX_CONNECTIONS=`) as an empty string, which used to stop
some services at start and to mean an empty list (refusing every host) for others."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from services.auth.settings import AuthSettings
from services.gateway.settings import GatewaySettings
from services.ingestor.settings import IngestorSettings
from services.simulator.settings import SimulatorSettings
from services.tools.settings import ToolSettings
from shared.settings import CommonSettings

SETTINGS: list[type[CommonSettings]] = [
    CommonSettings,
    AuthSettings,
    GatewaySettings,
    IngestorSettings,
    SimulatorSettings,
    ToolSettings,
]
# Defaults drawn at random for each instance: compared by presence, not value.
RANDOM_DEFAULTS = {"gateway_replica_id", "ingestor_instance_id"}


def comparable(settings: CommonSettings) -> dict[str, object]:
    values = settings.model_dump(exclude=RANDOM_DEFAULTS)
    return {
        name: value.get_secret_value() if isinstance(value, SecretStr) else value
        for name, value in values.items()
    }


@pytest.mark.parametrize("settings_class", SETTINGS, ids=lambda cls: cls.__name__)
def test_every_empty_variable_means_the_default(
    settings_class: type[CommonSettings], monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.chdir(str(tmp_path))  # no .env of the developer's
    for name in settings_class.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    defaults = comparable(settings_class())
    for name in settings_class.model_fields:
        monkeypatch.setenv(name.upper(), "")
    assert comparable(settings_class()) == defaults
