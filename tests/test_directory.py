"""The directory on real SQLite and PostgreSQL: rows, encryption at rest, claims, paging and migrations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
from alembic.script import ScriptDirectory
from cryptography.fernet import Fernet
from sqlalchemy import text

from service.crypto import FernetCodec
from service.profiles import ClaimHeld, Database, Directory
from service.profiles.database import REVISIONS, alembic_config
from tests.conftest import DATA_KEY

KEY = "PK-DIRECTORY-0001"


@pytest.fixture
def directory(database) -> Directory:
    return Directory(database, FernetCodec(DATA_KEY))


def test_ping_says_not_migrated_before_upgrade_and_ok_after(database_url):
    database = Database(database_url)
    assert database.ping() == "not_migrated"
    database.upgrade()
    database.upgrade()  # repeating is harmless
    assert database.ping() == "ok"
    database.engine.dispose()


def test_the_known_revisions_are_alembics_history_oldest_first():
    history = [revision.revision for revision in ScriptDirectory.from_config(alembic_config()).walk_revisions()]
    assert tuple(reversed(history)) == REVISIONS


def test_a_newer_schema_counts_as_ready_and_an_older_one_does_not(database_url):
    database = Database(database_url)
    database.upgrade()
    with database.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    assert database.ping() == "ok"  # a newer release's schema: old pods keep serving during a rollout
    with database.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = :old"), {"old": REVISIONS[0]})
    assert database.ping() == "not_migrated"
    database.engine.dispose()


def test_an_unreachable_database_is_failing_not_unmigrated():
    database = Database("postgresql://nobody@127.0.0.1:9/none", timeout=1)
    assert database.ping() == "failing"


def test_serving_and_health_checks_leave_alembic_out_of_the_workers(settings_env, database_url):
    """Alembic (and Mako) cost each worker ~11 MiB: only migrations load them."""
    code = (
        "import json, sys; from service import create_app; app = create_app(json.loads(sys.argv[1]));"
        "app.test_client().get('/readyz');"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))"
    )
    settings = json.dumps({**settings_env, "DATABASE_URL": database_url})
    result = subprocess.run(
        [sys.executable, "-c", code, settings],
        env={**os.environ, "ENV_FILE": os.devnull},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_put_then_get_round_trips_and_says_whether_the_user_was_new(directory):
    assert directory.put("alice", KEY, "api", ref_id="ref-1", title="Alice") is True
    assert directory.put("alice", KEY, "api", ref_id="ref-1", title="Alice again") is False
    record = directory.get("alice")
    assert (record.profile_key, record.ref_id, record.title, record.source, record.state) == (
        KEY,
        "ref-1",
        "Alice again",
        "api",
        "active",
    )
    assert record.created_at.tzinfo is not None and record.updated_at >= record.created_at
    assert directory.profile_key("alice") == KEY
    assert directory.get("nobody") is None and directory.profile_key("nobody") is None


def test_the_profile_key_is_stored_only_encrypted(directory, database):
    directory.put("alice", KEY, "api")
    with database.engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM users")).all()
    assert KEY not in repr(rows)
    assert KEY.encode() not in repr(rows).encode()


def test_keys_rotate_by_putting_a_new_one_first(database):
    Directory(database, FernetCodec(DATA_KEY)).put("alice", KEY, "api")
    new_key = Fernet.generate_key().decode()
    rotated = Directory(database, FernetCodec(f"{new_key},{DATA_KEY}"))
    assert rotated.profile_key("alice") == KEY
    assert rotated.reencrypt() == 1  # every row under the new key: the old key can go
    assert Directory(database, FernetCodec(new_key)).profile_key("alice") == KEY
    with pytest.raises(Exception) as raised:
        Directory(database, FernetCodec(DATA_KEY)).profile_key("alice")
    assert raised.value.code == "profile_key_unreadable" and KEY not in str(raised.value)


def test_reencrypt_never_overwrites_a_key_attached_while_it_runs(database, monkeypatch):
    """An operator attaching a new profile during the rotation (PUT /internal/v1/users/alice) keeps it: the rotation
    only rewrites a key that is still the one it read."""
    Directory(database, FernetCodec(DATA_KEY)).put("alice", KEY, "api")
    keys = f"{Fernet.generate_key().decode()},{DATA_KEY}"
    rotating = Directory(database, FernetCodec(keys))
    rotate = rotating.codec.rotate

    def attach_meanwhile(token: bytes) -> bytes:
        monkeypatch.setattr(rotating.codec, "rotate", rotate)
        Directory(database, FernetCodec(keys)).put("alice", "PK-ATTACHED-MEANWHILE", "api")  # another session
        return rotate(token)

    monkeypatch.setattr(rotating.codec, "rotate", attach_meanwhile)
    assert rotating.reencrypt() == 0  # nothing left to rewrite: the attached key is under the new key already
    assert rotating.profile_key("alice") == "PK-ATTACHED-MEANWHILE"


def test_one_claim_per_user_and_the_holder_completes_it(directory):
    claim = directory.claim("dave", "dave", lease_seconds=30)
    with pytest.raises(ClaimHeld) as held:
        directory.claim("dave", "dave", lease_seconds=30)
    assert held.value.record.state == "pending" and not held.value.record.lease_expired()
    assert directory.profile_key("dave") is None  # pending: no key yet
    with pytest.raises(ClaimHeld):
        directory.put("dave", KEY, "api")  # an attach never overwrites a creation in flight
    directory.complete(claim, KEY, "ref-dave", "dave", "auto")
    record = directory.get("dave")
    assert (record.state, record.profile_key, record.source, record.pending_reason) == ("active", KEY, "auto", None)
    assert directory.pending() == []


def test_a_late_creation_never_overwrites_a_key_attached_meanwhile(directory):
    directory.claim("hank", "hank", lease_seconds=0)  # stuck: the operator attaches the key from the dashboard
    directory.put("hank", KEY, "api")
    with pytest.raises(ClaimHeld):
        directory.put("hank", "PK-LATE-0002", "auto", replace=False)  # what the late creator's fallback does
    assert directory.profile_key("hank") == KEY


def test_a_released_claim_frees_the_user_and_an_expired_one_is_reported(directory):
    claim = directory.claim("erin", "erin", lease_seconds=30)
    directory.release(claim)
    assert directory.get("erin") is None
    directory.claim("erin", "erin", lease_seconds=0)
    [pending] = directory.pending()
    assert pending.user == "erin" and pending.lease_expired() and pending.pending_reason == "creating"
    assert directory.release_pending("erin") is True and directory.release_pending("erin") is False


def test_many_threads_claim_one_user_and_exactly_one_wins(directory):
    wins, held = [], []
    barrier = threading.Barrier(16)

    def claim():
        barrier.wait()
        try:
            wins.append(directory.claim("frank", "frank", lease_seconds=30))
        except ClaimHeld:
            held.append(1)

    threads = [threading.Thread(target=claim) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1 and len(held) == 15


def test_pages_walk_every_user_once_in_id_order(directory):
    users = [f"user{i:03d}" for i in range(25)]
    for user in reversed(users):
        directory.put(user, KEY, "api")
    seen, after = [], None
    while page := directory.page(10, after):
        seen += [record.user for record in page]
        after = page[-1].user
    assert seen == users


def test_linked_networks_are_kept_and_survive_an_attach_of_the_same_key(directory):
    from service.profiles.directory import utcnow

    directory.put("gina", KEY, "api")
    directory.set_networks("gina", ("facebook", "linkedin"), utcnow())
    directory.put("gina", KEY, "api", title="renamed")
    assert directory.get("gina").linked_networks == ("facebook", "linkedin")
    directory.put("gina", "PK-OTHER-0002", "api")
    assert directory.get("gina").linked_networks is None  # another profile: its networks are unknown


def test_the_migrations_build_exactly_the_tables_the_models_describe(database):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from service.profiles.models import Base
    from service.webhooks import models as _webhook_models  # noqa: F401 - its tables join Base.metadata

    with database.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
