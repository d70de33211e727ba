"""Render the report page from ``templates/report.html.j2`` and write it atomically."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sslwatch._files import atomic_path
from sslwatch.analysis import Analysis, analyze, observations
from sslwatch.report.context import SpectrumKey, normalise_spectra, page_context

if TYPE_CHECKING:
    import jinja2

    from sslwatch.offline.store import ResultStore

TEMPLATE = "report.html.j2"
"""The page's template in ``sslwatch/report/templates`` (its CSS: ``report.css``)."""

_MISSING_DEPS = (
    "the HTML report needs matplotlib and jinja2; install them with pip install 'sslwatch[report]'"
)


@functools.cache
def _environment() -> jinja2.Environment:
    """The Jinja2 environment over the package's templates; everything is escaped."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("sslwatch.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def render_report(
    rows: Any,
    *,
    analysis: Analysis | None = None,
    spectra: Mapping[SpectrumKey, Any] | None = None,
    title: str = "sslwatch report",
    origin: str = "results",
    failures: Sequence[Mapping[str, Any]] = (),
    claims: Sequence[Mapping[str, Any]] = (),
    claims_rule: str = "",
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
        claims: judged claims of the papers (``study.claims.claim_rows``: ``paper,
            claim, method, statistic, value, ci, n, verdict``), shown after the verdict;
            ``claims_rule`` is the verdict rule printed under them.

    Raises:
        ValueError: a spectrum names an unknown run or is not valid singular values, or
            both ``analysis`` and analysis settings are given.
        ImportError: matplotlib or jinja2 is missing.
    """
    try:
        import jinja2  # noqa: F401
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
    spectra_by_run = normalise_spectra(spectra, runs)
    template = _environment().get_template(TEMPLATE)
    context = page_context(
        obs,
        result,
        title=title,
        source=origin,
        spectra=spectra_by_run,
        failures=failures,
        claims=claims,
        claims_rule=claims_rule,
    )
    return template.render(**context)


def write_report(
    db: str | os.PathLike[str] | ResultStore,
    out: str | os.PathLike[str],
    *,
    spectra: Mapping[SpectrumKey, Any] | None = None,
    title: str | None = None,
    claims: Sequence[Mapping[str, Any]] = (),
    claims_rule: str = "",
    exclude_runs: Sequence[str] = (),
    **analyze_kwargs: Any,
) -> Path:
    """Analyse a results store and write the self-contained HTML report to ``out``.

    The file is replaced atomically. Returns its path. ``spectra``, ``claims`` and
    ``claims_rule`` are as in :func:`render_report`; runs whose names start with one of
    ``exclude_runs`` are left out.

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
        prefixes = tuple(exclude_runs)
        rows = [r for r in store.tidy_rows() if not str(r["run"]).startswith(prefixes)]
        failures = [f for f in store.failures() if not str(f["run"]).startswith(prefixes)]
    finally:
        if close:
            store.close()
    page = render_report(
        rows,
        spectra=spectra,
        title=title or f"sslwatch report: {Path(label).name}",
        origin=label,
        failures=failures,
        claims=claims,
        claims_rule=claims_rule,
        **analyze_kwargs,
    )
    target = Path(out)
    with atomic_path(target) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return target
