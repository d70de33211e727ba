"""What a metric declaration says: :class:`MetricSpec`, and the registry type.

Each :class:`MetricSpec` names a metric, the pure function behind it, what it needs
(one embedding set, several views, labels), which way is better, whether its values may
be compared across architectures, and its default parameters. The declarations live in
:mod:`sslwatch.core.catalog`; :data:`sslwatch.core.registry.REGISTRY` holds them.

Metrics come in four *kinds*, which say what input the suite hands them:

- ``"spectrum"``: computed from the spectra of the second-moment matrix of *all*
  embeddings (streamable: a monitor accumulates the D x D moments batch by batch).
- ``"sample"``: computed on a fixed-size, seeded sample of the points (k-means,
  silhouette, entropy, collapse_std).
- ``"views"``: computed on q augmented views per sample, shape (n, q, d).
- ``"labels"``: label-based references (linear probe, kNN, AMI with the labels).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from sslwatch.core.context import MetricContext

Kind = Literal["spectrum", "sample", "views", "labels"]
Needs = Literal["embeddings", "views", "labels"]


@dataclass(frozen=True)
class Measurement:
    """A value with how it came out (e.g. the L2 a probe selected, its passes).

    A metric's ``compute`` may return this instead of a float; ``outcome`` is recorded
    in the value's :class:`~sslwatch.core.definitions.MetricDefinition` and never affects
    comparability.
    """

    value: float
    outcome: Mapping[str, Any]


ComputeFn = Callable[["MetricContext", Mapping[str, Any]], "float | Measurement"]
DefinitionParamsFn = Callable[["MetricContext"], Mapping[str, Any]]


@dataclass(frozen=True)
class MetricSpec:
    """Declaration of one metric.

    Attributes:
        name: unique registry name (also the column name in tables and logs).
        kind: what the suite hands the metric (see module docstring).
        needs: the input a user must provide: ``"embeddings"``, ``"views"`` or ``"labels"``.
        compute: ``compute(context, params) -> float`` (or a :class:`Measurement`); the
            orchestration layer's glue to the pure function in :mod:`sslwatch.metrics`.
        function: the public pure function that computes the metric on its own (a
            ``functools.partial`` when the metric fixes some of its arguments); see
            :attr:`function_name` for its text.
        higher_is_better: ``True``/``False``, or ``None`` when the metric has no
            universal direction (e.g. entropy falls in SimCLR runs but rises in SimSiam
            runs; alpha-ReQ is best near 1). Selection refuses ``None`` metrics.
        cross_architecture: whether values from different architectures may be
            compared (Xu et al. 2024: clustering metrics only compare runs of one
            architecture). Definitions must still match (same N, D, parameters).
        default: part of the default label-free set of :func:`sslwatch.evaluate`.
        params: default parameters; they are recorded in every value's definition.
        context_params: suite-level settings the value depends on (k, seed,
            sample_size), recorded in the definition too.
        definition_params: parameters that depend on the context in other ways (e.g.
            which input a value came from), as ``definition_params(context)``; recorded
            in the definition.
        uses_views: the metric reads the augmented views when they are given, so its
            N is the number of view samples then. Always true for the ``"views"`` kind
            (set here); true for a point metric that prefers views (cluster_agreement).
        description: one line for tables and reports.
        citation: short reference to the paper.
        revision: bumped whenever the formula changes, so old stored values stop
            comparing equal.
    """

    name: str
    kind: Kind
    needs: Needs
    compute: ComputeFn
    function: Callable[..., Any]
    higher_is_better: bool | None
    cross_architecture: bool
    default: bool
    description: str
    citation: str
    params: Mapping[str, Any] = field(default_factory=dict)
    context_params: tuple[str, ...] = ()
    definition_params: DefinitionParamsFn | None = None
    uses_views: bool = False
    revision: int = 1

    def __post_init__(self) -> None:
        if self.kind == "views":
            object.__setattr__(self, "uses_views", True)

    @property
    def function_name(self) -> str:
        """Dotted public name of :attr:`function`, with the arguments it fixes, e.g.
        ``"sslwatch.rankme"`` or ``"sslwatch.entropy(estimator='gaussian')"``."""
        fn = self.function
        if isinstance(fn, functools.partial):
            fixed = ", ".join(f"{k}={v!r}" for k, v in fn.keywords.items())
            return f"sslwatch.{fn.func.__name__}({fixed})"
        return f"sslwatch.{fn.__name__}"

    @property
    def label_based(self) -> bool:
        """True for references that need labels (not label-free)."""
        return self.needs == "labels"

    @property
    def direction(self) -> str:
        """``"higher"``, ``"lower"`` or ``"none"``: which way is better."""
        if self.higher_is_better is None:
            return "none"
        return "higher" if self.higher_is_better else "lower"

    def oriented(self, value: float) -> float:
        """Value flipped so that higher is better (NaN when there is no direction)."""
        if self.higher_is_better is None:
            return math.nan
        return value if self.higher_is_better else -value


class MetricRegistry(Mapping[str, MetricSpec]):
    """An ordered name -> :class:`MetricSpec` mapping with a few selectors."""

    def __init__(self, specs: Iterable[MetricSpec] = ()) -> None:
        self._specs: dict[str, MetricSpec] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: MetricSpec) -> MetricSpec:
        """Add ``spec``; a second metric with the same name is an error."""
        if spec.name in self._specs:
            raise ValueError(f"metric {spec.name!r} is already registered")
        self._specs[spec.name] = spec
        return spec

    def __getitem__(self, name: str) -> MetricSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise KeyError(
                f"unknown metric {name!r}; known metrics: {', '.join(self._specs)}"
            ) from None

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def select(
        self,
        names: Iterable[str] | None = None,
        *,
        has_views: bool = False,
        has_labels: bool = False,
    ) -> list[MetricSpec]:
        """Resolve a metric selection.

        With ``names=None`` returns the default label-free set, plus the view metrics
        when views are available and the label-based references when labels are.
        Explicit names are validated: an unknown name, or a metric whose input is
        missing, raises ``ValueError`` naming the metric and what it needs.
        """
        available = {"embeddings": True, "views": has_views, "labels": has_labels}
        if names is None:
            return [s for s in self._specs.values() if s.default and available[s.needs]]
        out = []
        for name in names:
            if name not in self._specs:
                raise ValueError(f"unknown metric {name!r}; choose from: {', '.join(self._specs)}")
            spec = self._specs[name]
            if spec.needs == "views" and not has_views:
                raise ValueError(
                    f"metric {name!r} needs augmented views (an (n, q, d) array); pass views="
                )
            if spec.needs == "labels" and not has_labels:
                raise ValueError(f"metric {name!r} needs labels; pass labels=")
            out.append(spec)
        return out


def check_params(
    params: Mapping[str, Mapping[str, Any]], specs: Iterable[MetricSpec]
) -> dict[str, dict[str, Any]]:
    """Validate per-metric parameter overrides against the selected ``specs``.

    Raises ``ValueError`` for a metric that is not selected or a parameter the metric
    does not take; returns plain dict copies.
    """
    selected = {s.name: s for s in specs}
    out: dict[str, dict[str, Any]] = {}
    for name, values in params.items():
        if name not in selected:
            raise ValueError(
                f"params given for {name!r}, which is not among the selected metrics "
                f"({', '.join(selected)})"
            )
        unknown = set(values) - set(selected[name].params)
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {sorted(unknown)} for metric {name!r}; it takes "
                f"{sorted(selected[name].params) or 'no parameters'}"
            )
        out[name] = dict(values)
    return out
