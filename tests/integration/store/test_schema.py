"""Opening: URLs, migrations to head (and a no-op the second time), SQLite pragmas, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from hypothesis import given
from hypothesis import strategies as st

from campaignd.errors import StoreError
from campaignd.queue.database import current_revision, head_revision, normalize_url, upgrade
from campaignd.queue.store import Store
from campaignd.queue.tables import metadata

from .factory import T0, OpenStore, seed


async def test_migrations_create_every_table_as_declared(store: Store) -> None:
    def inspect(conn: sa.Connection) -> tuple[set[str], list[object], str | None]:
        tables = set(sa.inspect(conn).get_table_names())
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
        return tables, diff, current_revision(conn)

    async with store.engine.connect() as conn:
        tables, diff, revision = await conn.run_sync(inspect)
    assert set(metadata.tables) | {"alembic_version"} == tables
    assert diff == [], f"migrations and tables.py disagree: {diff}"
    assert revision == head_revision()


async def test_waiting_rows_stay_out_of_the_partial_indexes_their_queries_still_use(
    tmp_path: Path,
) -> None:
    # Migration 0005: a queued row has no sent_at and no message_id, so it is in neither
    # index; the limiter's and the reply matcher's queries still search them.
    store = await Store.open("sqlite:///c.db", root=tmp_path)
    try:
        await seed(store, n=3)
        async with store.engine.connect() as conn:
            sql = dict((await conn.exec_driver_sql("SELECT name, sql FROM sqlite_master")).all())
            plans = [
                " ".join(
                    str(row[-1])
                    for row in await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + q, args)
                )
                for q, args in [
                    ("SELECT sent_at FROM messages WHERE service = ? AND sent_at > ?", ("s", 0)),
                    ("SELECT id FROM messages WHERE message_id IN (?, ?)", ("a", "<a>")),
                ]
            ]
    finally:
        await store.close()
    assert sql["ix_messages_service_sent_at"].endswith("WHERE sent_at IS NOT NULL")
    assert sql["ix_messages_message_id"].endswith("WHERE message_id IS NOT NULL")
    assert "ix_messages_service_sent_at" in plans[0]
    assert "ix_messages_message_id" in plans[1]


async def test_reopen_is_a_no_op_and_keeps_data(store: Store, open_store: OpenStore) -> None:
    keys = await seed(store, n=3)
    again: Store = await open_store()
    async with again.engine.begin() as conn:
        assert await conn.run_sync(upgrade) is None  # already at head: nothing ran
    assert (await again.counts("launch")).counts["queued"] == len(keys)
    assert await again.get_campaign("launch") is not None


async def test_sqlite_file_is_durable_and_strict(tmp_path: Path) -> None:
    store = await Store.open("sqlite:///state/sub/c.db", root=tmp_path)
    try:
        assert (tmp_path / "state" / "sub" / "c.db").is_file()
        async with store.engine.connect() as conn:
            pragma = {
                name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
        assert pragma == {
            "journal_mode": "wal",
            "synchronous": 2,  # FULL
            "foreign_keys": 1,
            "busy_timeout": 30000,
        }
        # Foreign keys are enforced: a message needs its recipient row.
        await store.ensure_campaign("c", state="sending")
        with pytest.raises(sa.exc.IntegrityError):
            await store.enqueue("c", 0, 1, [("nobody@example.com", "t")], due=T0)
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///state/c.db", "sqlite+aiosqlite:////cfg/state/c.db"),
        ("sqlite+aiosqlite:///c.db", "sqlite+aiosqlite:////cfg/c.db"),
        ("sqlite:////var/lib/campaignd/c.db", "sqlite+aiosqlite:////var/lib/campaignd/c.db"),
        (
            "postgresql://u:pw@db.example:5433/mail",
            "postgresql+asyncpg://u:pw@db.example:5433/mail",
        ),
        ("postgresql+asyncpg://u@h/d?ssl=require", "postgresql+asyncpg://u@h/d?ssl=require"),
    ],
)
def test_urls_are_normalized(url: str, expected: str) -> None:
    got = normalize_url(url, root=Path("/cfg"))
    assert got.render_as_string(hide_password=False) == expected


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("sqlite://", "names no file"),
        ("sqlite:///:memory:", "names no file"),
        ("mysql://u@h/d", "does not support"),
        ("postgresql+psycopg2://u:secret@h/d", "does not support"),
        ("not a url", "cannot be parsed"),
    ],
)
def test_bad_urls_say_what_to_use(url: str, says: str) -> None:
    with pytest.raises(StoreError, match=says) as err:
        normalize_url(url, root=Path("/cfg"))
    assert "secret" not in str(err.value)
    assert "sqlite:///" in str(err.value)


@given(st.lists(st.from_regex(r"[a-z0-9_.-]{1,12}", fullmatch=True), min_size=1, max_size=4))
def test_relative_sqlite_paths_resolve_under_the_root(parts: list[str]) -> None:
    rel = "/".join(parts)
    got = normalize_url(f"sqlite:///{rel}", root=Path("/cfg/root"))
    assert got.database == str(Path("/cfg/root") / rel)


async def test_unreachable_postgresql_names_the_url_without_password(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StoreError) as err:
        await Store.open(f"postgresql://u:hunter2@127.0.0.1:{port}/db", root=tmp_path)
    message = str(err.value)
    assert f"127.0.0.1:{port}/db" in message and "hunter2" not in message
    assert "CAMPAIGND_DATABASE" in message


async def test_a_schema_from_a_newer_campaignd_is_refused(
    store: Store, open_store: OpenStore
) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(sa.text("UPDATE alembic_version SET version_num = 'f00d'"))
    with pytest.raises(StoreError, match=r"revision f00d.*upgrade campaignd"):
        await open_store()
