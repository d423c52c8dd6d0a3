"""Alembic: a fresh database upgraded to head matches the models exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from bot.db import create_engine, upgrade_database_async
from bot.schema import metadata
from tests.conftest import both_databases


@both_databases
async def test_migrations_reach_the_models(database_url):
    await upgrade_database_async(database_url)
    await upgrade_database_async(database_url)  # idempotent: nothing left to apply
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:

            def diff(sync_connection):
                context = MigrationContext.configure(sync_connection, opts={"compare_type": True})
                return compare_metadata(context, metadata)

            differences = await connection.run_sync(diff)
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
    finally:
        await engine.dispose()
    assert differences == []
    assert set(metadata.tables) <= tables


def test_the_schema_has_one_head():
    """Feature branches each add a revision; a merge revision must join them again, so that
    `alembic upgrade head` (singular) works for operators too."""
    from alembic.script import ScriptDirectory

    from bot.db import alembic_config

    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1, f"several heads, add a merge revision: {sorted(heads)}"
