"""One self-contained HTML report of a results store (``sslwatch report DB -o report.html``).

The page needs nothing but itself: CSS is inline, every plot is a PNG drawn with
matplotlib (Agg, no pyplot state) and embedded as a ``data:`` URI, there is no script and
no external reference, so it opens offline and makes no network request.

It shows, from :func:`sslwatch.analysis.analyze`:

* how far each label-free metric can be trusted: correlations with the label-based
  reference, with bootstrap intervals, pooled per method and within each run;
* which run and which checkpoint each metric would select, and the regret against the
  label oracle;
* diagnoses (collapse, falling RankMe) and comparability warnings;
* per run, the curves of every metric over training beside the reference accuracy, the
  latest values, and the singular-value spectrum of the latest checkpoint on log-log
  axes when one is given (the store keeps numbers, not spectra: pass ``spectra=``);
* scatter plots of each metric against the reference, per method and representation;
* the metric definitions every number was computed with.

Every number in a table carries its exact value in a ``data-value`` attribute
(``repr(float)``), so tools (and the tests) can read the page back without rounding.
"""

from __future__ import annotations

import base64
import io
import math
import os
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sslwatch._files import atomic_path
from sslwatch._version import __version__
from sslwatch.analysis import (
    TRUST_MIN_POINTS,
    Analysis,
    Correlation,
    Observation,
    analyze,
    latest_values,
    observations,
    verdict,
)
from sslwatch.core.definitions import MetricDefinition
from sslwatch.core.registry import REGISTRY

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from sslwatch.offline.store import ResultStore

__all__ = ["SpectrumKey", "format_number", "render_report", "write_report"]

SpectrumKey = str | tuple[str, str]
"""A run name, or ``(run, representation)``."""

_ARROWS = {"higher": "↑", "lower": "↓", "none": "·"}
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")
_MISSING_DEPS = (
    "the HTML report needs matplotlib and jinja2; install them with pip install 'sslwatch[report]'"
)


def format_number(value: float | None) -> str:
    """Display form of a number: 4 significant digits, thousands unabbreviated."""
    if value is None:
        return "—"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if value != 0 and abs(value) >= 1e4:
        return f"{value:.0f}"
    return f"{value:.4g}"


# --------------------------------------------------------------------------- plotting


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
    legend row on top) instead of a layout engine: several times faster to draw.
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
    spec = REGISTRY.get(metric)
    arrow = _ARROWS[spec.direction] if spec is not None else "·"
    return f"{metric} {arrow}"


def _x_of(o: Observation) -> float | None:
    if o.epoch is not None:
        return float(o.epoch)
    return None if o.step is None else float(o.step)


def _curves_png(
    run_obs: Sequence[Observation], reference: str | None, min_epoch: int | None
) -> str | None:
    """Every metric over training (one panel each), the reference beside it (grey)."""
    metrics = sorted({o.metric for o in run_obs}, key=lambda m: (m == reference, m))
    if not metrics:
        return None
    use_epoch = all(o.epoch is not None for o in run_obs)
    reps = sorted({o.representation for o in run_obs})
    rep_color = {r: _COLORS[i % len(_COLORS)] for i, r in enumerate(reps)}
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


def _scatter_png(corrs: Sequence[Correlation], reference: str) -> str | None:
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
    color = {r: _COLORS[i % len(_COLORS)] for i, r in enumerate(runs)}
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
        if len(archs[c.metric]) > 1 and _arch_bound(c):
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


def _spectrum_png(spectra: Mapping[str, np.ndarray], run: str) -> str:
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
            color=_COLORS[i % len(_COLORS)],
            lw=1.6,
            label=f"{rep} (RankMe {value:.4g})",
        )
    ax.set_xlabel("rank i", fontsize=9)
    ax.set_ylabel("singular value σᵢ", fontsize=9)
    ax.set_title(f"{run}: spectrum of the latest checkpoint", fontsize=10)
    _style(ax, linear=False)
    ax.legend(fontsize=8, frameon=False)
    return _png(fig)


