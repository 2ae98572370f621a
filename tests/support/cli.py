"""Run the real ``meterline`` command against a data folder, as an operator would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def meterline_cli(
    data_dir: Path, *args: str, timeout_s: float = 300, **env: str
) -> subprocess.CompletedProcess[str]:
    """``meterline ARGS`` on the embedded log in ``data_dir`` (extra ``METERLINE_*`` in env)."""
    return subprocess.run(
        [sys.executable, "-m", "meterline.cli", *args],
        env={
            **os.environ,
            "METERLINE_DATA_DIR": str(data_dir),
            "METERLINE_LOG": "embedded",
            "COLUMNS": "200",  # rich tables: no wrapping mid-value in asserted output
            **env,
        },
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
