"""Alembic environment for campaignd's schema.

``Store.open`` runs migrations programmatically and passes its connection in
``config.attributes["connection"]`` (already inside a transaction). From the command line —
for developers writing a new revision — the URL comes from ``$CAMPAIGND_DATABASE``:

    CAMPAIGND_DATABASE=sqlite:///dev.db alembic -c daemon/campaignd/queue/alembic.ini \
        revision --autogenerate -m "what changed"
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from alembic import context
from sqlalchemy.engine import Connection

from campaignd.queue.database import create_engine, normalize_url
from campaignd.queue.tables import metadata


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite alters tables by copying them; batch mode does that for every ALTER.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_from_url(url: str) -> None:
    engine = create_engine(normalize_url(url, root=Path.cwd()))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run)
    finally:
        await engine.dispose()


given = context.config.attributes.get("connection")
if given is not None:
    run(given)
elif context.is_offline_mode():
    raise SystemExit("campaignd migrations run online only (Store.open applies them)")
else:
    url = os.environ.get("CAMPAIGND_DATABASE") or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set CAMPAIGND_DATABASE to the database to compare against")
    asyncio.run(run_from_url(url))
