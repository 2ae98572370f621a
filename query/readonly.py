"""Make ``/v1/sql`` read-only: one statement, parsed by the engine, run with ``readonly=1``.

Two guards, because neither is enough alone (both checked with chDB 4.4 / ClickHouse 26.9):

1. The engine's own parser. ``formatQuerySingleLine`` refuses a second statement
   (``SELECT 1; DROP TABLE ...`` would otherwise run both: chDB executes
   multi-statements) and returns the statement without comments, so nothing
   can hide behind ``--``. ``EXPLAIN AST`` of that canonical statement is then
   walked: only SELECT / WITH / SHOW / DESCRIBE / EXPLAIN roots, no nested
   INSERT or DDL, no ``SETTINGS`` clause, no ``INTO OUTFILE`` / ``FORMAT``, and
   only table functions that read nothing outside the database.
2. ``SETTINGS readonly=1`` appended to that canonical statement: the engine
   then refuses every write, DDL and most external table functions itself.
   Per query, never ``SET readonly`` on the session: the processor inserts
   through the same chDB session, and a session-wide readonly would stop
   billing. It does NOT stop ``INTO OUTFILE`` or the scalar ``file()`` function
   (both still work under readonly=1 in chDB), which is why guard 1 exists.

A refusal is a ``NotReadOnly`` naming the rule and the statement, function or
clause that broke it; ``query/sql.py`` answers it as a 400 problem document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

from core.errors import MeterlineError, StoreError
from sinks.base import quote
from sinks.reader import SqlReader

# Statements /v1/sql may run (the AST root's node type).
_ROOTS = ("SelectWithUnionQuery", "SelectIntersectExceptQuery", "DescribeQuery", "Explain")
# Query nodes allowed below the root: the parts of a SELECT. Any other ``...Query``
# node (InsertQuery under WITH or EXPLAIN, CreateQuery, ...) is refused.
_INNER_QUERIES = frozenset(
    {"SelectWithUnionQuery", "SelectQuery", "SelectIntersectExceptQuery", "TablesInSelectQuery"}
)
# Table functions that read only what the engine generates or the database holds.
# An allowlist: a table function added in a later engine version is refused until
# someone decides it is safe (chDB's Python() reads this process's memory).
SAFE_TABLE_FUNCTIONS = frozenset(
    {"numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series", "generateseries",
     "values", "view", "null"}
)  # fmt: skip
# Functions that reach outside the database wherever they appear: the scalar
# file() reads any file this process can read, even under readonly=1.
EXTERNAL_FUNCTIONS = frozenset(
    {"file", "url", "remote", "remotesecure", "s3", "s3cluster", "hdfs", "hdfscluster",
     "mysql", "postgresql", "jdbc", "odbc", "executable", "executablepool", "input",
     "cluster", "clusterallreplicas", "urlcluster", "filecluster", "azureblobstorage",
     "gcs", "mongodb", "redis", "sqlite", "python"}
)  # fmt: skip


class NotReadOnly(MeterlineError):
    """The statement is not a single read: ``code`` names the rule, the message the culprit."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class _Node:
    depth: int
    kind: str
    name: str  # the function's name for Function nodes, else ""
    width: int  # how many children the node says it has


def read_only_statement(sink: SqlReader, sql: str) -> str:
    """The statement to run for ``sql``: canonical, checked, with ``SETTINGS readonly=1``.

    Raises ``NotReadOnly`` for anything that is not one read of the database, and
    ``StoreError`` when the engine cannot parse it (a syntax error, told as is).
    """
    if not sql.strip():
        raise NotReadOnly("sql-empty", "the request body holds no SQL statement")
    try:
        # The user's text goes in as a string literal: parsed, never executed.
        canonical = str(
            orjson.loads(
                sink.query_raw(f"SELECT formatQuerySingleLine({quote(sql)})", "JSONCompactEachRow")
            )[0]
        )
    except StoreError as exc:
        if "Multi-statements are not allowed" in str(exc):
            raise NotReadOnly(
                "sql-not-single-statement",
                f"send exactly one statement: {_second_statement(exc)}",
            ) from None
        raise
    _check(canonical, _ast(sink, canonical))
    return f"{canonical} SETTINGS readonly = 1"


def _ast(sink: SqlReader, canonical: str) -> list[_Node]:
    # Safe to run: ``canonical`` is one statement (the engine said so above).
    out = sink.query_raw(f"EXPLAIN AST {canonical}", "JSONCompactEachRow")
    nodes = []
    for line in out.splitlines():
        text = orjson.loads(line)[0]
        stripped = text.lstrip(" ")
        words = stripped.split(" ")
        width = 0
        if stripped.endswith(")") and "(children " in stripped:
            width = int(stripped.rsplit("(children ", 1)[1].rstrip(")"))
        name = words[1] if words[0] == "Function" and len(words) > 1 else ""
        nodes.append(_Node(len(text) - len(stripped), words[0], name, width))
    return nodes


def _check(canonical: str, nodes: list[_Node]) -> None:
    root = nodes[0]
    if not (root.kind in _ROOTS or root.kind.startswith("Show")):
        raise NotReadOnly(
            "sql-not-read-only",
            f"only SELECT, WITH, SHOW, DESCRIBE and EXPLAIN are allowed, not {_verb(canonical)}",
        )
    if root.kind == "SelectWithUnionQuery" and root.width > 1:
        # The extra child of the root is the INTO OUTFILE path (a Literal) or the
        # FORMAT name (an Identifier); readonly=1 does not stop OUTFILE.
        extra = nodes[-1] if nodes[-1].depth == 1 else None
        if extra is not None and extra.kind == "Literal":
            raise NotReadOnly("sql-not-read-only", "INTO OUTFILE writes a file: not allowed")
        raise NotReadOnly(
            "sql-format-clause", "a FORMAT clause is not allowed: use the ?format= parameter"
        )
    parents: list[_Node] = []
    for node in nodes:
        del parents[node.depth :]
        parent = parents[-1] if parents else None
        if node.kind == "Set":
            raise NotReadOnly(
                "sql-settings-not-allowed",
                "SET and SETTINGS are not allowed: the endpoint fixes readonly=1 itself",
            )
        if node.depth > 0 and node.kind.endswith("Query") and node.kind not in _INNER_QUERIES:
            # WITH ... INSERT, EXPLAIN INSERT (EXPLAIN PIPELINE builds the insert).
            raise NotReadOnly(
                "sql-not-read-only",
                f"{node.kind.removesuffix('Query').upper()} inside the statement is not a read",
            )
        if parent is not None and parent.kind == "Explain" and node.kind not in _INNER_QUERIES:
            raise NotReadOnly("sql-not-read-only", "EXPLAIN is allowed for SELECT statements only")
        if node.kind == "Function":
            name = node.name.lower()
            table = parent is not None and parent.kind == "TableExpression"
            if name in EXTERNAL_FUNCTIONS or (table and name not in SAFE_TABLE_FUNCTIONS):
                raise NotReadOnly(
                    "sql-function-not-allowed",
                    f"{'table function' if table else 'function'} {node.name}() reads outside "
                    "the database or is not known to be safe: not allowed",
                )
        parents.append(node)


def _verb(canonical: str) -> str:
    return " ".join(canonical.split(" ", 2)[:2])


def _second_statement(exc: StoreError) -> str:
    """Where the engine found more than one statement, in its own words."""
    found = re.search(r"failed at (position \d+)[^:]*: (.*?)\.? ?: In scope", str(exc), re.S)
    if found is None:
        return "the engine found more than one"
    return f"another one starts at {found[1]}: {found[2].strip()!r}"
