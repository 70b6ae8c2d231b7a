"""The ingestor's settings: static keys, limits, bad values named clearly."""

from __future__ import annotations

import pytest

from services.ingestor.settings import IngestorSettings, parse_static_key
from shared.instruments import Mode
from shared.settings import SettingsError, load_settings


def test_static_keys_from_a_comma_separated_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGESTOR_STATIC_KEYS", "NSE_INDEX|Nifty 50:full, NSE_EQ|INE002A01018")
    settings = load_settings(IngestorSettings)
    assert settings.static_demand() == {
        "NSE_INDEX|Nifty 50": {Mode.FULL},
        "NSE_EQ|INE002A01018": {Mode.LTPC},
    }


def test_static_keys_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGESTOR_STATIC_KEYS", '["NSE_FO|45450:full_d30", "NSE_FO|45450:ltpc"]')
    settings = load_settings(IngestorSettings)
    assert settings.static_demand() == {"NSE_FO|45450": {Mode.FULL_D30, Mode.LTPC}}


@pytest.mark.parametrize(
    ("entry", "message"),
    [("nonsense:full", "not an instrument key"), ("NSE_EQ|A1:depth", "unknown mode 'depth'")],
)
def test_bad_static_keys_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, entry: str, message: str
) -> None:
    monkeypatch.setenv("INGESTOR_STATIC_KEYS", entry)
    with pytest.raises(SettingsError, match="INGESTOR_STATIC_KEYS") as caught:
        load_settings(IngestorSettings)
    assert message in str(caught.value)


def test_mode_limits_default_to_upstox_and_merge_overrides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = load_settings(IngestorSettings)
    assert settings.ingestor_mode_limits[Mode.LTPC] == 5000
    assert settings.ingestor_combined_mode_limits[Mode.FULL] == 1500
    monkeypatch.setenv("INGESTOR_MODE_LIMITS", '{"full": 3}')
    settings = load_settings(IngestorSettings)
    assert settings.ingestor_mode_limits == {
        Mode.LTPC: 5000,
        Mode.OPTION_GREEKS: 3000,
        Mode.FULL: 3,
        Mode.FULL_D30: 50,
    }


@pytest.mark.parametrize("value", ['{"depth": 3}', '{"full": -1}', "[1]"])
def test_bad_limits_are_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("INGESTOR_COMBINED_MODE_LIMITS", value)
    with pytest.raises(SettingsError, match="INGESTOR_COMBINED_MODE_LIMITS"):
        load_settings(IngestorSettings)


def test_backoff_bounds_are_checked() -> None:
    with pytest.raises(SettingsError, match="INGESTOR_BACKOFF_MAX"):
        load_settings(IngestorSettings, ingestor_backoff_initial=5, ingestor_backoff_max=1)


def test_instance_ids_differ_by_default() -> None:
    assert load_settings(IngestorSettings).ingestor_instance_id != (
        load_settings(IngestorSettings).ingestor_instance_id
    )


def test_parse_static_key_default_mode() -> None:
    assert parse_static_key("NSE_INDEX|Nifty Bank") == ("NSE_INDEX|Nifty Bank", Mode.LTPC)
