"""Offline evaluation of a model's checkpoints (``sslwatch sweep``): what to compute when,
and where to store it.

A sweep takes a model factory, checkpoint files (globs), a data set and a results store
(:class:`~sslwatch.offline.store.ResultStore`). For every checkpoint it loads the weights
(:func:`~sslwatch.offline.checkpoints.load_model`), embeds the data once in eval mode at every
requested place of the model (:func:`~sslwatch.offline.embed.extract_embeddings`; each place is
one *representation*, e.g. ``backbone`` and ``projector``), scores each representation
separately with the registry's metrics (:func:`~sslwatch.core.evaluate.evaluate`) and stores all
values of the checkpoint in one transaction.

Conventions (also shown by ``sslwatch sweep --help``):

* **Checkpoints.** Every ``--checkpoints`` entry is a glob (``**`` allowed) or a file.
  Matches are made absolute (``os.path.abspath``; the store identifies a checkpoint by
  this path), de-duplicated and sorted in natural order (``epoch_2`` before ``epoch_10``).
  ``run``, ``epoch`` and ``step`` come from :func:`~sslwatch.offline.checkpoints.
  parse_checkpoint_path`: by default the run is the parent folder (the grandparent when
  the parent is a generic ``checkpoints``/``ckpt``/``weights`` folder) and epoch/step are
  the numbers after ``epoch``/``ep`` and ``step`` in the file name; ``--pattern`` (a regex
  with named groups ``run``, ``epoch``, ``step``, searched in the absolute path)
  overrides any of them. Without layers the representation is called ``output``.
* **Labels.** Label-free metrics use every sample of the data set. Label-based
  references (linear probe, kNN accuracy, label AMI) use only the samples whose label is
  known: all of them, or with ``labelled_fraction=f`` a seeded (``seed``),
  class-stratified fraction (:meth:`~sslwatch.offline.data.Dataset.with_labelled_fraction`).
  ``labels=None`` uses labels when the data set has any, ``False`` ignores them, ``True``
  requires them. k (k-means clusters) defaults to the number of classes when labels are
  used, else to 10 (:func:`sslwatch.core.context.resolve_k`), and is the same for every
  checkpoint.
* **Definitions.** Every stored value carries the metric definition it was computed with
  (:class:`~sslwatch.core.definitions.MetricDefinition`), extended by the sweep with
  ``data`` (the data set name) and ``bn_recalibrated`` (whether BatchNorm statistics were
  re-estimated on the data before embedding; with ``bn_batches``, the number of
  batches), plus ``views`` (q) and ``augment`` for values computed from augmented views
  and ``labelled_fraction`` for label-based references. Metric parameters win if a name
  ever collides. Embeddings are always float32 (:func:`~sslwatch.offline.embed.extract_embeddings`).
* **Skipping.** Before any model work the sweep lists, per checkpoint and
  representation, the definitions it would produce and skips a checkpoint whose every
  one is stored. A definition depends on N (known from the data), the embedding
  dimension D (known only after embedding), the dtype (float32), parameters, k, seed and
  sample size. D is read from the values already stored for that checkpoint and
  representation (all metrics of one representation share it), so a finished
  checkpoint is recognised without loading it, and a re-run of a finished sweep does no
  model work at all. (A checkpoint path is assumed to keep its architecture between
  sweeps; use a new database for a different model.) A checkpoint with anything missing
  is loaded and embedded once, and only the missing definitions are computed.
* **Failures.** A checkpoint that fails to load or to embed is recorded with its
  one-line error (:meth:`~sslwatch.offline.store.ResultStore.record_failure`) and the sweep goes
  on; values already stored are never removed. When single metrics fail
  (``evaluate(..., on_error="warn")``) or a representation cannot be scored (e.g.
  non-finite embeddings), the values that worked are stored and the point is marked
  failed with the error text. A failed checkpoint counts as failed in the summary and
  is retried (only what is missing) by the next sweep. Exit code of the command line:
  ``min(failed, 100)``; 0 when every checkpoint is ok or skipped (:func:`exit_code`).
* **Cost.** Every stored value keeps the seconds of its own computation
  (:attr:`~sslwatch.core.evaluate.MetricValue.seconds`; ``results.seconds``). After the values,
  a checkpoint's stage timings (``load``, ``recalibrate``, ``embed``, ``metrics``,
  ``store``, ``total``; ``total`` up to that write) and the seconds of each
  representation's shared steps (``kmeans[sample,seed=0]``, ``second_moments``,
  ``spectra``, ``probe_split``; summed when two passes share a step) are stored with
  :meth:`~sslwatch.offline.store.ResultStore.record_timings`, replacing the point's earlier
  ones. :attr:`CheckpointOutcome.costs` carries the same numbers to the caller.
* **Crash safety.** Each checkpoint's values are written in one transaction; a sweep
  killed at any moment (even by SIGKILL) loses only the checkpoint in flight, and the
  next run computes exactly what is missing.
* **Scale.** ``workers=N`` evaluates checkpoints in N processes (``spawn`` context) on
  one machine, each with its own store connection and ``max(1, cores // N)`` torch
  threads. ``shard=(i, n)`` (``--shard i/n``, 0 <= i < n) keeps checkpoints ``i, i + n,
  i + 2n, ...`` of the sorted list: give each job its own database file and join them
  with :func:`~sslwatch.offline.store.merge_stores` (``sslwatch merge``). In a SLURM job
  array ``--shard auto`` is this task's slice (:func:`slurm_array_shard`:
  ``SLURM_ARRAY_TASK_ID``, ``_COUNT``, ``_MIN``, ``_STEP``).
* **Distributed (torchrun).** With ``distributed=None`` (the command line) and the
  torchrun variables set (``RANK``, ``WORLD_SIZE`` > 1, ``LOCAL_RANK``), every rank runs
  the sweep: rank 0 first merges any shard stores an interrupted run left beside ``db``
  into it, then lists what ``db`` holds; the checkpoints not complete there are dealt
  round robin (rank r takes items r, r + W, ... of that list, so each is embedded by
  exactly one rank), and the digests ``db`` already holds for them are sent along so
  only the missing values are computed. Rank r works on ``cuda:LOCAL_RANK`` (modulo the
  GPUs) when CUDA is available and ``device`` is unset or ``"cuda"``, else as for one
  process, and writes its own store ``<db>.rank<r>-of-<W>`` (:func:`shard_store_path`),
  so no two processes write one SQLite file (which network file systems do not lock
  reliably). When every rank is done, rank 0 merges every ``<db>.rank*-of-*`` file into
  ``db`` (:func:`~sslwatch.offline.store.merge_stores`) and removes them, unless
  ``keep_shards`` or the merge failed or found conflicting values (then they are kept
  and :attr:`SweepSummary.merge_problem` says why; the exit code is at least 1). A
  crash at any moment loses at most the checkpoints in flight: the next run merges the
  leftover shards first and computes only what is missing. Ranks meet through a gloo
  process group (torchrun's rendezvous; gloo also when the ranks use GPUs, since only a
  plan, outcomes and barriers travel, no tensors), rather than by polling marker files:
  a rank that dies ends the others' wait at once instead of leaving rank 0 polling, and
  one rank's setup error is raised on every rank. ``db`` must be on a file system every
  rank sees. ``shard`` combines with torchrun (the ranks split the shard's slice);
  ``workers > 1`` does not.
* **Memory.** Without views, a checkpoint's embeddings are never held whole: batches
  from :func:`~sslwatch.offline.embed.iter_embeddings` are reduced as they come into
  float64 second moments over every row (spectrum metrics: RankMe, alpha-ReQ, stable
  rank, Gaussian entropy, ...) and the rows of the seeded point sample
  (:func:`~sslwatch.core.evaluate.sample_indices`, the rows ``evaluate`` would draw), so
  memory is O(D^2 + sample_size * D) per representation, flat in N, and values equal
  ``evaluate`` on the whole matrix (spectrum metrics to round-off, point metrics
  exactly). Every row is kept only when it is needed anyway: ``sample_size=None`` (or
  at least N) with point metrics, or N < D (spectra from the N x N Gram matrix). With
  ``views`` every sample's (q, D) views are held, as the views metrics need them.

The package, one module per concern: :mod:`~sslwatch.offline.sweep.config` (the options and
the checkpoint list), :mod:`~sslwatch.offline.sweep.outcomes` (outcomes, summary, exit code),
:mod:`~sslwatch.offline.sweep.prepare` (data, factory, metrics, passes, the skip rule),
:mod:`~sslwatch.offline.sweep.checkpoint` (one checkpoint: forward pass, streaming, scoring),
:mod:`~sslwatch.offline.sweep.workers` (the process pool),
:mod:`~sslwatch.offline.sweep.distributed` (torchrun) and :mod:`~sslwatch.offline.sweep.run`
(:func:`run_sweep`).
"""

