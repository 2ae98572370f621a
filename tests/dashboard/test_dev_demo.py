"""``meterline dev --demo``: names the dashboard, serves it, and redraws its table in place."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.stack import free_port


@pytest.mark.slow
def test_dev_demo_names_the_dashboard_url_serves_it_and_redraws_the_table_in_place(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERLINE_")}
    # A terminal as rich sees one (TTY_COMPATIBLE): Live redraws in place only there.
    env.update(METERLINE_DATA_DIR=str(tmp_path / "data"), TTY_COMPATIBLE="1", COLUMNS="120")
    proc = subprocess.Popen(
        [sys.executable, "-m", "meterline.cli", "dev", "--demo", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    output = bytearray()
    stdout = proc.stdout

    def drain() -> None:
        while chunk := stdout.read1(65536):
            output.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        redraws = 0
        while time.monotonic() < deadline:
            text = bytes(output).decode("utf-8", "replace")
            # Cursor-up sequences before a second frame: the table is redrawn over itself.
            redraws = text.count("usage_meters (demo, every 5 s)")
            if redraws >= 2:
                break
            time.sleep(0.5)
        text = bytes(output).decode("utf-8", "replace")
        assert f"dashboard: {url}/ui" in re.sub(r"\x1b\[[0-9;]*m", "", text)
        assert redraws >= 2, text[-2000:]
        assert re.search(r"\x1b\[\d*A", text), "no cursor-up: frames were appended, not redrawn"
        page = httpx.get(f"{url}/ui", timeout=30)
        assert page.status_code == 200
        assert 'id="spend-total"' in page.text  # open mode: no login, the demo's numbers
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(10)
