"""Records from many machines: one JSON file per record beside its run's artifact, ingested into the store later.

Workers never open the SQLite store (WAL on a network filesystem corrupts it). A unit writes each row the pipeline
would have stored as ``<run_dir>/records/<name>.json`` with :func:`ddbench.io.atomic_file`, stamped with its
``created_at`` at write time, so ingesting a file twice upserts the same values: the store is unchanged the
second time. :class:`RecordDir` has the writing and lookup methods of :class:`ddbench.store.Store` that the
pipeline calls (``add_run``, ``add_evaluation``, ``add_metric``, ``add_teacher``, ``evaluation_hash``,
``evaluations``, ``metrics``), so a worker runs the pipeline's functions unchanged with a RecordDir as its store.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddbench.config import config_hash
from ddbench.errors import UserError
from ddbench.io import atomic_file

if TYPE_CHECKING:
    import pandas as pd

    from ddbench.store import Store

logger = logging.getLogger(__name__)

#: Format marker of a record file; other JSON files (run.json, manifests) are not records.
RECORD_FORMAT = 1
RECORDS_DIR = "records"
TABLES = ("runs", "evaluations", "metrics", "teachers")


def eval_record_name(protocol: str, protocol_version: int, arch: str, eval_seed: int, label_teachers: str) -> str:
    """File stem of one evaluation row: readable parts, and a hash of the whole key so no two rows collide."""
    digest = config_hash([protocol, int(protocol_version), arch, int(eval_seed), label_teachers], 8)
    safe = protocol.replace("/", "_").replace("@", "_")
    return f"eval-{safe}-v{protocol_version}-{arch}-s{eval_seed}-{digest}"


class RecordDir:
    """A run's ``records/`` folder, usable where the pipeline expects a :class:`~ddbench.store.Store`.

    Args:
        path: the folder (created on the first write).

    Attributes:
        written: the record files this object wrote, in order (the driver ingests exactly these).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.written: list[Path] = []

    def __repr__(self) -> str:
        return f"RecordDir({str(self.path)!r})"

    # -- writing (Store's interface) ------------------------------------------------------------------------------
    def _write(self, table: str, name: str, fields: dict[str, Any]) -> None:
        from ddbench.store import now

        fields = dict(fields)  # None values stay: an upsert must clear a failed row's error
        fields.setdefault("created_at", now())
        target = self.path / f"{name}.json"
        with atomic_file(target) as tmp:
            tmp.write_text(json.dumps({"format": RECORD_FORMAT, "table": table, "fields": fields}, default=str))
        self.written.append(target)

    def add_run(self, **fields: Any) -> None:
        self._write("runs", "run", fields)

    def add_evaluation(self, **fields: Any) -> None:
        name = eval_record_name(fields["protocol"], fields["protocol_version"], fields["arch"], fields["eval_seed"],
                                fields.get("label_teachers") or "")  # fmt: skip
        self._write("evaluations", name, fields)

    def add_metric(self, run_id: str, name: str, value: float | None, extra_json: Any = None) -> None:
        self._write("metrics", f"metric-{name}", {"run_id": run_id, "name": name, "value": value,
                                                  "extra_json": extra_json})  # fmt: skip

    def add_teacher(self, **fields: Any) -> None:
        self._write("teachers", f"teacher-{fields['teacher_id']}", fields)

    # -- reading --------------------------------------------------------------------------------------------------
    def records(self, table: str) -> list[dict[str, Any]]:
        """The fields of every record of ``table`` in this folder."""
        return [fields for t, fields in (read_record(p) for p in sorted(self.path.glob("*.json"))) if t == table]

    def evaluation_hash(
        self, run_id: str, arch: str, protocol: str, protocol_version: int, eval_seed: int, label_teachers: str = ""
    ) -> str | None:
        """As :meth:`ddbench.store.Store.evaluation_hash`: the protocol hash of a successful row, else None."""
        path = self.path / f"{eval_record_name(protocol, protocol_version, arch, eval_seed, label_teachers)}.json"
        if not path.is_file():
            return None
        _, fields = read_record(path)
        if fields.get("run_id") != run_id or fields.get("error") is not None:
            return None
        return fields.get("protocol_hash") or ""

    def has_evaluation(
        self, protocol: str, protocol_version: int, arch: str, eval_seed: int, protocol_hash: str
    ) -> bool:
        """Whether a successful row exists for this unit under any soft-label teachers (the dry run's question)."""
        want = (protocol, protocol_version, arch, eval_seed, None, protocol_hash)
        keys = ("protocol", "protocol_version", "arch", "eval_seed", "error", "protocol_hash")
        return any(tuple(f.get(k) for k in keys) == want for f in self.records("evaluations"))

    def _frame(self, table: str, run_id: str | None) -> pd.DataFrame:
        import pandas as pd

        rows = [r for r in self.records(table) if run_id is None or r.get("run_id") == run_id]
        return pd.DataFrame(rows)

    def evaluations(self, run_id: str | None = None) -> pd.DataFrame:
        frame = self._frame("evaluations", run_id)
        for col in ("protocol", "label_teachers", "arch"):
            if col not in frame:
                frame[col] = []
        return frame

    def metrics(self, run_id: str | None = None) -> pd.DataFrame:
        frame = self._frame("metrics", run_id)
        for col in ("name", "value"):
            if col not in frame:
                frame[col] = []
        return frame


def read_record(path: Path) -> tuple[str | None, dict[str, Any]]:
    """``(table, fields)`` of a record file; ``(None, {})`` for a JSON file that is not a record."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable record ({exc}); delete it and resubmit the sweep") from exc
    if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT or data.get("table") not in TABLES:
        return None, {}
    return data["table"], dict(data["fields"])


def find_records(root: str | Path) -> Iterator[Path]:
    """Record files under ``root`` (a ``records`` folder, a run, ``$DDBENCH_HOME`` or its ``runs``)."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"{root} does not exist; pass the folder a sweep wrote (e.g. $DDBENCH_HOME/runs)")
    folders = [root] if root.name == RECORDS_DIR else sorted(root.rglob(RECORDS_DIR))
    for folder in folders:
        if folder.is_dir():
            yield from sorted(folder.glob("*.json"))


_ADD = {"runs": "add_run", "evaluations": "add_evaluation", "teachers": "add_teacher"}


def ingest(paths: Iterable[Path], store: Store) -> int:
    """Upsert record files into ``store``; returns how many were records. Idempotent: same file, same row.

    Runs go first, so evaluation rows always find the run they are joined with.
    """
    order = {t: i for i, t in enumerate(TABLES)}
    records = [rec for rec in (read_record(Path(p)) for p in paths) if rec[0] is not None]
    for table, fields in sorted(records, key=lambda r: order[r[0]]):
        if table == "metrics":
            store.add_metric(fields["run_id"], fields["name"], fields.get("value"), fields.get("extra_json"))
        else:
            getattr(store, _ADD[table])(**fields)
    logger.debug("ingested %d record(s) into %s", len(records), store.path)
    return len(records)
