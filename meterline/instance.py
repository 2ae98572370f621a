"""The running instance's address card, so other commands can reach it.

A chDB folder can be opened by one process only. ``meterline dev`` writes
``<data_dir>/instance.json`` (URL, pid, admin token; mode 0600) while it runs;
``meterline sql`` finds it and sends the query over HTTP with the token.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import orjson

FILE_NAME = "instance.json"


@dataclass(frozen=True)
class Instance:
    url: str
    pid: int
    token: str

    @staticmethod
    def new_token() -> str:
        return secrets.token_urlsafe(32)

    def write(self, data_dir: Path) -> Path:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = data_dir / FILE_NAME
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        # The mode above only applies to a new file: a card left at 0644 (by an
        # older version, or a copy) would hand the admin token, which reads every
        # tenant's rows, to any local account.
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(orjson.dumps({"url": self.url, "pid": self.pid, "token": self.token}))
        return path

    @staticmethod
    def remove(data_dir: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            (data_dir / FILE_NAME).unlink()

    @staticmethod
    def find(data_dir: Path) -> Instance | None:
        """The live instance using ``data_dir``, or None (stale files are ignored)."""
        try:
            card = orjson.loads((data_dir / FILE_NAME).read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None
        try:
            os.kill(int(card["pid"]), 0)
        except (ProcessLookupError, KeyError, ValueError):
            return None
        except PermissionError:
            pass  # alive, owned by someone else
        return Instance(str(card["url"]), int(card["pid"]), str(card["token"]))
