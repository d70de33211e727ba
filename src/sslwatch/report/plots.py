"""The report's figures: matplotlib (Agg, no pyplot state) drawn to PNG ``data:`` URIs.

Every figure is a :class:`~matplotlib.figure.Figure` with fixed margins, encoded inline,
so the page needs no file beside it. matplotlib is imported when a figure is drawn (it is
in the ``report`` extra).
"""

from __future__ import annotations

import base64
import io
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from sslwatch.analysis import Correlation, Observation
from sslwatch.report.formatting import format_number, metric_arrow

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")
"""Line and marker colours, one per representation or run, in order."""


def _grid(
    n_panels: int,
    ncols: int,
    *,
    width: float = 3.4,
    height: float = 2.6,
    right_axis: bool = False,
    legend: bool = True,
) -> tuple[Figure, Any]:
    """A figure with ``n_panels`` axes in rows of ``ncols`` (unused ones hidden).

    Fixed margins in inches (room for titles, axis labels, a right-hand twin axis and a
    legend row on top) instead of a layout engine, which measures every text artist again
    at each draw.
    """
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, n_panels))
    nrows = max(1, math.ceil(n_panels / ncols))
    left, right = 0.75, 0.75 if right_axis else 0.2
    top, bottom = 0.45 + (0.35 if legend else 0.0), 0.5
    gap_x, gap_y = (1.45 if right_axis else 0.8), 0.85
    ax_w = width - gap_x * (ncols - 1) / ncols - (left + right) / ncols
    ax_h = height - gap_y * (nrows - 1) / nrows - (top + bottom) / nrows
    fig = Figure(figsize=(width * ncols, height * nrows))
    fig.subplots_adjust(
        left=left / (width * ncols),
        right=1 - right / (width * ncols),
        bottom=bottom / (height * nrows),
        top=1 - top / (height * nrows),
        wspace=gap_x / ax_w,
        hspace=gap_y / ax_h,
    )
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _style(ax: Axes, *, linear: bool = True, integer_x: bool = False) -> None:
    """Grid, small tick labels, and (on linear axes) a few readable ticks."""
    from matplotlib.ticker import MaxNLocator

    if linear:
        x_steps = [1, 2, 5, 10] if integer_x else None
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=integer_x, steps=x_steps))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
    ax.grid(True, alpha=0.3, linewidth=0.6)
    ax.tick_params(labelsize=8)
    ax.spines["top"].set_visible(False)


def _title(metric: str) -> str:
    return f"{metric} {metric_arrow(metric)}"


def _x_of(o: Observation) -> float | None:
    if o.epoch is not None:
        return float(o.epoch)
    return None if o.step is None else float(o.step)


