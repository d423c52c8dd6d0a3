"""Hot-path transactions on the driver's own connection, without SQLAlchemy's per-call work.

Every check-in, lottery entry, vote, join and leave is one short transaction of a few small
statements. Through an `AsyncSession` each statement costs ~55 µs of CPU and the session's
begin and commit ~200 µs more, while sqlite3 or asyncpg need ~10 µs per statement
(bench/load.py, docs/load.md): SQLAlchemy's execution context, result objects and greenlet
hops, not the database, were most of the bot's time on these paths.

`DriverSession` runs the same SQLAlchemy Core statements (built once, `bot.db.prepared`) on
the pooled driver connection — sqlite3 through bot/sqlite_driver.py, or asyncpg — in one
transaction. Each statement is compiled once per database; parameters and rows go through
SQLAlchemy's own bind and result processors for their types, and Python-side column
defaults are applied, so what is written and read back is what an `AsyncSession` would write
and read. It offers the part of `AsyncSession` that Core code uses (`execute`, `scalar`,
`scalars`, results with `scalar()`, `first()`, …); ORM calls fail loudly. Errors from the
driver are raised as SQLAlchemy's (`IntegrityError`, `OperationalError`, …).

SQLite takes the write lock up front (`BEGIN IMMEDIATE`, as every session does, bot/db.py)
and waits for another process's lock without blocking the event loop.
"""

from __future__ import annotations

import collections
import functools
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.util import greenlet_spawn

from bot import sqlite_driver

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class CompiledStatement:
    """A statement as the driver takes it: SQL text, positional parameters, type processing."""

    sql: str
    names: tuple[str, ...]  # the parameter of each position
    binds: tuple[Processor, ...]  # bind processor per position
    defaults: tuple[tuple[str, Callable[[], Any]], ...]  # Python-side column defaults
    returns_rows: bool
    row: type | None  # a named tuple of the result columns
    results: tuple[Processor, ...]  # result processor per column
    expanding: bool  # has IN (…) parameters: the SQL is written out per execution
    processor_of: Callable[[str], Processor]

    def bind(
        self, compiled: Any, values: dict[str, Any], extracted: Any = None
    ) -> tuple[str, list[Any]]:
        """The SQL and its positional driver values for one execution.

        `extracted` are the literal values of a statement that shares this compiled form
        (SQLAlchemy's cache key), as its own execution passes them.
        """
        for name, default in self.defaults:
            if name not in values:
                values = {**values, name: default()}
        every = compiled.construct_params(values, extracted_parameters=extracted)
        sql, names, binds = self.sql, self.names, self.binds
        if self.expanding:  # IN (…): one placeholder per value, as SQLAlchemy writes it
            state = compiled.construct_expanded_state(every)
            sql, names, every = state.statement, state.positiontup, state.parameters
            binds = tuple(self.processor_of(name) for name in names)
        out = []
        for name, process in zip(names, binds, strict=True):
            value = every[name]
            out.append(process(value) if process is not None and value is not None else value)
        return sql, out

    def rows(self, raw: Sequence[Sequence[Any]]) -> list[Any]:
        assert self.row is not None
        make, processors = self.row._make, self.results  # type: ignore[attr-defined]
        if not any(processors):
            return [make(r) for r in raw]
        return [
            make(v if p is None or v is None else p(v) for p, v in zip(processors, r, strict=True))
            for r in raw
        ]


def _column_default(column: Any, *, on_update: bool) -> Callable[[], Any]:
    default = column.onupdate if on_update else column.default
    if default is None:
        raise NotImplementedError(f"no Python-side default for {column}")
    if default.is_scalar:
        value = default.arg
        return lambda: value
    if default.is_callable:
        function = default.arg  # SQLAlchemy wraps it to take an execution context
        return lambda: function(None)
    raise NotImplementedError(f"default of {column} is not a Python value or function")


