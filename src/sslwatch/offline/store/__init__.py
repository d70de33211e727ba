"""SQLite results store: one schema for offline sweeps and online (training-time) values.

Every value is stored with the :class:`~sslwatch.core.definitions.MetricDefinition` it was
computed with, at a *point* (a checkpoint file, or an online logging step) of a *run*.

The tables and their versions are described in :mod:`sslwatch.offline.store.schema`.

Conventions:

* **Point identity.** A point is identified by its ``path`` when it has one (stored
  verbatim, ``os.fspath``; pass one canonical form, e.g. absolute, consistently), otherwise
  by ``(source, epoch, step)``; at least one of path, epoch and step must be given.
* **NaN.** SQLite stores a bound NaN as NULL, so a NaN value is stored as ``value IS NULL``
  with ``is_nan = 1`` (a CHECK constraint ties the two; a NULL never means anything else).
  +-inf are stored as SQLite REALs. Reading back always gives the float that was stored,
  except that ``-0.0`` comes back as ``0.0`` (SQLite drops the sign of zero).
* **Idempotence, first value wins.** ``record_results`` uses ``INSERT OR IGNORE``: an
  already stored (point, representation, definition digest) keeps its first value; the
  repeat is ignored and not counted. A formula change bumps the metric's ``revision``,
  which changes the digest, so corrected values are new rows, never silent overwrites.
* **Definitions.** The digest excludes the sslwatch version (provenance only), so the
  ``definitions`` row keeps the first writer's JSON (without its outcome); each result
  row keeps the version that computed it and its outcome (``MetricDefinition.outcome``,
  e.g. the L2 a probe selected; provenance, never compared), and
  :meth:`ResultStore.tidy_rows` rebuilds the exact definition JSON.
* **Seconds.** ``results.seconds`` is the wall time the value's own computation took
  (:attr:`sslwatch.core.evaluate.MetricValue.seconds`; shared steps excluded), ``NULL`` when
  unknown (online values, stores written before schema version 2). ``point_timings``
  holds the cost of the latest evaluation of a point: stages (``load``, ``embed``,
  ...) under representation ``''`` and shared steps (``kmeans[sample,seed=0]``,
  ``second_moments``, ...) per representation; :meth:`ResultStore.record_timings`
  replaces a point's rows. Seconds are provenance: they never make two values differ
  (merging keeps the first value and fills in missing seconds, never a conflict).
* **Schema versions.** A store of an older schema version is upgraded in place when
  opened (one transaction; see :data:`_MIGRATIONS`): version 2 added ``results.seconds``,
  ``results.outcome`` and ``point_timings``. A store of a newer version is refused
  (:class:`SchemaVersionError`).
* **Status.** New points are ``pending``; ``record_results`` sets the status it is given
  (``ok`` clears the error); ``record_failure`` sets ``failed`` and the error and never
  deletes results.
* **Concurrency.** WAL journal, foreign keys on, a busy timeout, and every write in one
  ``BEGIN IMMEDIATE`` transaction: several processes on one machine (``--workers N``) may
  write the same file. One transaction per checkpoint result: a writer killed (even by
  SIGKILL) loses only the transaction in flight. WAL needs shared memory, i.e. one host:
  on a network filesystem (NFS, Lustre) give each SLURM array task its own file and join
  them with :func:`merge_stores`. Open one :class:`ResultStore` per process (a store
  refuses to be used from a forked child).
* **Exports.** :meth:`~ResultStore.export_csv` writes what ``pandas.DataFrame.to_csv
  (index=False)`` would: NaN and missing as an empty field, +-inf as ``inf``/``-inf``,
  floats in shortest round-trip form. :meth:`~ResultStore.export_json` writes a list of
  records using Python's ``json`` tokens ``NaN``, ``Infinity``, ``-Infinity`` (read back
  exactly by ``json.load`` and ``pandas.read_json``; strict RFC 8259 parsers reject them).
"""

from __future__ import annotations

from sslwatch.offline.store.damage import StoreDamagedError
from sslwatch.offline.store.doctor import (
    SalvageSummary,
    StoreCheck,
    TableSalvage,
    check_store,
    salvage_store,
)
from sslwatch.offline.store.merge import MergeConflict, MergeSummary, merge_stores
from sslwatch.offline.store.result_store import ResultStore
from sslwatch.offline.store.schema import (
    SCHEMA_VERSION,
    SOURCES,
    STATUSES,
    TIDY_COLUMNS,
    SchemaVersionError,
)
from sslwatch.offline.store.values import MERGE_RTOL

__all__ = [
    "MERGE_RTOL",
    "SCHEMA_VERSION",
    "SOURCES",
    "STATUSES",
    "TIDY_COLUMNS",
    "MergeConflict",
    "MergeSummary",
    "ResultStore",
    "SalvageSummary",
    "SchemaVersionError",
    "StoreCheck",
    "StoreDamagedError",
    "TableSalvage",
    "check_store",
    "merge_stores",
    "salvage_store",
]