def curves_png(
    run_obs: Sequence[Observation], reference: str | None, min_epoch: int | None
) -> str | None:
    """Every metric over training (one panel each), the reference beside it (grey)."""
    metrics = sorted({o.metric for o in run_obs}, key=lambda m: (m == reference, m))
    if not metrics:
        return None
    use_epoch = all(o.epoch is not None for o in run_obs)
    reps = sorted({o.representation for o in run_obs})
    rep_color = {r: COLORS[i % len(COLORS)] for i, r in enumerate(reps)}
    series: dict[tuple[str, str, str], list[Observation]] = defaultdict(list)
    for o in run_obs:
        if _x_of(o) is not None:
            series[(o.metric, o.representation, o.key)].append(o)
    ref_series = {
        (rep, key): sorted(items, key=lambda o: _x_of(o) or 0.0)
        for (m, rep, key), items in series.items()
        if m == reference
    }
    fig, axes = _grid(len(metrics), 4, right_axis=reference is not None)
    xlabel = "epoch" if use_epoch else "step (epoch when known)"
    for ax, metric in zip(axes, metrics, strict=False):
        keys = sorted(k for k in series if k[0] == metric)
        n_defs = len({k[2] for k in keys})
        for _, rep, key in keys:
            items = sorted(series[(metric, rep, key)], key=lambda o: _x_of(o) or 0.0)
            xs = np.array([_x_of(o) for o in items], dtype=float)
            ys = np.array([o.value for o in items], dtype=float)
            label = rep if n_defs == 1 else f"{rep} (N={items[0].definition.n})"
            ax.plot(xs, ys, "-o", color=rep_color[rep], ms=3, lw=1.4, label=label)
            initial = np.array(
                [
                    min_epoch is not None and o.epoch is not None and o.epoch < min_epoch
                    for o in items
                ]
            )
            if initial.any():
                ax.plot(xs[initial], ys[initial], "o", ms=6, mfc="white", color=rep_color[rep])
        ax.set_title(_title(metric), fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(metric, fontsize=8)
        _style(ax, integer_x=use_epoch)
        if reference is not None and metric != reference and ref_series:
            twin = ax.twinx()
            rep0 = "backbone" if any(r == "backbone" for r, _ in ref_series) else None
            for (rep, _key), items in sorted(ref_series.items()):
                if rep0 is not None and rep != rep0:
                    continue
                xs = np.array([_x_of(o) for o in items], dtype=float)
                ys = np.array([o.value for o in items], dtype=float)
                twin.plot(xs, ys, "--", color="0.45", lw=1.2)
            twin.set_ylabel(f"{reference} ({rep0 or 'all'})", fontsize=8, color="0.35")
            twin.tick_params(labelsize=7, colors="0.35")
            twin.spines["top"].set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        if reference is not None and ref_series:
            from matplotlib.lines import Line2D

            handles.append(Line2D([], [], ls="--", color="0.45"))
            labels.append(f"{reference} (right axis)")
        fig.legend(
            handles,
            labels,
            loc="upper center",
            ncols=len(labels),
            fontsize=9,
            frameon=False,
        )
    return _png(fig)


def scatter_png(corrs: Sequence[Correlation], reference: str) -> str | None:
    """Each metric against the reference, one colour per run, with the pooled Spearman."""
    if not corrs:
        return None
    fig, axes = _grid(len(corrs), 4, height=2.9)
    runs = sorted({r for c in corrs for r in c.point_runs})
    digests: dict[str, set[str]] = defaultdict(set)
    archs: dict[str, set[str]] = defaultdict(set)
    for c in corrs:
        digests[c.metric].add(c.digest)
        archs[c.metric].add(str(c.architecture))
    color = {r: COLORS[i % len(COLORS)] for i, r in enumerate(runs)}
    for ax, c in zip(axes, corrs, strict=False):
        xs = np.asarray(c.values, dtype=float)
        ys = np.asarray(c.reference_values, dtype=float)
        for run in runs:
            mask = np.array([r == run for r in c.point_runs])
            if mask.any():
                ax.scatter(xs[mask], ys[mask], s=14, color=color[run], label=run, alpha=0.85)
        s = c.stats.spearman
        sign = "" if c.oriented else " (raw)"
        parts = [f"N={c.definition.n}"] if len(digests[c.metric]) > 1 else []
        if len(archs[c.metric]) > 1 and c.architecture_bound:
            parts.append(str(c.architecture))
        defs = f" ({', '.join(parts)})" if parts else ""
        ax.set_title(
            f"{_title(c.metric)}{defs}\nρs{sign} = {format_number(s.value)} "
            f"[{format_number(s.low)}, {format_number(s.high)}]",
            fontsize=9,
        )
        ax.set_xlabel(f"{c.metric} ({c.representation})", fontsize=8)
        ax.set_ylabel(f"{reference} ({c.reference_representation})", fontsize=8)
        _style(ax)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(
            handles,
            labels,
            loc="upper center",
            ncols=min(len(labels), 6),
            fontsize=9,
            frameon=False,
        )
    return _png(fig)


def spectrum_png(spectra: Mapping[str, np.ndarray], run: str) -> str:
    """Singular values against their rank on log-log axes, one line per representation."""
    from sslwatch.metrics.spectrum import rankme_from_singular_values

    fig, axes = _grid(1, 1, width=5.0, height=3.4, legend=False)
    ax = axes[0]
    for i, (rep, sigma) in enumerate(sorted(spectra.items())):
        positive = sigma[sigma > 0]
        if positive.size == 0:
            continue
        rank = np.arange(1, positive.size + 1)
        value = rankme_from_singular_values(sigma)
        ax.loglog(
            rank,
            positive,
            "-",
            color=COLORS[i % len(COLORS)],
            lw=1.6,
            label=f"{rep} (RankMe {value:.4g})",
        )
    ax.set_xlabel("rank i", fontsize=9)
    ax.set_ylabel("singular value σᵢ", fontsize=9)
    ax.set_title(f"{run}: spectrum of the latest checkpoint", fontsize=10)
    _style(ax, linear=False)
    ax.legend(fontsize=8, frameon=False)
    return _png(fig)
