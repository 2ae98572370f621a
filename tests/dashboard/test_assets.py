"""The front-end files: vendored as recorded, loaded from the package, shipped in the wheel."""

from __future__ import annotations

import fnmatch
import hashlib
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "dashboard"
VENDOR = PACKAGE / "static" / "vendor"


def test_every_vendored_file_matches_the_sha256_recorded_in_vendored_md() -> None:
    table = (VENDOR / "VENDORED.md").read_text()
    recorded = dict(re.findall(r"^\| `([^`]+)`.*?\| `([0-9a-f]{64})` \|", table, re.MULTILINE))
    files = {p.name for p in VENDOR.iterdir() if p.suffix in (".js", ".css")}
    assert set(recorded) == files
    for name, digest in recorded.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    for licence in ("htmx-LICENSE", "uPlot-LICENSE"):
        assert (VENDOR / licence).stat().st_size > 0


def test_templates_load_scripts_and_styles_from_the_package_never_a_cdn() -> None:
    for template in (PACKAGE / "templates").glob("*.html"):
        sources = re.findall(r'(?:src|href)="([^"#]+)"', template.read_text())
        # Same-origin paths only: a CDN would break offline use and leak who views the page.
        assert all(s.startswith("/ui") for s in sources), (template.name, sources)
    base = (PACKAGE / "templates" / "base.html").read_text()
    for name in ("htmx-2.0.11.min.js", "uPlot-1.6.32.iife.min.js", "uPlot-1.6.32.min.css"):
        assert f"/ui/static/vendor/{name}" in base


def test_every_template_and_static_file_is_in_the_wheels_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["dashboard"]
    files = [
        str(p.relative_to(PACKAGE))
        for folder in ("templates", "static")
        for p in (PACKAGE / folder).rglob("*")
        if p.is_file()
    ]
    unshipped = [f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert files and not unshipped, unshipped
