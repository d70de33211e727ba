"""The HTML report and the `analyze` / `report` commands, on stores built with ResultStore."""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import sslwatch.cli.report  # noqa: F401  (registers `analyze` and `report`)
from sslwatch.analysis import analyze
from sslwatch.cli import app, console
from sslwatch.core.definitions import MetricDefinition
from sslwatch.offline.store import ResultStore
from sslwatch.report import render_report, write_report

EPOCHS = (0, 5, 10, 15, 20)
runner = CliRunner()


def fill_store(
    path: Path, runs: Sequence[tuple[str, str, float]], *, mixed_n: bool = False
) -> None:
    """Fake but realistic sweep: accuracy rises with quality, the metrics follow it."""
    with ResultStore(path) as store:
        for i, (name, method, quality) in enumerate(runs):
            rng = np.random.default_rng(i)
            run = store.ensure_run(name, method=method, architecture="cnn1d")
            n_rank = 25600 if mixed_n and i == len(runs) - 1 else 2000
            for epoch in EPOCHS:
                acc = 0.79 + 0.14 * quality * (1 - np.exp(-epoch / 8)) + rng.normal(0, 0.003)
                values = {
                    "linear_probe": acc,
                    "rankme": 110.0 if epoch == 0 else 60 + 400 * (acc - 0.79),
                    "silhouette": 0.05 + 0.8 * (acc - 0.79) + rng.normal(0, 0.01),
                    "alignment": 1.2 - 4 * (acc - 0.79) + rng.normal(0, 0.02),
                    "entropy": 50 - 0.4 * epoch + rng.normal(0, 0.3),
                }
                point = store.ensure_point(run, path=f"/ck/{name}/e{epoch}.pt", epoch=epoch)
                store.record_results(
                    point,
                    [
                        (
                            "backbone",
                            MetricDefinition(metric=m, n=n_rank if m == "rankme" else 2000, d=128),
                            float(v),
                        )
                        for m, v in values.items()
                    ],
                )


