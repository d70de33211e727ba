"""The report in a real browser: headless Chromium renders it offline, without requests.

Chromium runs with its background networking off, behind a proxy on a closed port and a
resolver that maps every host to NOTFOUND, so nothing can leave the machine. A probe
script appended to a copy of the page writes, once the page has loaded, each image's
natural size and every resource-timing entry into the DOM, which ``--dump-dom`` returns.
A control page with two remote images shows that the probe sees requests when there are
some. The test skips only when Chromium is missing outside CI (``CI`` unset); in CI a
missing Chromium is a failure (``.ci/run`` installs Debian's ``chromium``).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sslwatch.core.definitions import MetricDefinition
from sslwatch.offline.store import ResultStore
from sslwatch.report import write_report

EPOCHS = (0, 5, 10, 15, 20)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-default-apps",
    "--disable-extensions",
    "--hide-scrollbars",
    "--proxy-server=http://127.0.0.1:9",  # the discard port: nothing listens there
    "--host-resolver-rules=MAP * ~NOTFOUND",
)
PROBE = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.map.call(document.images, function (img) {
    return {alt: img.alt, width: img.naturalWidth, height: img.naturalHeight,
            complete: img.complete};
  });
  var resources = performance.getEntriesByType("resource").map(function (e) {
    return e.name.slice(0, 200);
  });
  var out = document.createElement("pre");
  out.id = "sslwatch-probe";
  out.textContent = JSON.stringify({images: images, resources: resources,
    height: document.documentElement.scrollHeight});
  document.body.appendChild(out);
});
</script>"""


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


@pytest.fixture(scope="module")
def chromium() -> str:
    path = chromium_path()
    if path is None:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail("CI is set but Chromium is missing: install Debian's `chromium`")
        pytest.skip("Chromium is not installed (apt-get install -y chromium); CI runs this")
    return path


def run_chromium(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def dump_dom(chromium: str, page: Path, profile: Path) -> str:
    done = run_chromium(
        chromium, profile, "--virtual-time-budget=15000", "--dump-dom", page.as_uri()
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def probe_result(dom: str) -> dict[str, Any]:
    match = re.search(r'<pre id="sslwatch-probe">(.*?)</pre>', dom, re.S)
    assert match, "the probe did not run: the page did not finish loading"
    data: dict[str, Any] = json.loads(html.unescape(match.group(1)))
    return data


class LatestCells(HTMLParser):
    """(run, representation, metric, digest) -> data-value of the latest-values tables."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[tuple[str, str, str, str], str] = {}
        self.run = ""
        self.rep = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table" and "latest" in a.get("class", "").split():
            self.run = a["data-run"]
        elif tag == "tr" and "data-representation" in a:
            self.rep = a["data-representation"]
        elif tag == "td" and "data-metric" in a:
            key = (self.run, self.rep, a["data-metric"], a["data-digest"])
            self.values[key] = a["data-value"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    root = tmp_path_factory.mktemp("browser")
    db = root / "results.db"
    with ResultStore(db) as store:
        for i, (name, method, quality) in enumerate(
            [("simclr-lr0.1", "simclr", 0.6), ("simclr-lr0.3", "simclr", 1.0),
             ("simsiam-a", "simsiam", 0.8)]
        ):  # fmt: skip
            rng = np.random.default_rng(i)
            run = store.ensure_run(name, method=method, architecture="cnn1d")
            for epoch in EPOCHS:
                acc = 0.79 + 0.14 * quality * (1 - np.exp(-epoch / 8)) + rng.normal(0, 0.003)
                values = {
                    "linear_probe": acc,
                    "rankme": 110.0 if epoch == 0 else 60 + 400 * (acc - 0.79),
                    "silhouette": 0.05 + 0.8 * (acc - 0.79) + rng.normal(0, 0.01),
                    "entropy": 50 - 0.4 * epoch + rng.normal(0, 0.3),
                    "collapse_std": 0.085 + rng.normal(0, 0.001),
                }
                point = store.ensure_point(run, path=f"/ck/{name}/e{epoch}.pt", epoch=epoch)
                store.record_results(
                    point,
                    [
                        ("backbone", MetricDefinition(metric=m, n=2000, d=128), float(v))
                        for m, v in values.items()
                    ],
                )
        rows = store.tidy_rows()
    spectrum = np.sort(np.random.default_rng(0).pareto(1.5, 128))[::-1] + 0.01
    out = write_report(db, root / "report.html", spectra={"simclr-lr0.3": spectrum}, n_boot=100)
    return out, rows


def test_report_renders_offline_in_chromium(
    chromium: str, report: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    page, rows = report
    text = page.read_text(encoding="utf-8")
    # statically: nothing that a browser would fetch
    assert not re.search(r"""(?:src|href|srcset|action)\s*=\s*["']?\s*(?:https?:)?//""", text)
    assert not re.search(r"https?://", text)
    assert "<script" not in text.lower() and "<link" not in text.lower()
    n_images = text.count("<img ")
    assert n_images == 3 + 2 + 1  # curves per run, scatter per method, one spectrum

    probed = tmp_path / "probed.html"
    probed.write_text(text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = dump_dom(chromium, probed, tmp_path / "profile-1")
    probe = probe_result(dom)
    assert probe["resources"] == [], probe["resources"]
    assert len(probe["images"]) == n_images
    for img in probe["images"]:
        assert img["complete"] and img["width"] > 200 and img["height"] > 150, img

    # the verdict is the first thing on the page: before any table or figure
    verdict_at = dom.find('id="verdict"')
    assert 0 <= verdict_at < dom.find("<table") and verdict_at < dom.find("<img")
    assert dom.find("<h2", dom.find("<main")) > verdict_at - len('<section id="verdict"')

    # the tables as the browser parsed them hold the store's numbers, exactly
    latest: dict[tuple[str, str, str, str], tuple[int, float]] = {}
    for r in rows:
        key = (r["run"], r["representation"], r["metric"], r["digest"])
        if key not in latest or r["epoch"] > latest[key][0]:
            latest[key] = (r["epoch"], r["value"])
    parser = LatestCells()
    parser.feed(dom)
    assert set(parser.values) == set(latest)
    for key, raw in parser.values.items():
        assert float(raw) == latest[key][1]

    # a screenshot of the whole page
    shot = tmp_path / "report.png"
    height = min(int(probe["height"]) + 20, 16000)
    done = run_chromium(
        chromium,
        tmp_path / "profile-2",
        f"--window-size=1280,{height}",
        f"--screenshot={shot}",
        page.as_uri(),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == 1280
    assert int.from_bytes(data[20:24], "big") == height
    target = os.environ.get("SSLWATCH_SCREENSHOT")
    if target:  # keep the screenshot for a human to look at
        shutil.copyfile(shot, target)


def test_the_probe_sees_requests_when_a_page_makes_them(
    chromium: str, report: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """Control: the same page with two remote images; the probe must report both."""
    page, _ = report
    remote = '<img alt="remote" src="http://example.invalid/a.png">' + (
        '<img alt="remote" src="https://sslwatch.invalid/b.png">'
    )
    bad = tmp_path / "bad.html"
    text = page.read_text(encoding="utf-8")
    bad.write_text(text.replace("</body>", remote + PROBE + "</body>"), encoding="utf-8")
    probe = probe_result(dump_dom(chromium, bad, tmp_path / "profile"))
    assert sorted(probe["resources"]) == [
        "http://example.invalid/a.png",
        "https://sslwatch.invalid/b.png",
    ]
    broken = [img for img in probe["images"] if img["alt"] == "remote"]
    assert len(broken) == 2 and all(img["width"] == 0 for img in broken)