# --------------------------------------------------------------------------- template


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d232a;
background:#f6f7f9;line-height:1.45}
main{max-width:1320px;margin:0 auto;padding:1.2rem 1.6rem 3rem}
h1{font-size:1.6rem;margin:.2rem 0}h2{font-size:1.25rem;margin:2rem 0 .6rem;
border-bottom:2px solid #d8dde3;padding-bottom:.2rem}h3{font-size:1.05rem;margin:1.4rem 0 .4rem}
.meta{color:#5a6570;font-size:.9rem}.card{background:#fff;border:1px solid #e1e5ea;
border-radius:8px;padding:.8rem 1rem;margin:.8rem 0}
table{border-collapse:collapse;font-size:.85rem;margin:.4rem 0;background:#fff}
th,td{border:1px solid #e1e5ea;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#eef1f4;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums;
white-space:nowrap}.pos{background:#e6f4ea}.neg{background:#fdecea}.weak{background:#fff}
.sev-critical{color:#fff;background:#c62828;border-radius:4px;padding:0 .35rem}
.sev-warning{color:#5d4300;background:#ffe08a;border-radius:4px;padding:0 .35rem}
.sev-info{color:#fff;background:#607d8b;border-radius:4px;padding:0 .35rem}
img.plot{max-width:100%;height:auto;display:block;margin:.4rem 0;background:#fff}
.note{color:#5a6570;font-size:.85rem}code{font-size:.82rem}nav a{margin-right:.8rem}
.scroll{overflow-x:auto}ul.warn li{margin:.25rem 0}#verdict h2{margin-top:.2rem}
"""

_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title><style>{{ css }}</style></head>
<body><main>
<h1>{{ title }}</h1>
<section id="verdict" class="card">
<h2>Verdict</h2>
<ul>{% for line in verdict.lines %}<li>{{ line }}</li>{% endfor %}</ul>
{% if verdict.caveats %}<p class="note"><b>Caveats.</b></p>
<ul class="note">{% for c in verdict.caveats %}<li>{{ c }}</li>{% endfor %}</ul>{% endif %}
{% if online_lines %}<h3 id="during-training">During training (online values, analysed apart)</h3>
<ul>{% for line in online_lines %}<li>{{ line }}</li>{% endfor %}</ul>{% endif %}
</section>
<p class="meta">{{ source }} · {{ n_runs }} runs · {{ n_values }} values analysed ·
reference: <b>
{{ reference or "none" }}</b> · generated {{ generated }} by sslwatch {{ version }}</p>
<nav class="meta"><a href="#trust">Trust</a><a href="#selection">Selection</a>
<a href="#diagnoses">Diagnoses</a><a href="#warnings">Warnings</a><a href="#scatter">Scatter</a>
<a href="#runs">Runs</a><a href="#definitions">Definitions</a></nav>
{% for note in notes %}<p class="card note">{{ note }}</p>{% endfor %}

<h2 id="trust">Can each metric be trusted here?</h2>
<p class="note">Correlation of each label-free metric with <b>{{ reference or "—" }}</b> over
checkpoints ({{ "epoch ≥ %s" % settings.min_epoch if settings.min_epoch is not none else "all"
}}), with {{ confidence_pct }}% percentile-bootstrap
intervals ({{ settings.n_boot }} resamples of checkpoints, seed {{ settings.seed }}). Metrics
where lower is better (↓) are negated, so a positive value always means “better metric, better
accuracy”; metrics without a direction (·) are correlated raw. <i>pooled</i>: all checkpoints of
the runs of one {{ settings.group_by or "group" }}; <i>final</i>: one point per run at their last
common epoch; <i>runs</i>: median and range of the within-run Spearman.</p>
{% if trust %}<div class="scroll"><table id="trust-table"><thead><tr><th>
{{ settings.group_by or "group" }}</th>
<th>repr.</th><th>metric</th><th>n</th><th>Spearman [CI]</th><th>Kendall [CI]</th>
<th>Pearson [CI]</th><th>final ρs (runs)</th><th>runs ρs median (min…max)</th></tr></thead><tbody>
{% for t in trust %}<tr><td>{{ t.group }}</td><td>{{ t.representation }}</td>
<td>{{ t.metric }} {{ t.arrow }}</td><td class="num">{{ t.n }}</td>
{% for e in t.estimates %}<td class="num {{ e.cls }}" data-value="{{ e.raw }}">{{ e.text }}</td>
{% endfor %}
<td class="num" data-value="{{ t.final_raw }}">{{ t.final }}</td>
<td class="num">{{ t.runs }}</td></tr>{% endfor %}</tbody></table></div>
{% else %}<p class="note">No correlations: {{ "no label-based reference is stored" if not reference
else "too few paired points" }}.</p>{% endif %}

<h2 id="selection">Selection without labels, and its regret</h2>
<p class="note">Best run of each {{ settings.group_by or "group" }} by each metric with a
direction, at {{ "epoch " ~ settings.epoch if settings.epoch is not none else "the runs' last
common epoch" }};
regret = oracle {{ reference or "reference" }} − {{ reference or "reference" }} of the selected run
(0 is perfect). Ties go to the smallest run name.</p>
{% if run_sel %}<div class="scroll"><table id="run-selection"><thead><tr>
<th>{{ settings.group_by or "group" }}</th><th>repr.</th><th>metric</th><th>epoch</th>
<th>selected run</th>
<th>value</th><th>{{ reference or "reference" }}</th><th>oracle run</th><th>oracle</th>
<th>regret</th>
<th>runs compared</th></tr></thead><tbody>
{% for s in run_sel %}<tr><td>{{ s.group }}{% if s.architecture %} ({{ s.architecture }}){% endif %}
</td>
<td>{{ s.representation }}</td><td>{{ s.metric }} {{ s.arrow }}</td><td class="num">
{{ s.epoch }}</td>
<td>{{ s.selected_run }}</td><td class="num" data-value="{{ s.value_raw }}">{{ s.value }}</td>
<td class="num" data-value="{{ s.ref_raw }}">{{ s.ref }}</td><td>{{ s.oracle_run }}</td>
<td class="num" data-value="{{ s.oracle_raw }}">{{ s.oracle }}</td>
<td class="num {{ s.cls }}" data-value="{{ s.regret_raw }}">{{ s.regret }}</td>
<td>{{ s.n }}{% if s.excluded %} (without this epoch: {{ s.excluded }}){% endif %}</td></tr>
{% endfor %}
</tbody></table></div>{% else %}<p class="note">No run selection (no metric with a direction).</p>
{% endif %}
<h3>Best checkpoint of each run</h3>
<p class="note">Ties go to the earliest checkpoint{{ "; epoch < %s is not a candidate" %
settings.min_epoch if settings.min_epoch is not none else "" }}.</p>
{% if ck_sel %}<div class="scroll"><table id="checkpoint-selection"><thead><tr><th>run</th>
<th>repr.</th>
<th>metric</th><th>selected epoch</th><th>value</th><th>{{ reference or "reference" }}</th>
<th>oracle epoch</th><th>oracle</th><th>regret</th><th>candidates</th></tr></thead><tbody>
{% for s in ck_sel %}<tr><td>{{ s.run }}</td><td>{{ s.representation }}</td><td>
{{ s.metric }} {{ s.arrow }}</td>
<td class="num">{{ s.epoch }}</td><td class="num" data-value="{{ s.value_raw }}">{{ s.value }}</td>
<td class="num" data-value="{{ s.ref_raw }}">{{ s.ref }}</td><td class="num">
{{ s.oracle_epoch }}</td>
<td class="num" data-value="{{ s.oracle_raw }}">{{ s.oracle }}</td>
<td class="num {{ s.cls }}" data-value="{{ s.regret_raw }}">{{ s.regret }}</td>
<td class="num">{{ s.n }}</td></tr>{% endfor %}</tbody></table></div>{% endif %}

<h2 id="diagnoses">Diagnoses</h2>
{% if findings %}<table id="findings"><thead><tr><th>severity</th><th>run</th><th>repr.</th>
<th>metric</th>
<th>finding</th></tr></thead><tbody>{% for f in findings %}<tr><td>
<span class="sev-{{ f.severity }}">{{ f.severity }}</span></td>
<td>{{ f.run }}</td><td>{{ f.representation }}</td><td>{{ f.metric }}</td><td>{{ f.message }}</td>
</tr>{% endfor %}
</tbody></table>{% else %}<p class="note">No collapse and no falling RankMe detected.</p>{% endif %}
{% if failures %}<h3>Failed checkpoints</h3><table id="failures"><thead><tr><th>run</th>
<th>point</th><th>error</th>
</tr></thead><tbody>{% for f in failures %}<tr><td>{{ f.run }}</td><td>{{ f.point }}</td><td>
<code>{{ f.error }}</code></td></tr>
{% endfor %}</tbody></table>{% endif %}

<h2 id="warnings">Comparability warnings</h2>
{% if warnings %}<p class="note">These values were <b>not</b> compared with each other: their
definitions (N, D, parameters) or architectures differ. Each group was analysed separately.</p>
<ul class="warn" id="warnings-list">{% for w in warnings %}<li><b>
{{ w.context }}</b>: {{ w.message }}
{% if w.groups %}<br><span class="note">groups: {{ w.groups | join(", ") }}</span>{% endif %}</li>
{% endfor %}</ul>
{% else %}<p class="note">None: every comparison was between matching definitions.</p>{% endif %}

<h2 id="scatter">Each metric against {{ reference or "the reference" }}</h2>
{% for s in scatters %}<h3>{{ s.title }}</h3>
<img class="plot" alt="{{ s.title }}" src="{{ s.src }}">{% else %}
<p class="note">No scatter plots without a label-based reference.</p>{% endfor %}

<h2 id="runs">Runs</h2>
{% for r in runs %}<section class="card" id="{{ r.anchor }}"><h3>{{ r.name }}</h3>
<p class="meta">method {{ r.method or "—" }} · architecture {{ r.architecture or "—" }} ·
{{ r.n_points }} points (epochs {{ r.epochs }})</p>
{% for f in r.findings %}<p><span class="sev-{{ f.severity }}">
{{ f.severity }}</span> {{ f.message }}</p>{% endfor %}
{% if r.curves %}<img class="plot" alt="metrics over training, {{ r.name }}" src="{{ r.curves }}">
{% endif %}
<p class="note">Curves: one panel per metric (↑ higher is better, ↓ lower, · no direction), one
colour per representation; hollow markers are checkpoints left out of the analysis (epoch &lt;
{{ settings.min_epoch if settings.min_epoch is not none else 0 }}); the dashed grey line is
{{ reference or "the reference" }} on the right
axis.</p>
<div class="scroll"><table class="latest" data-run="{{ r.name }}"><thead><tr><th>repr.</th>
<th>epoch</th>
{% for m in r.metrics %}<th>{{ m }}</th>{% endfor %}</tr></thead><tbody>
{% for row in r.latest %}<tr data-representation="{{ row.representation }}"><td>
{{ row.representation }}</td>
<td class="num">{{ row.epoch }}</td>{% for c in row.cells %}
<td class="num"{% if c.present %} data-metric="{{ c.metric }}" data-digest="{{ c.digest }}"
 data-value="{{ c.raw }}"{% endif %}>
{{ c.text }}</td>{% endfor %}</tr>{% endfor %}
</tbody></table></div>
<p class="note">Latest stored value of each metric (per definition; N in the header when a metric
has several).</p>
{% if r.corr %}<div class="scroll"><table class="run-corr"><thead><tr><th>repr.</th><th>metric</th>
<th>n</th>
<th>Spearman [CI]</th><th>Kendall [CI]</th><th>Pearson [CI]</th></tr></thead><tbody>
{% for t in r.corr %}<tr><td>{{ t.representation }}</td><td>{{ t.metric }} {{ t.arrow }}</td>
<td class="num">{{ t.n }}</td>
{% for e in t.estimates %}<td class="num {{ e.cls }}" data-value="{{ e.raw }}">{{ e.text }}</td>
{% endfor %}</tr>{% endfor %}
</tbody></table></div>{% endif %}
{% if r.spectrum %}
<img class="plot" alt="singular-value spectrum, {{ r.name }}" src="{{ r.spectrum }}">
{% else %}<p class="note">No spectrum stored for this run: the store keeps metric values only. Pass
the latest checkpoint's embeddings (<code>sslwatch report --embeddings {{ r.name }}=FILE</code>,
or <code>spectra=</code> in Python) to plot its singular values.</p>{% endif %}
</section>{% endfor %}

<h2 id="definitions">Metric definitions used</h2>
<p class="note">Two values are compared only when everything in a row but the version matches.</p>
<div class="scroll"><table id="definitions-table"><thead><tr><th>metric</th><th>digest</th>
<th>N</th><th>D</th>
<th>dtype</th><th>revision</th><th>parameters</th><th>version</th><th>what it is</th>
<th>citation</th></tr></thead>
<tbody>{% for d in definitions %}<tr><td>{{ d.metric }}</td><td><code>{{ d.digest }}</code></td>
<td class="num">{{ d.n }}</td><td class="num">{{ d.d }}</td><td>{{ d.dtype }}</td><td class="num">
{{ d.revision }}</td>
<td><code>{{ d.params }}</code></td><td>{{ d.version }}</td><td>{{ d.description }}</td><td>
{{ d.citation }}</td></tr>
{% endfor %}</tbody></table></div>
</main></body></html>
"""


# --------------------------------------------------------------------------- context


def _estimate_cells(c: Correlation) -> list[dict[str, str]]:
    out = []
    for name in ("spearman", "kendall", "pearson"):
        e = c.stats.get(name)
        cls = ""
        if c.oriented and math.isfinite(e.low):
            cls = "pos" if e.low > 0 else "neg" if e.high < 0 else ""
        text = format_number(e.value)
        if math.isfinite(e.low):
            text += f" [{format_number(e.low)}, {format_number(e.high)}]"
        out.append({"text": text, "raw": repr(e.value), "cls": cls})
    return out


def _metric_label(metric: str, definition: MetricDefinition, several: set[str]) -> str:
    """The metric name, with N and D when the table holds several definitions of it."""
    if metric in several:
        return f"{metric} (N={definition.n}, D={definition.d})"
    return metric


def _arch_bound(c: Correlation) -> bool:
    """True when the correlation is of an architecture-bound metric within one architecture."""
    spec = REGISTRY.get(c.metric)
    return c.architecture is not None and (spec is None or not spec.cross_architecture)


def _final_text(value: float) -> str:
    return "n/a" if math.isnan(value) else format_number(value)


def _arrow(metric: str) -> str:
    spec = REGISTRY.get(metric)
    return _ARROWS[spec.direction] if spec is not None else "·"


def _regret_cls(regret: float) -> str:
    if not math.isfinite(regret):
        return ""
    return "pos" if regret == 0 else "neg" if regret > 0.01 else ""


def _anchor(i: int) -> str:
    return f"run-{i}"


def _normalise_spectra(
    spectra: Mapping[SpectrumKey, Any] | None, runs: Sequence[str]
) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    if not spectra:
        return out
    for key, values in spectra.items():
        run, rep = (key, "embeddings") if isinstance(key, str) else (str(key[0]), str(key[1]))
        if run not in runs:
            raise ValueError(
                f"spectrum given for run {run!r}, which is not in the store; runs: "
                f"{', '.join(runs)}"
            )
        sigma = np.asarray(values.cpu() if hasattr(values, "cpu") else values, dtype=np.float64)
        sigma = np.sort(sigma.ravel())[::-1]
        if sigma.size == 0 or not np.all(np.isfinite(sigma)) or sigma.min() < 0:
            raise ValueError(
                f"spectrum of run {run!r} must be non-empty, finite and non-negative singular "
                "values (e.g. sslwatch.singular_values(z))"
            )
        out[run][rep] = sigma
    return out


def _context(
    obs: Sequence[Observation],
    result: Analysis,
    *,
    title: str,
    source: str,
    spectra: dict[str, dict[str, np.ndarray]],
    failures: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    reference = result.reference
    settings = dict(result.settings)
    def_counts = Counter(d.metric for d in result.definitions)
    several = {m for m, count in def_counts.items() if count > 1}
    by_run: dict[str, list[Observation]] = defaultdict(list)
    for o in obs:
        by_run[o.run].append(o)

    # trust table: pooled correlations, with final-epoch and per-run summaries
    finals = {
        (c.group, c.representation, c.metric, c.digest): c
        for c in result.correlations
        if c.scope == "final"
    }
    per_run: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    run_groups: dict[str, str] = {}
    for name, method, arch in result.runs:
        group_by = settings.get("group_by")
        value = method if group_by == "method" else arch if group_by == "architecture" else None
        run_groups[name] = (
            "all runs" if group_by is None else f"(no {group_by})" if value is None else value
        )
    for c in result.correlations:
        if c.scope == "run" and math.isfinite(c.stats.spearman.value):
            per_run[(run_groups.get(c.group, ""), c.representation, c.metric, c.digest)].append(
                c.stats.spearman.value
            )
    trust = []
    for c in result.correlations:
        if c.scope != "pooled":
            continue
        fin = finals.get((c.group, c.representation, c.metric, c.digest))
        rs = per_run.get((c.group, c.representation, c.metric, c.digest), [])
        trust.append(
            {
                "group": c.group + (f" ({c.architecture})" if _arch_bound(c) else ""),
                "representation": c.representation,
                "metric": _metric_label(c.metric, c.definition, several),
                "arrow": _arrow(c.metric),
                "n": c.n if c.n >= TRUST_MIN_POINTS else f"{c.n} (too few to judge)",
                "estimates": _estimate_cells(c),
                "final": (
                    f"{_final_text(fin.stats.spearman.value)} ({fin.n} runs, epoch {fin.epoch}"
                    + (", too few to judge)" if fin.n < TRUST_MIN_POINTS else ")")
                    if fin
                    else "—"
                ),
                "final_raw": repr(fin.stats.spearman.value) if fin else "",
                "runs": (
                    f"{format_number(float(np.median(rs)))} ({format_number(min(rs))}…"
                    f"{format_number(max(rs))})"
                    if rs
                    else "—"
                ),
            }
        )

    run_sel = [
        {
            "group": s.group,
            "architecture": s.architecture,
            "representation": s.representation,
            "metric": _metric_label(s.metric, s.definition, several),
            "arrow": _arrow(s.metric),
            "epoch": s.epoch,
            "selected_run": s.selected_run,
            "value": format_number(s.value),
            "value_raw": repr(s.value),
            "ref": format_number(s.reference_value),
            "ref_raw": repr(s.reference_value),
            "oracle_run": s.oracle_run or "—",
            "oracle": format_number(s.oracle_value),
            "oracle_raw": repr(s.oracle_value),
            "regret": format_number(s.regret),
            "regret_raw": repr(s.regret),
            "cls": _regret_cls(s.regret),
            "n": len(s.ranking),
            "excluded": ", ".join(s.excluded),
        }
        for s in result.run_selections
    ]
    ck_sel = [
        {
            "run": s.run,
            "representation": s.representation,
            "metric": _metric_label(s.metric, s.definition, several),
            "arrow": _arrow(s.metric),
            "epoch": s.epoch if s.epoch is not None else f"step {s.step}",
            "value": format_number(s.value),
            "value_raw": repr(s.value),
            "ref": format_number(s.reference_value),
            "ref_raw": repr(s.reference_value),
            "oracle_epoch": s.oracle_epoch if s.oracle_epoch is not None else "—",
            "oracle": format_number(s.oracle_value),
            "oracle_raw": repr(s.oracle_value),
            "regret": format_number(s.regret),
            "regret_raw": repr(s.regret),
            "cls": _regret_cls(s.regret),
            "n": s.n_candidates,
        }
        for s in result.checkpoint_selections
    ]

    scatters = []
    if reference is not None:
        pooled: dict[tuple[str, str], list[Correlation]] = defaultdict(list)
        for c in result.correlations:
            if c.scope == "pooled":
                pooled[(c.group, c.representation)].append(c)
        for (group, rep), corrs in sorted(pooled.items()):
            src = _scatter_png(corrs, reference)
            n_runs = len({r for c in corrs for r in c.runs})
            if src is not None:
                scatters.append(
                    {"title": f"{group} — {rep} ({n_runs} run{'s' * (n_runs > 1)})", "src": src}
                )

    runs = []
    min_epoch = settings.get("min_epoch")
    for i, (name, method, arch) in enumerate(result.runs):
        run_obs = by_run.get(name, [])
        latest = latest_values(run_obs)
        n_defs: dict[str, int] = defaultdict(int)
        columns: list[tuple[str, str]] = []
        for o in sorted(latest, key=lambda o: (o.metric, o.definition.n, o.digest)):
            if (o.metric, o.key) not in columns:
                columns.append((o.metric, o.key))
        for metric, _ in columns:
            n_defs[metric] += 1
        headers = []
        for metric, key in columns:
            n = next(o.definition.n for o in latest if o.key == key)
            headers.append(metric if n_defs[metric] == 1 else f"{metric} (N={n})")
        rows = []
        for rep in sorted({o.representation for o in latest}):
            at = {(o.metric, o.key): o for o in latest if o.representation == rep}
            epochs = [o.epoch for o in at.values() if o.epoch is not None]
            cells = []
            for col in columns:
                cell = at.get(col)
                cells.append(
                    {
                        "present": cell is not None,
                        "metric": col[0],
                        "digest": cell.digest if cell is not None else "",
                        "raw": repr(cell.value) if cell is not None else "",
                        "text": format_number(cell.value) if cell is not None else "—",
                    }
                )
            rows.append(
                {"representation": rep, "epoch": max(epochs) if epochs else "—", "cells": cells}
            )
        points = {o.point for o in run_obs}
        epochs_all = sorted({o.epoch for o in run_obs if o.epoch is not None})
        corr_rows = [
            {
                "representation": c.representation,
                "metric": _metric_label(c.metric, c.definition, several),
                "arrow": _arrow(c.metric),
                "n": c.n,
                "estimates": _estimate_cells(c),
            }
            for c in result.correlations
            if c.scope == "run" and c.group == name
        ]
        runs.append(
            {
                "name": name,
                "anchor": _anchor(i),
                "method": method,
                "architecture": arch,
                "n_points": len(points),
                "epochs": f"{epochs_all[0]}–{epochs_all[-1]}" if epochs_all else "—",
                "findings": [f for f in result.findings if f.run == name],
                "curves": _curves_png(run_obs, reference, min_epoch),
                "metrics": headers,
                "latest": rows,
                "corr": corr_rows,
                "spectrum": _spectrum_png(spectra[name], name) if name in spectra else None,
            }
        )

    definitions = []
    for d in result.definitions:
        spec = REGISTRY.get(d.metric)
        definitions.append(
            {
                "metric": d.metric,
                "digest": d.digest(),
                "n": d.n,
                "d": d.d,
                "dtype": d.dtype,
                "revision": d.revision,
                "params": ", ".join(f"{k}={v}" for k, v in d.to_dict()["params"].items()) or "—",
                "version": d.version,
                "description": spec.description if spec else "(not in this sslwatch's registry)",
                "citation": spec.citation if spec else "",
            }
        )
    failure_rows = []
    for f in failures:
        lines = str(f.get("error") or "").strip().splitlines()
        point = f.get("path") or f"{f.get('source')} epoch={f.get('epoch')} step={f.get('step')}"
        failure_rows.append(
            {"run": f.get("run"), "point": point, "error": lines[-1] if lines else ""}
        )
    return {
        "title": title,
        "css": _CSS,
        "source": source,
        "n_runs": len(result.runs),
        "n_values": result.n_values or len(obs),
        "reference": reference,
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
        "notes": list(result.notes),
        "verdict": result.verdict or verdict(result),
        "online_lines": _online_lines(result),
        "settings": settings,
        "confidence_pct": f"{100 * float(settings['confidence']):g}",
        "trust": trust,
        "run_sel": run_sel,
        "ck_sel": ck_sel,
        "findings": list(result.findings),
        "failures": failure_rows,
        "warnings": list(result.warnings),
        "scatters": scatters,
        "runs": runs,
        "definitions": definitions,
    }


def _online_lines(result: Analysis) -> list[str]:
    """The verdict of the online values (a training-time Monitor), analysed apart."""
    if result.online is None:
        return []
    online = result.online.verdict or verdict(result.online)
    return [f"{result.online.n_values} online values.", *online.lines, *online.caveats]


# --------------------------------------------------------------------------- public API


def render_report(
    rows: Any,
    *,
    analysis: Analysis | None = None,
    spectra: Mapping[SpectrumKey, Any] | None = None,
    title: str = "sslwatch report",
    origin: str = "results",
    failures: Sequence[Mapping[str, Any]] = (),
    **analyze_kwargs: Any,
) -> str:
    """The report page as one HTML string.

    Args:
        rows: the tidy table (``ResultStore.tidy_rows()``).
        analysis: a ready :func:`~sslwatch.analysis.analyze` result of ``rows``; computed
            with ``analyze_kwargs`` when None.
        spectra: singular values of the latest checkpoint, keyed by run name or by
            ``(run, representation)`` (e.g. ``sslwatch.singular_values(z)``); runs
            without one get a note instead of the plot.
        title: page title.
        origin: what the rows came from (e.g. the database path), shown in the header.
        failures: ``ResultStore.failures()`` rows, listed under the diagnoses.

    Raises:
        ValueError: a spectrum names an unknown run or is not valid singular values, or
            both ``analysis`` and analysis settings are given.
        ImportError: matplotlib or jinja2 is missing.
    """
    try:
        import jinja2
        import matplotlib  # noqa: F401
    except ImportError as exc:  # pragma: no cover - both are dev dependencies
        raise ImportError(_MISSING_DEPS) from exc
    if analysis is not None and analyze_kwargs:
        raise ValueError(
            f"pass either analysis= or analysis settings ({', '.join(analyze_kwargs)}), not both"
        )
    obs = observations(rows)
    result = analysis if analysis is not None else analyze(obs, **analyze_kwargs)
    source_filter = result.settings.get("source")
    if source_filter is not None:
        obs = [o for o in obs if o.source == source_filter]
    runs = [name for name, _, _ in result.runs]
    spectra_by_run = _normalise_spectra(spectra, runs)
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(_TEMPLATE)
    context = _context(
        obs, result, title=title, source=origin, spectra=spectra_by_run, failures=failures
    )
    return template.render(**context)


def write_report(
    db: str | os.PathLike[str] | ResultStore,
    out: str | os.PathLike[str],
    *,
    spectra: Mapping[SpectrumKey, Any] | None = None,
    title: str | None = None,
    **analyze_kwargs: Any,
) -> Path:
    """Analyse a results store and write the self-contained HTML report to ``out``.

    The file is replaced atomically. Returns its path.

    Raises:
        FileNotFoundError: ``db`` is a path that does not exist.
    """
    from sslwatch.offline.store import ResultStore

    if isinstance(db, ResultStore):
        store, label, close = db, str(db.path), False
    else:
        path = Path(db)
        if not path.is_file():
            raise FileNotFoundError(f"no results store at {path}; run `sslwatch sweep` first")
        store, label, close = ResultStore(path), str(path), True
    try:
        rows = store.tidy_rows()
        failures = store.failures()
    finally:
        if close:
            store.close()
    page = render_report(
        rows,
        spectra=spectra,
        title=title or f"sslwatch report: {Path(label).name}",
        origin=label,
        failures=failures,
        **analyze_kwargs,
    )
    target = Path(out)
    with atomic_path(target) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return target