def compile_statement(
    statement: Any, dialect: Dialect, keys: tuple[str, ...] = (), *, cache_key: Any = None
) -> tuple[Any, CompiledStatement]:
    """Compile `statement` for `dialect`; (SQLAlchemy's compiled form, the driver form).

    An INSERT or UPDATE is compiled for the parameter names given (`keys`), as SQLAlchemy
    does: the columns without a value take their defaults.
    """
    if statement.is_select and any(
        isinstance(column["type"], type) for column in statement.column_descriptions
    ):
        raise NotImplementedError(
            "an ORM statement (selecting or writing mapped objects) on the driver: select "
            "columns (Model.__table__.c) instead, or use an AsyncSession"
        )
    compiled = statement.compile(
        dialect=dialect,
        column_keys=list(keys) if keys else None,
        cache_key=cache_key,  # so statements of the same shape can reuse it with their values
    )
    sql = str(compiled)
    names = tuple(compiled.positiontup or ())

    @functools.cache
    def processor_of(name: str) -> Processor:
        # "x_2", the 2nd value of an expanded "x", is typed by it
        found = compiled.binds.get(name)
        bind = found if found is not None else compiled.binds[name.rsplit("_", 1)[0]]
        return bind.type.dialect_impl(dialect).bind_processor(dialect)

    binds = tuple(processor_of(name) for name in names)
    defaults = []
    for columns, on_update in (
        (compiled.insert_prefetch, False),
        (compiled.update_prefetch, True),
    ):
        for column in columns:
            if column.key not in compiled.binds:
                raise NotImplementedError(f"cannot place the default of {column}")
            defaults.append((column.key, _column_default(column, on_update=on_update)))
    # what the statement asks for (PostgreSQL adds RETURNING of a new row's id unasked)
    returns_rows = statement.is_select or bool(list(statement.exported_columns))
    row: type | None = None
    results: tuple[Processor, ...] = ()
    if returns_rows:
        columns = list(statement.exported_columns)
        row = collections.namedtuple("Row", [c.key for c in columns], rename=True)  # type: ignore[misc]
        results = tuple(
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns
        )
    expanding = any(b.expanding for b in compiled.binds.values())
    form = CompiledStatement(
        sql, names, binds, tuple(defaults), returns_rows, row, results, expanding, processor_of
    )
    return compiled, form


_PREPARED_FORMS: dict[tuple[int, str, tuple[str, ...]], tuple[Any, Any, CompiledStatement]] = {}
_OTHER_FORMS: collections.OrderedDict[Any, tuple[Any, CompiledStatement]] = (
    collections.OrderedDict()
)
OTHER_FORMS_KEPT = 500  # statements built per call (reports, commands), by SQLAlchemy cache key


def _compiled(statement: Any, dialect: Dialect, params: Any) -> tuple[Any, CompiledStatement, Any]:
    """(compiled form, driver form, extracted values) of `statement`, compiled once.

    Statements from `bot.db.prepared` are kept by identity. Others are kept by SQLAlchemy's
    cache key, as SQLAlchemy itself does, with their literal values passed at execution.
    """
    from bot.db import is_prepared

    keys: tuple[str, ...] = ()
    if statement.is_dml:
        first = params[0] if isinstance(params, list) else params
        keys = tuple(sorted(first or ()))
    key = (id(statement), dialect.name, keys)
    cached = _PREPARED_FORMS.get(key)
    if cached is not None and cached[0] is statement:
        return cached[1], cached[2], None
    if is_prepared(statement):
        compiled, form = compile_statement(statement, dialect, keys)
        _PREPARED_FORMS[key] = (statement, compiled, form)
        return compiled, form, None
    cache_key = statement._generate_cache_key()
    if cache_key is None:  # not cacheable: compiled for this execution only
        return (*compile_statement(statement, dialect, keys), None)
    other_key = (cache_key.key, dialect.name, keys)
    found = _OTHER_FORMS.get(other_key)
    if found is None:
        found = _OTHER_FORMS[other_key] = compile_statement(
            statement, dialect, keys, cache_key=cache_key
        )
        if len(_OTHER_FORMS) > OTHER_FORMS_KEPT:
            _OTHER_FORMS.popitem(last=False)
    else:
        _OTHER_FORMS.move_to_end(other_key)
    return found[0], found[1], cache_key.bindparams


class DriverResult:
    """The part of SQLAlchemy's `Result` the hot paths use, over rows already fetched."""

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def all(self) -> list[Any]:
        return list(self._rows)

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def one(self) -> Any:
        if len(self._rows) != 1:
            raise sa_exc.NoResultFound if not self._rows else sa_exc.MultipleResultsFound
        return self._rows[0]

    def one_or_none(self) -> Any:
        if len(self._rows) > 1:
            raise sa_exc.MultipleResultsFound
        return self._rows[0] if self._rows else None

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalar_one_or_none(self) -> Any:
        row = self.one_or_none()
        return None if row is None else row[0]

    def scalars(self) -> DriverResult:
        return DriverResult([r[0] for r in self._rows], self.rowcount)


