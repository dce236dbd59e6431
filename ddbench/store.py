"""The results store: one SQLite file of runs, evaluations, metrics and teachers that tables are built from.

Why SQLite: records from many processes (one per student × seed, possibly on several machines sharing a
filesystem with proper locking) land in one place without a server, and a table is one query away. The file lives
at ``$DDBENCH_HOME/results.sqlite`` unless a path (``--store``) is given.

Concurrency: the database runs in WAL mode (readers never block the writer), every connection waits up to
:data:`BUSY_TIMEOUT_S` for a lock instead of failing with "database is locked", and every write is one short
``BEGIN IMMEDIATE`` transaction (taking the write lock up front avoids the deadlock two deferred transactions hit
when both try to upgrade from read to write). A connection is opened per operation, so a :class:`Store` can be
shared across ``fork`` and threads. WAL needs a local filesystem; on NFS put the store on local disk.

Units: ``top1``, ``top5`` and ``best_top1`` are percentages (0–100), as papers print them.

Records are tidy: one ``evaluations`` row per (run, student arch, protocol, protocol version, eval seed), so a
table is a group-by and a pivot (:mod:`ddbench.tables`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddbench.config import canonical_json
from ddbench.io import home, lock
from ddbench.version import __version__

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
BUSY_TIMEOUT_S = 120.0

# Column name → SQL type. The order is the column order of the table.
RUN_COLUMNS: dict[str, str] = {
    "run_id": "TEXT PRIMARY KEY",
    "method": "TEXT NOT NULL",
    "method_version": "INTEGER",
    "dataset": "TEXT NOT NULL",
    "class_hash": "TEXT",
    "ipc": "INTEGER",
    "distill_seed": "INTEGER",
    "config_json": "TEXT",
    "config_hash": "TEXT",
    "teacher_id": "TEXT",
    "teacher_sha256": "TEXT",
    "artifact_path": "TEXT",
    "ddbench_version": "TEXT",
    "git_sha": "TEXT",
    "torch_version": "TEXT",
    "device": "TEXT",
    "wall_time_s": "REAL",
    "peak_mem_mb": "REAL",
    "created_at": "TEXT",
    "status": "TEXT",
}
EVALUATION_COLUMNS: dict[str, str] = {
    "run_id": "TEXT NOT NULL",
    "arch": "TEXT NOT NULL",
    "protocol": "TEXT NOT NULL",
    "protocol_version": "INTEGER NOT NULL",
    "eval_seed": "INTEGER NOT NULL",
    "top1": "REAL",
    "top5": "REAL",
    "best_top1": "REAL",
    "wall_time_s": "REAL",
    "peak_mem_mb": "REAL",
    "error": "TEXT",
    "created_at": "TEXT",
    "extra_json": "TEXT",
    "protocol_hash": "TEXT",
    "label_teachers": "TEXT NOT NULL DEFAULT ''",
}
#: One row per (run, student, protocol version, seed, online soft-label teachers): the teachers are part of the recipe.
EVALUATION_KEY = ("run_id", "arch", "protocol", "protocol_version", "eval_seed", "label_teachers")
METRIC_COLUMNS: dict[str, str] = {
    "run_id": "TEXT NOT NULL",
    "name": "TEXT NOT NULL",
    "value": "REAL",
    "extra_json": "TEXT",
}
METRIC_KEY = ("run_id", "name")
TEACHER_COLUMNS: dict[str, str] = {
    "teacher_id": "TEXT PRIMARY KEY",
    "dataset": "TEXT NOT NULL",
    "arch": "TEXT NOT NULL",
    "class_hash": "TEXT",
    "recipe_hash": "TEXT",
    "sha256": "TEXT",
    "test_top1": "REAL",
    "path": "TEXT",
    "created_at": "TEXT",
}

#: Run columns joined onto evaluation and metric rows (run columns that clash are prefixed with ``run_``).
_RUN_JOIN = (
    "method",
    "method_version",
    "dataset",
    "class_hash",
    "ipc",
    "distill_seed",
    "config_hash",
    "teacher_id",
    "teacher_sha256",
    "artifact_path",
    "ddbench_version",
    "git_sha",
    "torch_version",
    "status",
)
_RUN_JOIN_CLASH = ("device", "wall_time_s", "peak_mem_mb", "created_at")


def _create_sql() -> list[str]:
    def table(name: str, columns: Mapping[str, str], unique: tuple[str, ...] = ()) -> str:
        cols = [f"{c} {t}" for c, t in columns.items()]
        if unique:
            cols.append(f"UNIQUE ({', '.join(unique)})")
        return f"CREATE TABLE IF NOT EXISTS {name} ({', '.join(cols)})"

    return [
        table("runs", RUN_COLUMNS),
        table("evaluations", EVALUATION_COLUMNS, EVALUATION_KEY),
        table("metrics", METRIC_COLUMNS, METRIC_KEY),
        table("teachers", TEACHER_COLUMNS),
        "CREATE INDEX IF NOT EXISTS runs_dataset ON runs (dataset, method, ipc)",
        "CREATE INDEX IF NOT EXISTS evaluations_run ON evaluations (run_id)",
    ]


def now() -> str:
    """UTC timestamp in ISO 8601 with seconds, the format of every ``created_at``."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _sql_value(column: str, value: Any) -> Any:
    """JSON-encode ``*_json`` columns given as objects; pass scalars through (numpy scalars become Python)."""
    if column.endswith("_json") and value is not None and not isinstance(value, str):
        return canonical_json(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


SQLITE_MAGIC = b"SQLite format 3\x00"


def _looks_like_sqlite(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC


def _migrate_v1(conn: sqlite3.Connection) -> None:
    """Schema 1 → 2: evaluations gain ``protocol_hash`` and ``label_teachers`` (the latter joins the unique key).

    Both are read back from each row's ``extra_json``, where schema 1 already recorded them.
    """
    cols = [r[1] for r in conn.execute("PRAGMA table_info(evaluations)")]
    if "label_teachers" in cols:
        return
    conn.execute("ALTER TABLE evaluations RENAME TO evaluations_v1")
    conn.execute("DROP INDEX IF EXISTS evaluations_run")
    for sql in _create_sql():
        conn.execute(sql)
    old = ", ".join(c for c in cols)
    conn.execute(
        f"INSERT OR REPLACE INTO evaluations ({old}, protocol_hash, label_teachers) SELECT {old}, "
        "json_extract(extra_json, '$.protocol_hash'), "
        "COALESCE((SELECT group_concat(value, ',') FROM json_each(extra_json, '$.teachers')), '') FROM evaluations_v1"
    )
    conn.execute("DROP TABLE evaluations_v1")
    logger.info("migrated the results store to schema 2 (evaluation rows keyed by their soft-label teachers)")


class Store:
    """Handle on one results database; cheap to create, safe to use from several processes at once.

    Args:
        path: the SQLite file; ``None`` means ``$DDBENCH_HOME/results.sqlite``.
        read_only: open without creating, migrating or locking anything (``ddbench table`` on a read-only
            ``$DDBENCH_HOME``); writes then fail with a one-line error.

    A file that is not a readable SQLite database is reported in one line naming it and never overwritten: every
    number can be rebuilt from the artifacts, so the fix is to move it aside and rerun (or ``ddbench ingest``).
    """

    def __init__(self, path: str | Path | None = None, *, read_only: bool = False) -> None:
        self.path = Path(path).expanduser() if path is not None else home() / "results.sqlite"
        self.read_only = read_only
        self._initialised = False

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # -- connections ----------------------------------------------------------------------------------------------
    def _error(self, exc: sqlite3.Error) -> Exception:
        from ddbench.errors import UserError

        text = str(exc)
        if isinstance(exc, sqlite3.OperationalError) and ("readonly" in text or "unable to open" in text):
            return UserError(
                f"{self.path} cannot be written ({text}); this command records results, so point DDBENCH_HOME "
                "(or --store) at a writable folder"
            )
        if isinstance(exc, sqlite3.OperationalError) and "locked" in text:
            return exc
        return UserError(
            f"{self.path} is not a readable SQLite database ({text}); move it aside (it is never overwritten) and "
            "rerun: the cached artifacts rebuild every row"
        )

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            try:
                conn.execute("PRAGMA schema_version").fetchone()
            except sqlite3.OperationalError:  # a WAL file in a folder we cannot write: read it as immutable
                conn.close()
                conn = sqlite3.connect(f"file:{self.path}?immutable=1", uri=True, isolation_level=None)
            return conn
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA synchronous = NORMAL")  # durable enough in WAL mode, and much faster
        return conn

    def _init(self) -> None:
        """Create the file, switch it to WAL, create or migrate the tables, once per process per path.

        Switching the journal mode needs an exclusive lock that the busy handler does not always wait for, so
        initialisation runs under a file lock instead of racing other processes.
        """
        if self._initialised:
            return
        from ddbench.errors import UserError

        if self.read_only:
            if not self.path.is_file():
                raise UserError(f"no results store at {self.path}; run `ddbench run` first or pass --store")
            with self._guard():
                conn = self._connect()
                try:
                    version = conn.execute("PRAGMA user_version").fetchone()[0]
                finally:
                    conn.close()
            if version != SCHEMA_VERSION:
                raise UserError(
                    f"{self.path} has schema {version}, this ddbench reads {SCHEMA_VERSION}; run a writing command "
                    "(ddbench run/eval) once to migrate it, or use the matching ddbench version"
                )
            self._initialised = True
            return
        if self.path.is_file() and self.path.stat().st_size and not _looks_like_sqlite(self.path):
            raise self._error(sqlite3.DatabaseError("file is not a database"))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock_cm = lock(self.path)
            lock_cm.__enter__()
        except OSError as exc:
            raise UserError(
                f"cannot write beside {self.path} ({exc.strerror}); point DDBENCH_HOME (or --store) at a writable "
                "folder"
            ) from exc
        try:
            with self._guard():
                conn = self._connect()
                try:
                    if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                        conn.execute("PRAGMA journal_mode = WAL")
                    conn.execute("BEGIN IMMEDIATE")
                    version = conn.execute("PRAGMA user_version").fetchone()[0]
                    if version > SCHEMA_VERSION:
                        conn.execute("ROLLBACK")
                        raise UserError(
                            f"{self.path} was written by a newer ddbench (schema {version} > {SCHEMA_VERSION}); upgrade"
                        )
                    if version == 1:
                        _migrate_v1(conn)
                    for sql in _create_sql():
                        conn.execute(sql)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    conn.execute("COMMIT")
                finally:
                    conn.close()
        finally:
            lock_cm.__exit__(None, None, None)
        self._initialised = True

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction that takes the write lock up front."""
        if self.read_only:
            from ddbench.errors import UserError

            raise UserError(f"{self.path} is opened read-only; this command needs to write results")
        self._init()
        with self._guard():
            conn = self._connect()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            finally:
                conn.close()

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        self._init()
        with self._guard():
            conn = self._connect()
            try:
                yield conn
            finally:
                conn.close()

    # -- writing --------------------------------------------------------------------------------------------------
    def _upsert(self, table: str, columns: Mapping[str, str], key: tuple[str, ...], fields: Mapping[str, Any]) -> None:
        unknown = sorted(set(fields) - set(columns))
        if unknown:
            raise ValueError(f"{table}: unknown field(s) {', '.join(unknown)}; known: {', '.join(columns)}")
        missing = [k for k in key if fields.get(k) is None]
        if missing:
            raise ValueError(f"{table}: missing key field(s) {', '.join(missing)}")
        row = {c: _sql_value(c, v) for c, v in fields.items()}
        if "created_at" in columns:
            row.setdefault("created_at", now())
        names = list(row)
        updates = [n for n in names if n not in key] or [key[0]]
        sql = (
            f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {', '.join(f'{n} = excluded.{n}' for n in updates)}"
        )
        with self._write() as conn:
            conn.execute(sql, [row[n] for n in names])

    def add_run(self, **fields: Any) -> None:
        """Insert or update a run (keyed by ``run_id``); a resumed run updates its row, never duplicates it.

        ``config_json`` may be given as a dict (stored as canonical JSON). ``status`` defaults to ``done``.
        """
        fields.setdefault("status", "done")
        self._upsert("runs", RUN_COLUMNS, ("run_id",), fields)

    def add_evaluation(self, **fields: Any) -> None:
        """Insert or replace one evaluation row, keyed by (run_id, arch, protocol, protocol_version, eval_seed).

        A failed evaluation is recorded too (``error`` set, ``top1`` None), so tables can show ``err`` rather
        than silently dropping the cell. ``extra_json`` may be given as a dict. ``label_teachers`` (comma-joined
        online teacher ids, '' for none) is part of the key: another soft-label teacher is another recipe.
        """
        fields.setdefault("label_teachers", "")
        self._upsert("evaluations", EVALUATION_COLUMNS, EVALUATION_KEY, fields)

    def has_evaluation(
        self,
        run_id: str,
        arch: str,
        protocol: str,
        protocol_version: int,
        eval_seed: int,
        label_teachers: str = "",
        protocol_hash: str | None = None,
    ) -> bool:
        """Whether a successful row exists (with ``protocol_hash``, only one made under that exact protocol).

        A failed row does not count, so re-running retries failures; a row made under an edited protocol file of
        the same version does not count either (its numbers belong to another recipe).
        """
        found = self.evaluation_hash(run_id, arch, protocol, protocol_version, eval_seed, label_teachers)
        return found is not None and (protocol_hash is None or found == protocol_hash)

    def evaluation_hash(
        self, run_id: str, arch: str, protocol: str, protocol_version: int, eval_seed: int, label_teachers: str = ""
    ) -> str | None:
        """The protocol hash of the successful row for this unit ('' when unrecorded), or None without one."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT COALESCE(protocol_hash, '') FROM evaluations WHERE run_id = ? AND arch = ? AND protocol = ? "
                "AND protocol_version = ? AND eval_seed = ? AND label_teachers = ? AND error IS NULL",
                (run_id, arch, protocol, int(protocol_version), int(eval_seed), label_teachers),
            ).fetchone()
        return None if row is None else row[0]

    def add_metric(self, run_id: str, name: str, value: float | None, extra_json: Any = None) -> None:
        """Insert or replace a per-run metric (e.g. ``feat_dist_mean`` of the DWA diversity measure).

        ``extra_json`` is a JSON string or an object to encode (which teacher or arch the metric used).
        """
        fields = {"run_id": run_id, "name": name, "value": value, "extra_json": extra_json}
        self._upsert("metrics", METRIC_COLUMNS, METRIC_KEY, fields)

    def add_teacher(self, **fields: Any) -> None:
        """Insert or update a teacher row (``Teacher.record()`` gives the fields)."""
        self._upsert("teachers", TEACHER_COLUMNS, ("teacher_id",), fields)

    # -- reading --------------------------------------------------------------------------------------------------
    def _frame(self, sql: str, params: list[Any]) -> pd.DataFrame:
        import pandas as pd

        with self._read() as conn:
            cur = conn.execute(sql, params)
            columns = [d[0] for d in cur.description]
            rows = cur.fetchall()
        return pd.DataFrame(rows, columns=columns)

    @staticmethod
    def _where(filters: Mapping[str, Any], alias: Mapping[str, str]) -> tuple[str, list[Any]]:
        """``WHERE`` clause from ``column=value`` (or a list/tuple/set of values); None values are ignored."""
        clauses: list[str] = []
        params: list[Any] = []
        for name, value in filters.items():
            if value is None:
                continue
            if name not in alias:
                raise ValueError(f"cannot filter on {name!r}; known: {', '.join(sorted(alias))}")
            if isinstance(value, (list, tuple, set, frozenset)):
                values = list(value)
                if not values:
                    clauses.append("0")
                    continue
                clauses.append(f"{alias[name]} IN ({', '.join('?' * len(values))})")
                params.extend(_sql_value(name, v) for v in values)
            else:
                clauses.append(f"{alias[name]} = ?")
                params.append(_sql_value(name, value))
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def evaluations(self, **filters: Any) -> pd.DataFrame:
        """Evaluation rows joined with their run (method, dataset, ipc, teacher, ...), filtered by column values.

        Filters may name any evaluation column or joined run column (``dataset="cifar10", ipc=[10, 50]``).
        Run columns that clash with evaluation columns come back as ``run_device``, ``run_wall_time_s``, ...
        A row whose run was never added keeps None in the run columns.
        """
        alias = {c: f"e.{c}" for c in EVALUATION_COLUMNS}
        alias.update({c: f"r.{c}" for c in _RUN_JOIN})
        alias.update({f"run_{c}": f"r.{c}" for c in _RUN_JOIN_CLASH})
        select = ", ".join(f"{a} AS {n}" for n, a in alias.items())
        where, params = self._where(filters, alias)
        sql = f"SELECT {select} FROM evaluations e LEFT JOIN runs r ON r.run_id = e.run_id{where} ORDER BY e.rowid"
        frame = self._frame(sql, params)
        frame["eval_teachers"] = [_eval_teachers(x) for x in frame["extra_json"]] if len(frame) else []
        return frame

    def metrics(self, **filters: Any) -> pd.DataFrame:
        """Metric rows joined with their run (method, dataset, ipc, distill_seed, ...), filtered like evaluations."""
        alias = {c: f"m.{c}" for c in METRIC_COLUMNS}
        alias.update({c: f"r.{c}" for c in _RUN_JOIN})
        select = ", ".join(f"{a} AS {n}" for n, a in alias.items())
        where, params = self._where(filters, alias)
        sql = f"SELECT {select} FROM metrics m LEFT JOIN runs r ON r.run_id = m.run_id{where} ORDER BY m.rowid"
        return self._frame(sql, params)

    def runs(self, **filters: Any) -> pd.DataFrame:
        """Run rows, filtered by column values."""
        where, params = self._where(filters, {c: c for c in RUN_COLUMNS})
        return self._frame(f"SELECT * FROM runs{where} ORDER BY rowid", params)

    def teachers(self, **filters: Any) -> pd.DataFrame:
        """Teacher rows, filtered by column values."""
        where, params = self._where(filters, {c: c for c in TEACHER_COLUMNS})
        return self._frame(f"SELECT * FROM teachers{where} ORDER BY rowid", params)


# -- provenance ---------------------------------------------------------------------------------------------------
_GIT_SHA: dict[str, str | None] = {}


def _eval_teachers(extra_json: str | None) -> str | None:
    """The online teacher ids an evaluation row used (recorded in its extra_json), comma-joined, or None."""
    if not isinstance(extra_json, str) or not extra_json:
        return None
    try:
        teachers = json.loads(extra_json).get("teachers")
    except (ValueError, AttributeError):
        return None
    return ", ".join(teachers) if teachers else None


def git_sha(path: str | Path | None = None, timeout: float = 5.0) -> str | None:
    """The commit of the git checkout holding ``path`` (default: this package), ``+dirty`` if it has changes.

    None when git is missing, the package is not a checkout (an installed wheel), or git does not answer within
    ``timeout`` seconds: provenance must never hang or fail a run.
    """
    where = str(Path(path) if path is not None else Path(__file__).resolve().parent)
    if where in _GIT_SHA:
        return _GIT_SHA[where]
    sha: str | None = None
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=timeout, check=False
        )
        if out.returncode == 0 and out.stdout.strip():
            sha = out.stdout.strip()
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=where,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            if dirty.returncode == 0 and dirty.stdout.strip():
                sha += "+dirty"
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("git sha unavailable: %s", exc)
    _GIT_SHA[where] = sha
    return sha


def environment(device: str | None = None) -> dict[str, Any]:
    """Provenance of the process producing a record: versions, git sha, device name and host.

    Args:
        device: the torch device string used (``cuda:0``); its marketing name is looked up for CUDA devices.
    """
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and torch.cuda.is_available():
        device_name = torch.cuda.get_device_name(torch.device(device))
    else:
        device_name = platform.processor() or platform.machine() or "cpu"
    return {
        "ddbench_version": __version__,
        "git_sha": git_sha(),
        "torch_version": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device,
        "device_name": device_name,
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "cmdline": " ".join(json.dumps(a) if " " in a else a for a in sys.argv),
    }
