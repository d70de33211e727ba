"""What the report's template shows: an :class:`~sslwatch.analysis.Analysis` turned into
plain rows of display strings (numbers keep their exact value beside the text)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from sslwatch._version import __version__
from sslwatch.analysis import (
    TRUST_MIN_POINTS,
    Analysis,
    Correlation,
    Observation,
    latest_values,
    several_definitions,
    trust_rows,
    verdict,
)
from sslwatch.core.definitions import MetricDefinition
from sslwatch.core.registry import REGISTRY
from sslwatch.report.formatting import (
    estimate_text,
    format_number,
    interval_side,
    last_line,
    metric_arrow,
)
from sslwatch.report.plots import curves_png, scatter_png, spectrum_png

SpectrumKey = str | tuple[str, str]
"""A run name, or ``(run, representation)``."""

Row = dict[str, Any]

_SIDE_CLASS = {1: "pos", -1: "neg", 0: ""}


def page_context(
    obs: Sequence[Observation],
    result: Analysis,
    *,
    title: str,
    source: str,
    spectra: dict[str, dict[str, np.ndarray]],
    failures: Sequence[Mapping[str, Any]],
    claims: Sequence[Mapping[str, Any]] = (),
    claims_rule: str = "",
) -> dict[str, Any]:
    """Every variable of the template."""
    settings = dict(result.settings)
    several = several_definitions(result)
    return {
        "title": title,
        "source": source,
        "n_runs": len(result.runs),
        "n_values": result.n_values or len(obs),
        "reference": result.reference,
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
        "notes": list(result.notes),
        "verdict": result.verdict or verdict(result),
        "online_lines": _online_lines(result),
        "claims": _claim_rows(claims),
        "claims_rule": claims_rule,
        "settings": settings,
        "confidence_pct": f"{100 * float(settings['confidence']):g}",
        "trust": _trust_table(result, several),
        "run_sel": _run_selection_rows(result, several),
        "ck_sel": _checkpoint_selection_rows(result, several),
        "findings": list(result.findings),
        "failures": _failure_rows(failures),
        "warnings": list(result.warnings),
        "scatters": _scatters(result),
        "runs": _run_sections(obs, result, several, spectra),
        "definitions": _definition_rows(result),
    }


def normalise_spectra(
    spectra: Mapping[SpectrumKey, Any] | None, runs: Sequence[str]
) -> dict[str, dict[str, np.ndarray]]:
    """run -> representation -> singular values in descending order, validated."""
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


# --------------------------------------------------------------------------- cells


def _estimate_cells(c: Correlation) -> list[dict[str, str]]:
    out = []
    for name in ("spearman", "kendall", "pearson"):
        e = c.stats.get(name)
        cls = _SIDE_CLASS[interval_side(e, c.oriented)]
        out.append({"text": estimate_text(e), "raw": repr(e.value), "cls": cls})
    return out


def _metric_label(metric: str, definition: MetricDefinition, several: set[str]) -> str:
    """The metric name, with N and D when the table holds several definitions of it."""
    if metric in several:
        return f"{metric} (N={definition.n}, D={definition.d})"
    return metric


def _final_text(value: float) -> str:
    return "n/a" if math.isnan(value) else format_number(value)


def _regret_cls(regret: float) -> str:
    if not math.isfinite(regret):
        return ""
    return "pos" if regret == 0 else "neg" if regret > 0.01 else ""


# --------------------------------------------------------------------------- tables


def _trust_table(result: Analysis, several: set[str]) -> list[Row]:
    """Pooled correlations, with the final-epoch and per-run summaries."""
    rows = []
    for row in trust_rows(result):
        c, fin, rs = row.pooled, row.final, row.run_spearman
        rows.append(
            {
                "group": c.group + (f" ({c.architecture})" if c.architecture_bound else ""),
                "representation": c.representation,
                "metric": _metric_label(c.metric, c.definition, several),
                "arrow": metric_arrow(c.metric),
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
    return rows


def _selection_numbers(value: float, reference: float, oracle: float, regret: float) -> Row:
    """The four numbers of a selection row, as text and exact value."""
    return {
        "value": format_number(value),
        "value_raw": repr(value),
        "ref": format_number(reference),
        "ref_raw": repr(reference),
        "oracle": format_number(oracle),
        "oracle_raw": repr(oracle),
        "regret": format_number(regret),
        "regret_raw": repr(regret),
        "cls": _regret_cls(regret),
    }


def _run_selection_rows(result: Analysis, several: set[str]) -> list[Row]:
    return [
        {
            "group": s.group,
            "architecture": s.architecture,
            "representation": s.representation,
            "metric": _metric_label(s.metric, s.definition, several),
            "arrow": metric_arrow(s.metric),
            "epoch": s.epoch,
            "selected_run": s.selected_run,
            "oracle_run": s.oracle_run or "—",
            "n": len(s.ranking),
            "excluded": ", ".join(s.excluded),
            **_selection_numbers(s.value, s.reference_value, s.oracle_value, s.regret),
        }
        for s in result.run_selections
    ]


def _checkpoint_selection_rows(result: Analysis, several: set[str]) -> list[Row]:
    return [
        {
            "run": s.run,
            "representation": s.representation,
            "metric": _metric_label(s.metric, s.definition, several),
            "arrow": metric_arrow(s.metric),
            "epoch": s.epoch if s.epoch is not None else f"step {s.step}",
            "oracle_epoch": s.oracle_epoch if s.oracle_epoch is not None else "—",
            "n": s.n_candidates,
            **_selection_numbers(s.value, s.reference_value, s.oracle_value, s.regret),
        }
        for s in result.checkpoint_selections
    ]


def _scatters(result: Analysis) -> list[Row]:
    """One scatter figure per group and representation (none without a reference)."""
    if result.reference is None:
        return []
    pooled: dict[tuple[str, str], list[Correlation]] = defaultdict(list)
    for c in result.correlations:
        if c.scope == "pooled":
            pooled[(c.group, c.representation)].append(c)
    out = []
    for (group, rep), corrs in sorted(pooled.items()):
        src = scatter_png(corrs, result.reference)
        n_runs = len({r for c in corrs for r in c.runs})
        if src is not None:
            out.append({"title": f"{group} — {rep} ({n_runs} run{'s' * (n_runs > 1)})", "src": src})
    return out


def _definition_rows(result: Analysis) -> list[Row]:
    rows = []
    for d in result.definitions:
        spec = REGISTRY.get(d.metric)
        rows.append(
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
    return rows


_VERDICT_CLASS = {"holds": "pos", "does not hold": "neg"}


def _claim_rows(claims: Sequence[Mapping[str, Any]]) -> list[Row]:
    """Judged claims as display rows; the value and interval keep their exact numbers."""
    out = []
    for c in claims:
        value = c["value"] if c["value"] is not None else math.nan
        low, high = (math.nan if v is None else v for v in c["ci"])
        out.append(
            {
                "paper": str(c["paper"]),
                "claim": str(c["claim"]),
                "method": str(c["method"]),
                "statistic": str(c["statistic"]),
                "value": format_number(value),
                "raw": repr(value),
                "ci": f"[{format_number(low)}, {format_number(high)}]",
                "n": str(c["n"]),
                "verdict": str(c["verdict"]),
                "cls": _VERDICT_CLASS.get(str(c["verdict"]), ""),
            }
        )
    return out


def _failure_rows(failures: Sequence[Mapping[str, Any]]) -> list[Row]:
    rows = []
    for f in failures:
        point = f.get("path") or f"{f.get('source')} epoch={f.get('epoch')} step={f.get('step')}"
        rows.append({"run": f.get("run"), "point": point, "error": last_line(f.get("error"))})
    return rows


def _online_lines(result: Analysis) -> list[str]:
    """The verdict of the online values (a training-time Monitor), analysed apart."""
    if result.online is None:
        return []
    online = result.online.verdict or verdict(result.online)
    return [f"{result.online.n_values} online values.", *online.lines, *online.caveats]


# --------------------------------------------------------------------------- runs


def _run_sections(
    obs: Sequence[Observation],
    result: Analysis,
    several: set[str],
    spectra: dict[str, dict[str, np.ndarray]],
) -> list[Row]:
    """Per run: findings, curves, latest values, within-run correlations, spectrum."""
    by_run: dict[str, list[Observation]] = defaultdict(list)
    for o in obs:
        by_run[o.run].append(o)
    min_epoch = result.settings.get("min_epoch")
    runs = []
    for i, (name, method, arch) in enumerate(result.runs):
        run_obs = by_run.get(name, [])
        headers, latest = _latest_table(run_obs)
        epochs_all = sorted({o.epoch for o in run_obs if o.epoch is not None})
        runs.append(
            {
                "name": name,
                "anchor": f"run-{i}",
                "method": method,
                "architecture": arch,
                "n_points": len({o.point for o in run_obs}),
                "epochs": f"{epochs_all[0]}–{epochs_all[-1]}" if epochs_all else "—",
                "findings": [f for f in result.findings if f.run == name],
                "curves": curves_png(run_obs, result.reference, min_epoch),
                "metrics": headers,
                "latest": latest,
                "corr": [
                    {
                        "representation": c.representation,
                        "metric": _metric_label(c.metric, c.definition, several),
                        "arrow": metric_arrow(c.metric),
                        "n": c.n,
                        "estimates": _estimate_cells(c),
                    }
                    for c in result.correlations
                    if c.scope == "run" and c.group == name
                ],
                "spectrum": spectrum_png(spectra[name], name) if name in spectra else None,
            }
        )
    return runs


def _latest_table(run_obs: Sequence[Observation]) -> tuple[list[str], list[Row]]:
    """Column headers (one per metric and definition) and one row per representation
    of the latest value of each."""
    latest = latest_values(run_obs)
    columns: list[tuple[str, str]] = []
    for o in sorted(latest, key=lambda o: (o.metric, o.definition.n, o.digest)):
        if (o.metric, o.key) not in columns:
            columns.append((o.metric, o.key))
    n_defs: dict[str, int] = defaultdict(int)
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
    return headers, rows
