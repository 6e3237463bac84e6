"""Alembic's environment for the directory: the URL and connection come from `service.profiles.database`."""

from alembic import context
from sqlalchemy import create_engine

from service.profiles.models import Base
from service.webhooks import models as _webhook_models  # noqa: F401 - its tables join Base.metadata

config = context.config


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    with create_engine(config.get_main_option("sqlalchemy.url")).connect() as connection:
        _run(connection)


def _run(connection) -> None:
    # render_as_batch: SQLite cannot ALTER most things; batch mode copies the table instead.
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations()
