"""Open mode (no API keys) listens only on loopback unless the operator says otherwise, loudly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import load_settings

OVERRIDE = "METERLINE_OPEN_MODE_ON_NETWORK"


def _clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERLINE_")}
    env.update(METERLINE_DATA_DIR=str(tmp_path / "data"), METERLINE_PORT="0", **extra)
    return env


def test_dev_on_every_interface_refuses_to_start_naming_the_override(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "meterline.cli", "dev"],
        env=_clean_env(tmp_path, METERLINE_HOST="0.0.0.0"),
        capture_output=True,
        text=True,
        timeout=120,  # a dev that started would serve until killed: a timeout fails the test
        cwd=tmp_path,
    )
    output = " ".join((result.stderr + result.stdout).split())  # rich wraps long lines
    assert result.returncode == 2, output
    assert "METERLINE_HOST='0.0.0.0' is not a loopback address" in output
    assert f"{OVERRIDE}=i-understand" in output
    assert not (tmp_path / "data").exists()  # refused before touching anything


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_open_mode_on_a_loopback_host_is_allowed(host: str) -> None:
    assert load_settings(open_mode=True, host=host).host == host


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.1.2.3", "meterline.internal"])
def test_open_mode_on_a_reachable_host_is_refused_naming_the_setting(host: str) -> None:
    with pytest.raises(ConfigError, match=f"METERLINE_HOST={host!r}.*{OVERRIDE}=i-understand"):
        load_settings(open_mode=True, host=host)


def test_the_override_allows_open_mode_on_the_network() -> None:
    settings = load_settings(open_mode=True, host="0.0.0.0", open_mode_on_network="i-understand")
    assert settings.host == "0.0.0.0"


def test_api_keys_make_any_host_fine_even_when_dev_asks_for_open_mode(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text("{}\n")
    assert load_settings(open_mode=True, host="0.0.0.0", api_keys_file=keys).host == "0.0.0.0"


@pytest.mark.parametrize("value", ["true", "1", "yes"])
def test_an_override_that_is_not_spelled_out_is_a_bad_setting(value: str) -> None:
    with pytest.raises(ConfigError, match=f"{OVERRIDE}: Input should be 'no' or 'i-understand'"):
        load_settings(open_mode=True, host="0.0.0.0", open_mode_on_network=value)