class Page(HTMLParser):
    """Collect images, links, tables (cells with attributes and text) from the report."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.refs: list[str] = []
        self.tags: set[str] = set()
        self.tables: list[dict[str, Any]] = []
        self._cell: dict[str, Any] | None = None
        self._row: list[dict[str, Any]] | None = None
        self._row_attrs: dict[str, str] = {}
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        if tag == "img":
            self.images.append(a)
        for key in ("src", "href", "action", "srcset", "poster"):
            if key in a:
                self.refs.append(a[key])
        if tag == "table":
            self.tables.append({"attrs": a, "rows": []})
        elif tag == "tr" and self.tables:
            self._row, self._row_attrs = [], a
        elif tag in ("td", "th") and self._row is not None:
            self._cell = {"tag": tag, "attrs": a, "text": ""}

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._cell["text"] = " ".join(self._cell["text"].split())
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1]["rows"].append({"attrs": self._row_attrs, "cells": self._row})
            self._row = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell["text"] += data


def parse(page: str) -> Page:
    parser = Page()
    parser.feed(page)
    return parser


def png_size(src: str) -> tuple[int, int]:
    """Width and height from the PNG header of a data URI (independent of matplotlib)."""
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    data = base64.b64decode(src[len(prefix) :], validate=True)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def table(page: Page, **attrs: str) -> dict[str, Any]:
    found = [t for t in page.tables if all(t["attrs"].get(k) == v for k, v in attrs.items())]
    assert len(found) == 1, attrs
    return found[0]


def body_rows(t: dict[str, Any]) -> list[list[dict[str, Any]]]:
    return [r["cells"] for r in t["rows"] if r["cells"] and r["cells"][0]["tag"] == "td"]


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "results.db"
    fill_store(
        path,
        [("simclr-lr0.1", "simclr", 0.6), ("simclr-lr0.3", "simclr", 1.0),
         ("simsiam-a", "simsiam", 0.8)],
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def rows(store_path: Path) -> list[dict[str, Any]]:
    with ResultStore(store_path) as store:
        return store.tidy_rows()


@pytest.fixture(scope="module")
def spectrum() -> np.ndarray:
    return np.sort(np.random.default_rng(0).pareto(1.5, 128))[::-1] + 0.01


@pytest.fixture(scope="module")
def page(store_path: Path, spectrum: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("html") / "report.html"
    write_report(store_path, out, spectra={"simclr-lr0.3": spectrum}, n_boot=100)
    return out.read_text(encoding="utf-8")


def test_report_is_self_contained(page: str) -> None:
    doc = parse(page)
    assert not {"script", "link", "iframe", "object", "embed"} & doc.tags
    assert not re.search(r"https?://", page)
    assert not re.search(r"url\(|@import", page)
    assert all(ref.startswith(("#", "data:image/png;base64,")) for ref in doc.refs)
    # one curves figure per run, one scatter figure per method, one spectrum
    assert len(doc.images) == 3 + 2 + 1
    for img in doc.images:
        width, height = png_size(img["src"])
        assert width > 200 and height > 150
        assert img.get("alt")


def test_latest_values_table_holds_the_store_numbers(page: str, rows: list[dict[str, Any]]) -> None:
    latest: dict[tuple[str, str, str, str], tuple[int, float]] = {}
    for r in rows:
        key = (r["run"], r["representation"], r["metric"], r["digest"])
        if key not in latest or r["epoch"] > latest[key][0]:
            latest[key] = (r["epoch"], r["value"])
    doc = parse(page)
    seen = set()
    for t in doc.tables:
        if "latest" not in t["attrs"].get("class", ""):
            continue
        run = t["attrs"]["data-run"]
        for row in t["rows"]:
            rep = row["attrs"].get("data-representation")
            for cell in row["cells"]:
                a = cell["attrs"]
                if "data-metric" not in a:
                    continue
                key = (run, rep, a["data-metric"], a["data-digest"])
                assert float(a["data-value"]) == latest[key][1]
                assert cell["text"] == f"{latest[key][1]:.4g}"
                seen.add(key)
    assert seen == set(latest)


def test_selection_table_matches_an_independent_computation(
    page: str, rows: list[dict[str, Any]]
) -> None:
    final = {(r["run"], r["metric"]): r["value"] for r in rows if r["epoch"] == EPOCHS[-1]}
    simclr = ("simclr-lr0.1", "simclr-lr0.3")
    best = max(simclr, key=lambda r: final[(r, "rankme")])
    oracle = max(final[(r, "linear_probe")] for r in simclr)
    sel = table(parse(page), id="run-selection")
    (row,) = [
        cells for cells in body_rows(sel)
        if cells[0]["text"] == "simclr" and cells[2]["text"].startswith("rankme")
    ]  # fmt: skip
    assert row[3]["text"] == str(EPOCHS[-1])
    assert row[4]["text"] == best
    assert float(row[5]["attrs"]["data-value"]) == final[(best, "rankme")]
    assert float(row[6]["attrs"]["data-value"]) == final[(best, "linear_probe")]
    assert float(row[9]["attrs"]["data-value"]) == pytest.approx(
        oracle - final[(best, "linear_probe")], abs=1e-15
    )


def test_definitions_and_spectrum_sections(
    page: str, rows: list[dict[str, Any]], spectrum: np.ndarray
) -> None:
    doc = parse(page)
    defs = table(doc, id="definitions-table")
    assert {cells[1]["text"] for cells in body_rows(defs)} == {r["digest"] for r in rows}
    alts = [img["alt"] for img in doc.images]
    assert "singular-value spectrum, simclr-lr0.3" in alts
    text = " ".join(" ".join(doc.text).split())
    assert text.count("No spectrum stored for this run") == 2
    assert "None: every comparison was between matching definitions" in text


def test_spectra_are_validated(rows: list[dict[str, Any]], spectrum: np.ndarray) -> None:
    with pytest.raises(ValueError, match="not in the store"):
        render_report(rows, spectra={"no-such-run": spectrum}, n_boot=0)
    with pytest.raises(ValueError, match="non-negative"):
        render_report(rows, spectra={"simsiam-a": -spectrum}, n_boot=0)
    with pytest.raises(ValueError, match="not both"):
        render_report(rows, analysis=analyze(rows, n_boot=0), n_boot=10)


def test_mixed_definitions_are_shown_as_warnings(tmp_path: Path) -> None:
    path = tmp_path / "mixed.db"
    fill_store(path, [("a", "simclr", 0.6), ("b", "simclr", 0.9)], mixed_n=True)
    with ResultStore(path) as store:
        page = render_report(store.tidy_rows(), n_boot=0)
    doc = parse(page)
    warnings = " ".join(" ".join(doc.text).split())
    assert "n: 2000 vs 25600" in warnings
    # Each definition's group holds one run: no selection rows (regret 0 by construction),
    # a note instead.
    sel = table(doc, id="run-selection")
    labels = [cells[2]["text"] for cells in body_rows(sel) if cells[2]["text"].startswith("rankme")]
    assert labels == []
    assert "one run only, so no run selection: simclr/backbone" in warnings


def test_names_are_escaped(tmp_path: Path) -> None:
    path = tmp_path / "esc.db"
    fill_store(path, [('<img src="x">', "simclr", 0.7)])
    with ResultStore(path) as store:
        page = render_report(store.tidy_rows(), n_boot=0)
    assert '<img src="x">' not in page and "&lt;img src=&#34;x&#34;&gt;" in page


def test_excluded_runs_leave_the_page(store_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    write_report(store_path, out, n_boot=0, exclude_runs=("simsiam-",))
    page = out.read_text(encoding="utf-8")
    assert "simsiam-a" not in page and "simclr-lr0.1" in page and "simclr-lr0.3" in page
    write_report(store_path, out, n_boot=0)
    assert "simsiam-a" in out.read_text(encoding="utf-8")


def test_claims_table_follows_the_verdict(rows: list[dict[str, Any]]) -> None:
    claims = [
        {
            "paper": "Xu et al. 2024",
            "claim": "silhouette <b>tracks</b> LP",
            "method": "simclr",
            "statistic": "Spearman(silhouette, LP) > 0",
            "value": 0.625,
            "ci": [0.25, None],
            "n": 12,
            "verdict": "holds",
        },
        {
            "paper": "Garrido et al. 2023",
            "claim": "RankMe beats a random pick",
            "method": "all",
            "statistic": "mean gain > 0",
            "value": None,
            "ci": [None, None],
            "n": 0,
            "verdict": "inconclusive",
        },
    ]
    html = render_report(rows, n_boot=50, claims=claims, claims_rule="the rule")
    table = html[html.index('id="claims-table"') : html.index("</table>", html.index("claims"))]
    assert html.index('id="verdict"') < html.index('id="claims"') < html.index('id="trust"')
    assert "silhouette &lt;b&gt;tracks&lt;/b&gt; LP" in table and "<b>tracks" not in table
    assert 'data-value="0.625"' in table and "[0.25, nan]" in table and "[nan, nan]" in table
    assert table.count("<tr><td>") == 2 and '<td class="pos"><b>holds</b>' in table
    assert "the rule" in html
    assert 'id="claims"' not in render_report(rows, n_boot=50)


def test_write_report_refuses_a_missing_store(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no results store"):
        write_report(tmp_path / "missing.db", tmp_path / "r.html")
    assert not (tmp_path / "missing.db").exists() and not (tmp_path / "r.html").exists()


def test_the_css_is_page_text_not_an_escaped_value(page: str) -> None:
    """Inside <style> character references are not decoded: quotes must stay quotes."""
    style = page[page.index("<style>") : page.index("</style>")]
    assert '"Segoe UI"' in style and "&#34;" not in style


def test_the_template_ships_as_package_data() -> None:
    """Every file under report/templates matches a [tool.setuptools.package-data] glob,
    so wheels and sdists carry the page's template and CSS."""
    import fnmatch
    import importlib.resources
    import tomllib

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    config = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    globs = config["tool"]["setuptools"]["package-data"]["sslwatch.report"]
    folder = importlib.resources.files("sslwatch.report") / "templates"
    names = sorted(f.name for f in folder.iterdir() if f.is_file())
    assert {"report.html.j2", "report.css"} <= set(names)
    for name in names:
        assert any(fnmatch.fnmatch(f"templates/{name}", g) for g in globs), name


