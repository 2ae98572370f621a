"""The ClickHouse HTTP interface over chDB: the server clickhouse-connect talks to in tests.

No ClickHouse server can run on the test machines (no Docker engine, Debian's
package is 18.16), so ``ClickHouseEngine`` (sinks/clickhouse_sink.py) is tested
through this: a starlette app served by uvicorn that answers the part of the
HTTP protocol clickhouse-connect 1.x uses, and runs each statement in ONE chDB
session, the same ClickHouse engine the embedded store runs.

It runs in its own process (``ClickHouseHttp``, a context manager): chDB allows
one data folder per process ("EmbeddedServer already initialized with path
..."), and the tests also open chDB folders in-process.

What it speaks (read from clickhouse_connect/driver/_backend/http_sync.py,
httpcommon.py and insert.py):

- ``GET /ping`` and ``GET /``: ``Ok.``;
- ``POST /`` with the statement in the body, or in the ``query`` URL parameter
  followed by the body; an INSERT with inline data (clickhouse-connect sends
  ``INSERT INTO t (cols) FORMAT Native\\n`` then Native blocks) is run as
  ``INSERT INTO t (cols) SELECT * FROM file(<body>, <format>)``, so the data goes
  through the engine's own Native reader and the INSERT keeps its settings
  (dedup token, materialized views);
- the ``database`` URL parameter and ``X-ClickHouse-Database`` header (``USE``);
- every other URL parameter not reserved by the HTTP interface is a setting for
  that statement only (``SET``, then restored to the previous value);
- request bodies compressed with ``Content-Encoding`` lz4 (frame, as
  clickhouse-connect writes), zstd, gzip or deflate;
- response headers ``X-ClickHouse-Format``, ``X-ClickHouse-Timezone``,
  ``X-ClickHouse-Summary`` (read/written rows and bytes), ``X-ClickHouse-Query-Id``;
- ``GET /_meterline/received`` (test-only, no server has it): every statement's
  first 200 characters, the settings its request carried and the format of the
  data in its body (None without data), as JSON, so a test can
  check what went over the wire (``ClickHouseHttp.received()``);
- errors: status 404 / 400 / 403 / 500 by exception code, header
  ``X-ClickHouse-Exception-Code`` and the body ``Code: N. DB::Exception: ...``
  as the server writes it (clickhouse-connect puts it into its ``DatabaseError``).

What it does NOT emulate (a test relying on one of these tests the fixture, not
ClickHouse): users, passwords, roles and quotas (any credentials are accepted);
HTTP sessions (``session_id`` is ignored: every request shares one engine
session, serialised); concurrent queries (one at a time); replication,
clusters, ``ON CLUSTER`` and distributed tables; server defaults and
``users.xml`` profiles (chDB's defaults apply, e.g. ``async_insert`` and the
dedup window); compressed *responses* (it never compresses, which HTTP allows
whatever ``Accept-Encoding`` asked); progress headers
(``send_progress_in_http_headers``), ``wait_end_of_query`` buffering and
exceptions in the middle of a streamed response; server-side parameter binding
(``param_*``) and multipart form queries (refused with a clear 400); external
data tables; query cancellation on client close; TLS.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
import zlib
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.support.ports import free_ports

# Parameters the HTTP interface reads itself: never settings.
_RESERVED = {
    "query",
    "database",
    "default_format",
    "user",
    "password",
    "quota_key",
    "query_id",
    "session_id",
    "session_timeout",
    "session_check",
    "compress",
    "decompress",
    "buffer_size",
    "wait_end_of_query",
    "client_protocol_version",
    "enable_http_compression",
    "http_zlib_compression_level",
    "send_progress_in_http_headers",
    "http_headers_progress_interval_ms",
    "cancel_http_readonly_queries_on_client_close",
    "http_native_compression_disable_checksumming_on_decompress",
}
_FORMAT = re.compile(rb"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
_INLINE_DATA = re.compile(rb"^\s*(INSERT\b[^\n]*?)\bFORMAT\s+(\w+)[ \t]*\r?\n?", re.IGNORECASE)
_CODE = re.compile(r"Code: (\d+)\.")
_NAME = re.compile(r"\(([A-Z_]+)\)\s*$")
# ClickHouse's HTTP handler answers some exception codes with a 4xx status.
_STATUS = {60: 404, 81: 404, 62: 400, 47: 400, 46: 400, 164: 403, 497: 403, 516: 401}
_ENGINE_VERSION_SUFFIX = " (version chDB, meterline test front end)"


def _decompress(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "lz4":
        import lz4.frame  # type: ignore[import-untyped]

        # clickhouse-connect streams an insert as one LZ4 frame per block (4,096 rows),
        # concatenated: lz4.frame.decompress() reads only the FIRST frame, and every
        # row after it was silently lost here (a server reads them all).
        out = bytearray()
        rest = body
        while rest:
            frame = lz4.frame.LZ4FrameDecompressor()
            out += frame.decompress(rest)
            if not frame.eof:
                raise ValueError("a truncated LZ4 frame")
            rest = frame.unused_data
        return bytes(out)
    if encoding == "zstd":
        try:
            from compression import zstd  # type: ignore[import-not-found]
        except ImportError:
            from backports import zstd
        return bytes(zstd.decompress(body))
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    raise ValueError(f"Content-Encoding {encoding!r} is not emulated (lz4, zstd, gzip, deflate)")


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class ChdbBackend:
    """One chDB session; one statement at a time (the session is not thread safe)."""

    def __init__(self, path: Path) -> None:
        from chdb import session as chdb_session

        # chDB ships no annotations.
        self._session: Any = chdb_session.Session(str(path))  # type: ignore[no-untyped-call]
        self._spool = Path(tempfile.mkdtemp(prefix="ch-http-inserts-"))
        self._lock = threading.Lock()
        # What the requests carried, for ClickHouseHttp.received(): appended from the
        # threadpool, read from the event loop (list.append is atomic under the GIL).
        self.received: list[dict[str, Any]] = []

    def execute(
        self,
        sql: bytes,
        data: bytes | None,
        data_format: str,
        database: str,
        settings: dict[str, str],
        default_format: str = "TabSeparated",
    ) -> tuple[bytes, dict[str, int]]:
        self.received.append(
            {
                "statement": sql.decode("utf-8", "replace").strip()[:200],
                "settings": settings,
                "data_format": data_format if data is not None else None,
            }
        )
        with self._lock:
            s = self._session
            previous = self._settings_now(settings)
            if database:
                s.query(f"USE `{database}`")
            for name, value in settings.items():
                s.query(f"SET {name} = {_quote(value)}")
            try:
                if data is None:
                    result = s.query(sql.decode("utf-8"), default_format)
                else:
                    spool = self._spool / f"{uuid.uuid4().hex}.{data_format}"
                    spool.write_bytes(data)
                    try:
                        result = s.query(
                            f"{sql.decode('utf-8')} SELECT * FROM "
                            f"file({_quote(str(spool))}, {_quote(data_format)})"
                        )
                    finally:
                        spool.unlink()
            finally:
                for name, value in previous.items():
                    s.query(f"SET {name} = {_quote(value)}")
        out = bytes(result.bytes()) if result is not None else b""
        summary = {
            "read_rows": int(result.rows_read()) if result is not None else 0,
            "read_bytes": int(result.bytes_read()) if result is not None else 0,
        }
        return out, summary

    def _settings_now(self, settings: dict[str, str]) -> dict[str, str]:
        if not settings:
            return {}
        names = ", ".join(_quote(n) for n in settings)
        out = self._session.query(
            f"SELECT name, value FROM system.settings WHERE name IN ({names})", "TabSeparatedRaw"
        )
        now = dict(line.split("\t", 1) for line in bytes(out.bytes()).decode().splitlines())
        unknown = set(settings) - set(now)
        if unknown:
            raise ValueError(
                f"Code: 115. DB::Exception: Unknown setting {sorted(unknown)[0]}. (UNKNOWN_SETTING)"
            )
        return now


def create_app(backend: ChdbBackend) -> Any:
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    async def ping(_: Request) -> Response:
        return PlainTextResponse("Ok.\n")

    async def received(_: Request) -> Response:
        return JSONResponse(backend.received)

    async def query(request: Request) -> Response:
        params = request.query_params
        query_id = params.get("query_id") or str(uuid.uuid4())
        headers = {"X-ClickHouse-Query-Id": query_id, "X-ClickHouse-Timezone": "UTC"}
        if request.method == "GET" and "query" not in params:
            return PlainTextResponse("Ok.\n")
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            return _error(
                400,
                "Code: 1. DB::Exception: form queries are not emulated. (UNSUPPORTED_METHOD)",
                headers,
            )
        if any(k.startswith("param_") for k in params):
            return _error(
                400,
                "Code: 1. DB::Exception: server-side parameters are not emulated. "
                "(UNSUPPORTED_METHOD)",
                headers,
            )
        try:
            body = _decompress(await request.body(), request.headers.get("content-encoding", ""))
        except Exception as exc:
            return _error(
                400,
                f"Code: 271. DB::Exception: cannot decompress the body: {exc}. (CANNOT_DECOMPRESS)",
                headers,
            )
        text = (params["query"].encode() + b"\n" + body) if "query" in params else body
        data: bytes | None = None
        data_format = ""
        inline = _INLINE_DATA.match(text)
        if inline:
            sql, data_format, data = inline.group(1), inline.group(2).decode(), text[inline.end() :]
        else:
            sql = text
        database = params.get("database") or request.headers.get("x-clickhouse-database", "")
        settings = {k: v for k, v in params.items() if k not in _RESERVED}
        # The output format when the statement names none (TabSeparated on a server).
        default_format = (
            params.get("default_format")
            or request.headers.get("x-clickhouse-format")
            or "TabSeparated"
        )
        try:
            out, summary = await run_in_threadpool(
                backend.execute, sql, data, data_format, database, settings, default_format
            )
        except Exception as exc:
            message = str(exc)
            match = _CODE.search(message)
            code = int(match.group(1)) if match else 1001  # STD_EXCEPTION
            if not message.startswith("Code:"):
                message = f"Code: {code}. DB::Exception: {message}"
            return _error(_STATUS.get(code, 500), message, headers, code)
        fmt = _FORMAT.search(sql.rstrip())
        headers["X-ClickHouse-Format"] = fmt.group(1).decode() if fmt else default_format
        written = 0 if data is None else summary["read_rows"]
        headers["X-ClickHouse-Summary"] = (
            f'{{"read_rows":"{summary["read_rows"]}","read_bytes":"{summary["read_bytes"]}",'
            f'"written_rows":"{written}","written_bytes":"0","total_rows_to_read":"0",'
            f'"result_rows":"0","result_bytes":"0","elapsed_ns":"0"}}'
        )
        return Response(out, headers=headers, media_type="application/octet-stream")

    def _error(status: int, message: str, headers: dict[str, str], code: int = 1) -> Response:
        body = message.rstrip() + _ENGINE_VERSION_SUFFIX + "\n"
        return PlainTextResponse(
            body, status_code=status, headers={**headers, "X-ClickHouse-Exception-Code": str(code)}
        )

    return Starlette(
        routes=[
            Route("/ping", ping, methods=["GET", "HEAD"]),
            Route("/_meterline/received", received, methods=["GET"]),
            Route("/", query, methods=["GET", "POST"]),
        ]
    )


def _free_port() -> int:
    return free_ports(1)


class ClickHouseHttp:
    """The front end in a child process on a free port.

    ``url`` is what ``METERLINE_CLICKHOUSE_URL`` takes.
    """

    def __init__(self, data: Path, port: int | None = None) -> None:
        """``port``: a front end's that was stopped, to restart it where its clients point."""
        self.data = data
        self.port = port or _free_port()
        self.url = f"http://default:@127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ClickHouseHttp:
        root = Path(__file__).resolve().parents[2]
        log = (self.data.parent / f"{self.data.name}.log").open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.clickhouse_http", str(self.data), str(self.port)],
            cwd=root,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
        deadline = time.monotonic() + 60
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"ClickHouse HTTP front end exited: see {log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ping", timeout=1) as r:
                    if r.read() == b"Ok.\n":
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"ClickHouse HTTP front end did not answer /ping: see {log.name}"
                )
            time.sleep(0.05)

    def received(self) -> list[dict[str, Any]]:
        """Each statement the front end ran (first 200 characters) with its request's settings."""
        import json

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_meterline/received") as r:
            out: list[dict[str, Any]] = json.loads(r.read())
        return out

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("data", type=Path)
    parser.add_argument("port", type=int)
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    uvicorn.run(
        create_app(ChdbBackend(args.data)), host="127.0.0.1", port=args.port, log_level="warning"
    )


if __name__ == "__main__":
    main()
