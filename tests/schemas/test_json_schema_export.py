"""The committed JSON Schemas are exactly what the pydantic models produce."""

from __future__ import annotations

from schemas.export import OUT, render, schemas


def test_committed_json_schemas_match_the_models() -> None:
    expected = schemas()
    committed = {path.name for path in OUT.glob("*.json")}
    assert committed == set(expected), "run: python -m schemas.export"
    for name, schema in expected.items():
        assert (OUT / name).read_bytes() == render(schema), (
            f"{name} is stale: python -m schemas.export"
        )