def test_one_arrow_per_direction() -> None:
    from sslwatch.report import direction_arrow, metric_arrow

    assert [direction_arrow(d) for d in ("higher", "lower", "none", "sideways")] == [
        "↑", "↓", "·", "·",
    ]  # fmt: skip
    assert metric_arrow("rankme") == "↑" and metric_arrow("alignment") == "↓"
    assert metric_arrow("entropy") == "·" and metric_arrow("not_registered") == "·"


# --------------------------------------------------------------------------- CLI


def test_cli_analyze_prints_trust_selection_and_diagnoses(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # rich fixes the console width when the console is created (80 without a terminal);
    # widen it for this test so that no table cell is cut short with an ellipsis
    monkeypatch.setattr(console, "_width", 220)
    result = runner.invoke(app, ["analyze", str(store_path), "--n-boot", "50"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "simclr: correlation with linear_probe" in out
    assert "Best run per method" in out and "regret" in out
    assert "simclr-lr0.3" in out and "simsiam-a" in out
    assert "No comparability warnings" in out


def test_cli_report_writes_html_with_a_spectrum(
    store_path: Path, tmp_path: Path, rng: np.random.Generator
) -> None:
    emb = tmp_path / "epoch=20.npy"  # '=' in a file name must work
    np.save(emb, rng.normal(size=(300, 32)).astype(np.float32))
    out = tmp_path / "sub" / "r.html"
    result = runner.invoke(
        app,
        ["report", str(store_path), "-o", str(out), "--n-boot", "20", "--representation",
         "backbone", "--embeddings", f"simsiam-a={emb}"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and out.is_file()
    alts = [img["alt"] for img in parse(out.read_text(encoding="utf-8")).images]
    assert "singular-value spectrum, simsiam-a" in alts


def test_cli_errors_are_one_line(store_path: Path, tmp_path: Path) -> None:
    missing = runner.invoke(app, ["analyze", str(tmp_path / "none.db")])
    assert missing.exit_code == 2 and "no results store" in missing.output
    assert not (tmp_path / "none.db").exists()
    bad = runner.invoke(app, ["report", str(store_path), "--embeddings", "nofile"])
    assert bad.exit_code == 2 and "RUN=FILE" in bad.output
    unknown = runner.invoke(app, ["report", str(store_path), "--embeddings", "zz=a.npy"])
    assert unknown.exit_code == 2 and "not in the store" in unknown.output
    ref = runner.invoke(app, ["analyze", str(store_path), "--reference", "knn_accuracy"])
    assert ref.exit_code == 2 and "knn_accuracy" in ref.output


def test_verdict_comes_first_and_online_values_stand_apart(tmp_path: Path) -> None:
    path = tmp_path / "both.db"
    fill_store(path, [("a", "simclr", 0.6), ("b", "simclr", 0.9), ("c", "simclr", 0.75)])
    with ResultStore(path) as store:
        run = store.ensure_run("a")
        for step in range(1, 6):
            point = store.ensure_point(run, source="online", step=step, epoch=step)
            store.record_results(
                point, [("backbone", MetricDefinition("rankme", n=2000, d=128), 900.0 + step)]
            )
        rows = store.tidy_rows()
    page = render_report(rows, n_boot=50)
    result = analyze(rows, n_boot=50)
    assert result.verdict is not None and result.online is not None
    start = page.index('<section id="verdict"')
    assert start < page.index("<table") and start < page.index('<h2 id="trust"')
    section = page[start : page.index("</section>", start)]
    text = " ".join(re.sub(r"<[^>]+>", " ", section).split())
    for line in result.verdict.lines:  # every verdict line, escaped as HTML
        assert " ".join(line.split()) in text.replace("&#39;", "'")
    assert 'id="during-training"' in section and "5 online values." in text
    # the checkpoint analysis never sees the online rankme values (all near 900)
    assert "values analysed" in page
    assert f"{result.n_values} values analysed" in " ".join(page.split())


LONG_RUNS = [
    ("simclr-temperature-0.07-batch-512-long-name", "simclr", 0.6),
    ("simclr-temperature-0.5-batch-512-long-name", "simclr", 0.9),
    ("simclr-c", "simclr", 0.75),
]


def test_analyze_prints_the_verdict_first_and_whole_names_in_a_pipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CliRunner's stdout is not a terminal: at 80 columns no run name may be cut."""
    path = tmp_path / "long.db"
    fill_store(path, LONG_RUNS)
    monkeypatch.setattr(console, "_width", 80)
    res = runner.invoke(app, ["analyze", str(path), "--n-boot", "50"])
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert out.index("Verdict") < out.index("┏")  # before the first table
    with ResultStore(path) as store:
        result = analyze(store.tidy_rows(), n_boot=50)
    assert result.verdict is not None
    for line in result.verdict.lines:
        assert line in out
    for name, _, _ in LONG_RUNS:
        assert name in out and "…" not in out
    assert f"{result.n_values} of {result.n_values} stored values analysed" in out


@pytest.mark.parametrize("fmt", ["json", "md", "csv"])
def test_analyze_formats_carry_the_same_verdict(tmp_path: Path, fmt: str) -> None:
    import csv
    import io
    import json

    path = tmp_path / "long.db"
    fill_store(path, LONG_RUNS)
    res = runner.invoke(app, ["analyze", str(path), "--n-boot", "50", "--format", fmt])
    assert res.exit_code == 0, res.output
    with ResultStore(path) as store:
        result = analyze(store.tidy_rows(), n_boot=50)
    assert result.verdict is not None
    if fmt == "json":
        data = json.loads(res.stdout)  # strict JSON (allow_nan=False when written)
        assert next(iter(data)) == "verdict"
        assert data["verdict"]["lines"] == list(result.verdict.lines)
        assert len(data["correlations"]) == len(result.correlations)
        assert data["online"] is None
    elif fmt == "md":
        assert res.stdout.startswith("# Verdict")
        for line in result.verdict.lines:
            assert f"- {line}" in res.stdout
        assert "| group | representation | metric |" in res.stdout
    else:
        rows = list(csv.DictReader(io.StringIO(res.stdout)))
        verdict_rows = [r["text"] for r in rows if r["section"] == "verdict"]
        assert verdict_rows == list(result.verdict.lines)
        trusted = {
            r["metric"] for r in rows if r["section"] == "trust" and r["status"] == "trusted"
        }
        assert trusted == {t.metric for t in result.verdict.trust if t.status == "trusted"}
    assert runner.invoke(app, ["analyze", str(path), "--format", "xml"]).exit_code == 2


def test_correlations_from_too_few_points_are_marked(tmp_path: Path) -> None:
    """A final-epoch correlation over 2 runs (and any n < 5) says it is too few to judge."""
    path = tmp_path / "two.db"
    fill_store(path, [("a", "simclr", 0.6), ("b", "simclr", 0.9)])
    with ResultStore(path) as store:
        page = " ".join(render_report(store.tidy_rows(), n_boot=20).split())
    assert "(2 runs, epoch 20, too few to judge)" in page
    res = runner.invoke(app, ["analyze", str(path), "--n-boot", "20"])
    assert res.exit_code == 0 and "(2 runs, too few)" in res.stdout