from __future__ import annotations

from sslwatch.offline.sweep.config import (
    EMBEDDING_DTYPE as EMBEDDING_DTYPE,
)
from sslwatch.offline.sweep.config import (
    OUTPUT_REPRESENTATION as OUTPUT_REPRESENTATION,
)
from sslwatch.offline.sweep.config import (
    CheckpointTask,
    SweepConfig,
    SweepSetupError,
    find_checkpoints,
    parse_layers,
    parse_shard,
    plan_checkpoints,
    slurm_array_shard,
)
from sslwatch.offline.sweep.distributed import (
    DIST_TIMEOUT as DIST_TIMEOUT,
)
from sslwatch.offline.sweep.distributed import (
    TorchrunEnv,
    shard_store_path,
    shard_stores,
    torchrun_env,
)
from sslwatch.offline.sweep.outcomes import (
    MAX_EXIT_FAILURES,
    CheckpointOutcome,
    SweepSummary,
    exit_code,
)
from sslwatch.offline.sweep.prepare import expected_definitions
from sslwatch.offline.sweep.run import run_sweep

__all__ = [
    "MAX_EXIT_FAILURES",
    "CheckpointOutcome",
    "CheckpointTask",
    "SweepConfig",
    "SweepSetupError",
    "SweepSummary",
    "TorchrunEnv",
    "exit_code",
    "expected_definitions",
    "find_checkpoints",
    "parse_layers",
    "parse_shard",
    "plan_checkpoints",
    "run_sweep",
    "shard_store_path",
    "shard_stores",
    "slurm_array_shard",
    "torchrun_env",
]
