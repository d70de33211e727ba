"""Can this label-free metric be trusted here? Pure analysis over a tidy table of results.

Input is the tidy table of :meth:`sslwatch.offline.store.ResultStore.tidy_rows` (one mapping per
stored value, keys :data:`sslwatch.offline.store.TIDY_COLUMNS`; a pandas DataFrame with those
columns works too) or the :class:`Observation` list made from it by :func:`observations`.
Nothing here reads files, prints or logs.

What it computes:

* :func:`correlations`: Spearman, Kendall (tau-b) and Pearson correlation of every
  label-free metric with a label-based reference (default: linear-probe accuracy), within
  each run (scope ``"run"``), across all checkpoints of the runs of one method (scope
  ``"pooled"``) and across runs at their last common epoch (scope ``"final"``), each with a
  seeded percentile-bootstrap interval (:func:`correlate`).
* :func:`select_checkpoints` and :func:`select_runs`: the best checkpoint of each run and
  the best run of each group (e.g. method) by any metric with a direction, and the
  *regret* against the label oracle.
* The comparability guard (:func:`partition`): values are only compared when their
  :class:`~sslwatch.core.definitions.MetricDefinition` match (same N, D, parameters, dtype,
  revision) and, for metrics the registry marks as architecture-bound (clustering,
  ``cross_architecture=False``), only within one architecture.
* :func:`diagnose`: trend and collapse findings per run.
* :func:`analyze`: all of the above in one :class:`Analysis` (what ``sslwatch analyze``
  and ``sslwatch report`` show), with its :func:`verdict`.

Modules, in the order data flows: :mod:`~sslwatch.analysis.observations` (the table, the
registry's view of each metric, the shared conventions), ``comparability``,
``bootstrap`` (the statistics), ``correlation``, ``selection``, ``diagnosis``,
``verdict``, ``pipeline`` (:func:`analyze`) and ``summary`` (tables both front ends show).

Conventions (documented once, used everywhere):

* **Points.** A point is ``(run, source, path, epoch, step)``. A metric and its reference
  are paired at the same point; the reference is read on the same representation unless
  ``reference_representation`` names another one, or the representation has no
  reference values of its own: then the one holding the most is used (e.g. projector
  metrics against backbone accuracy), and ``Correlation.reference_representation`` says
  so.
* **Sources.** Online values (a training-time ``Monitor``: augmented batches, train-mode
  BatchNorm) and checkpoint values (``sslwatch sweep``) are never pooled: when a table
  holds both and no ``source`` is asked for, :func:`analyze` analyses the checkpoint
  values and the online ones apart (``Analysis.online``).
* **Initial points.** Points with ``epoch < min_epoch`` (default 1: epoch 0, the random
  initialisation) are left out of correlations and selection: RankMe of random features
  is high and would dominate both (Garrido et al. 2023 rank *trained* checkpoints).
  Points without an epoch are kept.
* **Non-finite values** (NaN, +-inf, e.g. the Gaussian entropy ``-inf`` of a singular
  covariance) are dropped before correlating and selecting.
* **Orientation.** A metric where lower is better is negated (``MetricSpec.oriented``),
  so a positive correlation always means "better metric, better accuracy". A metric
  with no direction (``higher_is_better=None``: entropy, alpha-ReQ) is correlated raw
  and marked ``direction="none"``; selection refuses it. Metrics missing from the
  registry count as having no direction and as architecture-bound (the cautious choice).
* **Comparability.** ``on_incomparable="raise"`` (default of the building blocks) raises
  :class:`IncomparableError` naming the differing fields (``"n: 2000 vs 25600"``);
  ``"split"`` (used by :func:`analyze`) computes each comparable group separately and
  records a :class:`ComparabilityWarning`. Values are never silently merged.
* **Bootstrap.** Resampling unit: checkpoints (points), with replacement; pooled
  correlations resample within each run (stratified), keeping every run's count. The
  interval is the percentile interval of the resampled statistics (Efron & Tibshirani
  1993, ch. 13); resamples where a statistic is undefined (constant input) are dropped,
  and the interval is NaN when more than half are. Checkpoints of one run are serially
  dependent, so intervals are optimistic; read them as "how stable is this estimate
  over these checkpoints", not as a population statement.
* **Ties** in selection: equal (oriented) values are broken towards the earliest point
  (lowest epoch, then step, then path, then source) for checkpoints and towards the
  lexicographically smallest run name for runs. The oracle uses the same rule.
* **Regret** is ``oracle - selected`` in the reference's oriented units (for accuracy:
  best accuracy among the candidates minus the accuracy of the selected one, >= 0). It
  is NaN when the selected candidate has no reference value. Candidates are the points
  (runs) that have a finite metric value; the oracle is the best of those by reference.
"""

from sslwatch.analysis.bootstrap import (
    STATISTICS,
    CorrelationEstimate,
    Estimate,
    correlate,
    resample_counts,
    resampled_correlations,
)
from sslwatch.analysis.comparability import (
    ComparabilityWarning,
    ComparableGroup,
    IncomparableError,
    partition,
)
from sslwatch.analysis.correlation import Correlation, correlations
from sslwatch.analysis.diagnosis import Finding, diagnose
from sslwatch.analysis.observations import REFERENCES, Observation, latest_values, observations
from sslwatch.analysis.pipeline import Analysis, analysis_to_dict, analyze
from sslwatch.analysis.selection import (
    CheckpointSelection,
    RunSelection,
    select_checkpoints,
    select_runs,
)
from sslwatch.analysis.summary import TrustRow, several_definitions, trust_rows
from sslwatch.analysis.verdict import TRUST_MIN_POINTS, KeepAdvice, MetricTrust, Verdict, verdict

__all__ = [
    "REFERENCES",
    "STATISTICS",
    "TRUST_MIN_POINTS",
    "Analysis",
    "CheckpointSelection",
    "ComparabilityWarning",
    "ComparableGroup",
    "Correlation",
    "CorrelationEstimate",
    "Estimate",
    "Finding",
    "IncomparableError",
    "KeepAdvice",
    "MetricTrust",
    "Observation",
    "RunSelection",
    "TrustRow",
    "Verdict",
    "analysis_to_dict",
    "analyze",
    "correlate",
    "correlations",
    "diagnose",
    "latest_values",
    "observations",
    "partition",
    "resample_counts",
    "resampled_correlations",
    "select_checkpoints",
    "select_runs",
    "several_definitions",
    "trust_rows",
    "verdict",
]
