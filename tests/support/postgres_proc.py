"""A throwaway PostgreSQL server for tests: the real binaries, a fresh cluster in a temp dir, gone when stopped.

    with PostgresServer() as server:
        engine = sqlalchemy.create_engine(server.url)     # postgresql+psycopg://postgres@127.0.0.1:<port>/ayrshare_test
        url = server.create_database("test_abc123")       # another empty database in the same server
        server.drop_database("test_abc123")

The binaries (initdb, pg_ctl, postgres) come from the first of: PATH, `pg_config --bindir`, the newest
/usr/lib/postgresql/*/bin (Debian's and Ubuntu's layout, which keeps them off PATH). The cluster trusts every local
connection, runs with fsync off, listens on a free port on 127.0.0.1 and keeps its unix socket in its own temp dir,
so it never meets a system cluster on 5432. initdb and postgres refuse to run as root: under root they run as the
`postgres` system user (made by Debian's package; else `nobody`), and the temp dir is handed to that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql

from tests.support.processes import _tail, free_port, wait_until

SUPERUSER = "postgres"
DEFAULT_DATABASE = "ayrshare_test"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15
BINARIES = ("initdb", "pg_ctl", "postgres")
UNPRIVILEGED_USERS = ("postgres", "nobody")
INSTALL_HINT = (
    "install PostgreSQL (apt-get install postgresql, or run make tools) or point DATABASE_URL at a PostgreSQL "
    "database the tests may write to"
)


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path)) or (0,)


def find_bindir() -> Path:
    """The first directory that holds all of initdb, pg_ctl and postgres (see the module docstring)."""
    candidates: list[str] = []
    for name in BINARIES:
        found = shutil.which(name)
        if found:
            candidates.append(os.path.dirname(os.path.realpath(found)))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True)
            candidates.append(result.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    candidates.extend(sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True))
    for candidate in candidates:
        if candidate and all(os.access(os.path.join(candidate, name), os.X_OK) for name in BINARIES):
            return Path(candidate)
    raise RuntimeError(
        f"PostgreSQL's initdb, pg_ctl and postgres were not found: the tests need a real one; {INSTALL_HINT}."
    )


def _unprivileged_user() -> pwd.struct_passwd:
    for name in UNPRIVILEGED_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError(
        "running as root, and PostgreSQL refuses root: no `postgres` or `nobody` user to run it as "
        f"({INSTALL_HINT}; Debian's package creates the `postgres` user)"
    )


def _reachable_by_others(path: str) -> bool:
    """Whether every directory from / down to `path` lets other users through (o+x)."""
    current = Path(path).resolve()
    return all(os.stat(directory).st_mode & stat.S_IXOTH for directory in (current, *current.parents))


class PostgresServer:
    """A PostgreSQL cluster of its own: `start()` initdb's and starts it, `stop()` stops it and deletes its files."""

    def __init__(self, port: int | None = None, database: str = DEFAULT_DATABASE):
        self.bindir = find_bindir()
        self.port = port or free_port()
        self.database = database
        self.user = SUPERUSER
        self.run_as: pwd.struct_passwd | None = _unprivileged_user() if os.geteuid() == 0 else None
        parent = tempfile.gettempdir()
        if self.run_as is not None and not _reachable_by_others(parent):
            parent = "/tmp"  # TMPDIR under /root, say: the postgres user could not reach its own files there
        self.workdir = Path(tempfile.mkdtemp(prefix="postgres-test-", dir=parent))
        self.datadir = self.workdir / "data"
        self.log_path = self.workdir / "postgres.log"
        self.proc: subprocess.Popen | None = None
        self._log = None
        if self.run_as is not None:
            os.chown(self.workdir, self.run_as.pw_uid, self.run_as.pw_gid)

    # ---- addresses ---------------------------------------------------------------------------------------------
    def url_for(self, database: str) -> str:
        """SQLAlchemy URL of `database` in this server."""
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the database made at start (`database`, default ayrshare_test)."""
        return self.url_for(self.database)

    def connect(self, database: str = "postgres") -> psycopg.Connection:
        """A plain psycopg connection (autocommit), for administration."""
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname=database, autocommit=True, connect_timeout=2
        )

    # ---- databases -----------------------------------------------------------------------------------------------
    def create_database(self, name: str) -> str:
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drops it even while connections to it are still open (they are ended)."""
        with self.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    # ---- lifecycle -----------------------------------------------------------------------------------------------
    def _run_kwargs(self) -> dict:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        kwargs: dict = {"env": env, "cwd": self.workdir}
        if self.run_as is not None:
            env.update(HOME=str(self.workdir), USER=self.run_as.pw_name, LOGNAME=self.run_as.pw_name)
            kwargs.update(user=self.run_as.pw_uid, group=self.run_as.pw_gid, extra_groups=[])
        return kwargs

    def start(self) -> PostgresServer:
        initdb = subprocess.run(
            [
                str(self.bindir / "initdb"),
                "--pgdata",
                str(self.datadir),
                "--username",
                self.user,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
            **self._run_kwargs(),
        )
        if initdb.returncode != 0:
            self.stop()
            raise RuntimeError(f"initdb failed ({initdb.returncode}):\n{initdb.stdout[-3000:]}")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                str(self.bindir / "postgres"),
                "-D",
                str(self.datadir),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.workdir}",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            **self._run_kwargs(),
        )
        try:
            wait_until(self._ready, START_TIMEOUT_SECONDS, interval=0.1, what=f"postgres on port {self.port}")
            with self.connect() as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
        except (TimeoutError, psycopg.Error) as error:
            log = _tail(self.log_path)
            self.stop()
            raise RuntimeError(f"postgres did not start ({error}):\n{log}") from None
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise TimeoutError(f"postgres exited with {self.proc.returncode}")  # not up, and never will be
        with self.connect() as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)

    def log_tail(self) -> str:
        return _tail(self.log_path)

    def stop(self) -> None:
        """Fast shutdown (pg_ctl stop -m fast), SIGKILL if it hangs; then the cluster's files are deleted."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                subprocess.run(
                    [str(self.bindir / "pg_ctl"), "stop", "-D", str(self.datadir), "-m", "fast", "-w"]
                    + ["-t", str(STOP_TIMEOUT_SECONDS)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=STOP_TIMEOUT_SECONDS + 10,
                    check=False,
                    **self._run_kwargs(),
                )
                self.proc.wait(5)
            except (OSError, subprocess.SubprocessError):
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
