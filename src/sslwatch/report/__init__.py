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

Modules: ``render`` (:func:`render_report`, :func:`write_report`), ``context`` (the
analysis as template rows), ``plots`` (the figures), ``formatting`` (how numbers and
directions read, shared with the command line) and ``templates/`` (the page and its CSS).
"""

from sslwatch.report.context import SpectrumKey
from sslwatch.report.formatting import direction_arrow, format_number, metric_arrow
from sslwatch.report.render import render_report, write_report

__all__ = [
    "SpectrumKey",
    "direction_arrow",
    "format_number",
    "metric_arrow",
    "render_report",
    "write_report",
]
