"""The database fixtures give real, working databases: a SQLite file and a PostgreSQL server of the suite's own.

Each test that takes `database_url` runs twice, as `[sqlite]` and `[postgres]`; the postgres ones get a fresh
database each (tests/conftest.py), which the last two tests here prove.
"""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, inspect, select
from sqlalchemy.engine import make_url

OWN_SERVER = not os.environ.get("DATABASE_URL")
SEEN: dict[str, str] = {}  # test name -> the postgres database it was given


def profiles_table(metadata: MetaData, name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True),
        Column("email", String(200), nullable=False, unique=True),
        Column("profile_key", String(100), nullable=False),
    )


def test_database_url_is_a_real_database_of_its_kind(database_url, request):
    kind = request.node.callspec.params["database_url"]
    engine = create_engine(database_url)
    # A unique table name, so the test also holds under DATABASE_URL, where the database is used as is.
    metadata = MetaData()
    table = profiles_table(metadata, f"profiles_{uuid.uuid4().hex[:8]}")
    try:
        assert engine.dialect.name == {"sqlite": "sqlite", "postgres": "postgresql"}[kind]
        if kind == "postgres":
            assert engine.dialect.driver == "psycopg"
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(
                insert(table),
                [
                    {"email": "alice@example.com", "profile_key": "PK-ALICE-0001"},
                    {"email": "bob@example.com", "profile_key": "PK-BOB-0002"},
                ],
            )
        with engine.connect() as conn:
            rows = conn.execute(select(table.c.email, table.c.profile_key).order_by(table.c.email)).all()
            assert [tuple(row) for row in rows] == [
                ("alice@example.com", "PK-ALICE-0001"),
                ("bob@example.com", "PK-BOB-0002"),
            ]
            if kind == "postgres":
                assert conn.exec_driver_sql("SELECT version()").scalar().startswith("PostgreSQL ")
        assert table.name in inspect(engine).get_table_names()
    finally:
        metadata.drop_all(engine)
        engine.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sqlite_database_is_a_file_in_tmp_path(database_url, tmp_path):
    assert database_url == f"sqlite:///{tmp_path}/ayrshare-connect.db"
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    finally:
        engine.dispose()
    assert (tmp_path / "ayrshare-connect.db").is_file()


def test_postgres_url_is_the_session_database(postgres_url):
    url = make_url(postgres_url)
    assert url.drivername == "postgresql+psycopg"
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT current_database()").scalar() == url.database
    finally:
        engine.dispose()


def _claim_database(database_url, request) -> str:
    if not OWN_SERVER:
        pytest.skip("DATABASE_URL is used as is: every test gets that same database")
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            name = conn.exec_driver_sql("SELECT current_database()").scalar()
            assert (
                conn.exec_driver_sql(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
                ).scalar()
                == 0
            ), "a per-test database starts empty"
            conn.exec_driver_sql("CREATE TABLE left_behind (test TEXT)")
            conn.exec_driver_sql("INSERT INTO left_behind VALUES (%s)", (request.node.name,))
    finally:
        engine.dispose()
    SEEN[request.node.name] = name
    return name


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_postgres_database_per_test_first(database_url, request):
    _claim_database(database_url, request)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_postgres_database_per_test_second(database_url, request):
    name = _claim_database(database_url, request)
    others = {other for test, other in SEEN.items() if test != request.node.name}
    assert others, "test_postgres_database_per_test_first ran first and recorded its database"
    assert name not in others