class DriverSession:
    """One transaction on the driver connection; see the module's docstring."""

    def __init__(self, engine: AsyncEngine, driver: Any) -> None:
        self._engine = engine
        self._driver = driver
        self.dialect: Dialect = engine.dialect

    def get_bind(self) -> Any:  # as AsyncSession.get_bind: what `bot.db.prepared` asks
        return self._engine.sync_engine

    async def execute(self, statement: Any, params: Any = None) -> DriverResult:
        if isinstance(params, list) and not params:
            return DriverResult([], 0)  # executemany of nothing
        compiled, form, extracted = _compiled(statement, self.dialect, params)
        try:
            if isinstance(params, list):
                bound = [form.bind(compiled, p, extracted) for p in params]
                return await self._run_many(form, bound[0][0], [values for _, values in bound])
            return await self._run(form, *form.bind(compiled, params or {}, extracted))
        except (sa_exc.SQLAlchemyError, NotImplementedError):
            raise
        except Exception as error:
            raise _translate(error, form.sql, params) from error

    async def scalar(self, statement: Any, params: Any = None) -> Any:
        return (await self.execute(statement, params)).scalar()

    async def scalars(self, statement: Any, params: Any = None) -> DriverResult:
        return (await self.execute(statement, params)).scalars()

    def __getattr__(self, name: str) -> Any:
        raise NotImplementedError(
            f"DriverSession.{name}: the ORM is not available on the hot path; use a Core "
            "statement, or an AsyncSession (context.services.db) for this operation"
        )

    async def _run(self, form: CompiledStatement, sql: str, values: list[Any]) -> DriverResult:
        raise NotImplementedError

    async def _run_many(
        self, form: CompiledStatement, sql: str, rows: list[list[Any]]
    ) -> DriverResult:
        raise NotImplementedError

    async def _begin(self, *, write: bool) -> None:
        raise NotImplementedError

    async def _end(self, *, commit: bool) -> None:
        raise NotImplementedError


class SqliteDriverSession(DriverSession):
    async def _statement(self, method: str, sql: str, parameters: Any) -> Any:
        cursor = sqlite_driver.InlineCursor(self._driver)
        return await cursor._run_waiting(method, sql, parameters)

    async def _run(self, form: CompiledStatement, sql: str, values: list[Any]) -> DriverResult:
        cursor = await self._statement("execute", sql, values)
        rows = form.rows(cursor._rows) if form.returns_rows else []
        return DriverResult(rows, cursor.rowcount)

    async def _run_many(
        self, form: CompiledStatement, sql: str, rows: list[list[Any]]
    ) -> DriverResult:
        if form.returns_rows:
            raise NotImplementedError("executemany with RETURNING")
        cursor = await self._statement("executemany", sql, rows)
        return DriverResult([], cursor.rowcount)

    async def _begin(self, *, write: bool) -> None:
        await self._statement("execute", "BEGIN IMMEDIATE" if write else "BEGIN", ())

    async def _end(self, *, commit: bool) -> None:
        self._driver._conn.commit() if commit else self._driver._conn.rollback()


_STATUS_COUNT = re.compile(r"(\d+)$")


class AsyncpgDriverSession(DriverSession):
    _transaction: Any = None

    async def _run(self, form: CompiledStatement, sql: str, values: list[Any]) -> DriverResult:
        if form.returns_rows:
            rows = form.rows(await self._driver.fetch(sql, *values))
            return DriverResult(rows, len(rows))
        status = await self._driver.execute(sql, *values)
        found = _STATUS_COUNT.search(status or "")
        return DriverResult([], int(found.group(1)) if found else -1)

    async def _run_many(
        self, form: CompiledStatement, sql: str, rows: list[list[Any]]
    ) -> DriverResult:
        if form.returns_rows:
            raise NotImplementedError("executemany with RETURNING")
        await self._driver.executemany(sql, rows)
        return DriverResult([], -1)

    async def _begin(self, *, write: bool) -> None:
        self._transaction = self._driver.transaction(readonly=not write)
        await self._transaction.start()

    async def _end(self, *, commit: bool) -> None:
        await (self._transaction.commit() if commit else self._transaction.rollback())


def _translate(error: Exception, sql: str, params: Any) -> Exception:
    """A driver's exception as SQLAlchemy's, so callers catch the same types as with sessions."""
    name = type(error).__name__
    kind: type[sa_exc.DBAPIError] = sa_exc.DBAPIError
    if name == "IntegrityError" or "Violation" in name:
        kind = sa_exc.IntegrityError
    elif name in ("OperationalError", "DeadlockDetectedError", "SerializationError"):
        kind = sa_exc.OperationalError
    return kind(sql, params, error)


@asynccontextmanager
async def driver_session(
    engine: AsyncEngine, *, write: bool = True
) -> AsyncIterator[DriverSession]:
    """A transaction on a pooled driver connection: committed on success, else rolled back.

    `write=False` for reads: SQLite does not take the write lock up front, PostgreSQL runs a
    read-only transaction.
    """
    kind = SqliteDriverSession if engine.dialect.name == "sqlite" else AsyncpgDriverSession
    pooled = await engine.raw_connection()  # the pool's checkout, without a Connection
    try:
        session = kind(engine, pooled.driver_connection)
        try:
            await session._begin(write=write)
        except sa_exc.SQLAlchemyError:
            raise
        except Exception as error:
            raise _translate(error, "BEGIN", None) from error
        try:
            yield session
        except BaseException:
            await session._end(commit=False)
            raise
        try:
            await session._end(commit=True)
        except Exception as error:
            raise _translate(error, "COMMIT", None) from error
    finally:
        await greenlet_spawn(pooled.close)  # back to the pool (which may talk to the driver)


Executor = AsyncSession | DriverSession  # what hot-path functions accept as `session`
