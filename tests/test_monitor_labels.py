"""Monitor with labels: the streamed references equal the offline functions on the same
rows and the same split; no labels, no label state; bad labels are refused clearly."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import sslwatch.online.state
from sslwatch import knn_accuracy, ridge_probe
from sslwatch.analysis import REFERENCES
from sslwatch.metrics.probes import DEFAULT_RIDGE_L2_GRID
from sslwatch.online.keys import KEY_SPACE, LABEL_SALT, content_keys
from sslwatch.online.monitor import Monitor, NonFiniteWarning

LABEL_ONLY = ["ridge_probe", "knn_accuracy"]


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    jitter = np.random.default_rng(0).normal(0.0, 0.05, x.shape)  # distinct rows
    return x[:900] + jitter[:900], y[:900]


def split_by_key(x: np.ndarray, seed: int = 0, fraction: float = 0.2) -> tuple[np.ndarray, ...]:
    """The documented split, written out: held out iff the label-salted key < f * KEY_SPACE;
    returns train-side and held-out indices, each sorted by key."""
    keys = content_keys(torch.from_numpy(x), seed ^ LABEL_SALT).numpy()
    held = keys < int(fraction * KEY_SPACE)
    order = np.argsort(keys, kind="stable")
    return order[~held[order]], order[held[order]]


def uneven(n: int, seed: int = 1) -> list[slice]:
    cuts = np.sort(np.random.default_rng(seed).choice(np.arange(1, n), 12, replace=False))
    edges = [0, *cuts.tolist(), n]
    return [slice(a, b) for a, b in itertools.pairwise(edges)]


def offline_ridge(xtr, ytr, xte, yte) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(chosen l2, accuracy): the best held-out accuracy over the grid, strongest first."""
    scores = [(l2, ridge_probe(xtr, ytr, xte, yte, l2=l2)) for l2 in DEFAULT_RIDGE_L2_GRID]
    scores.sort(key=lambda s: -s[0])
    best = max(acc for _, acc in scores)
    return next((l2, acc) for l2, acc in scores if acc == best)


def feed(mon: Monitor, x: np.ndarray, y: np.ndarray, *, as_numpy: bool = False) -> None:
    for i, sl in enumerate(uneven(len(x))):
        labels = y[sl] if as_numpy else torch.from_numpy(y[sl])
        mon.update(torch.from_numpy(x[sl]), labels=labels, step=i)


def test_online_equals_offline_on_the_same_rows_and_split(digits) -> None:  # type: ignore[no-untyped-def]
    x, y = digits
    mon = Monitor(LABEL_ONLY, reservoir_size=2048, alarms=None)
    feed(mon, x, y)
    res = mon.compute()
    tr, te = split_by_key(x)
    assert 0.15 < len(te) / len(x) < 0.25
    assert res["knn_accuracy"] == knn_accuracy(x[tr], y[tr], x[te], y[te])
    l2, acc = offline_ridge(x[tr], y[tr], x[te], y[te])
    definition = res.definitions["ridge_probe"]
    assert definition.outcome["l2"] == l2 and res["ridge_probe"] == acc
    assert definition.outcome["n_train"] == len(tr) and definition.n == len(x)
    assert definition.params["split"] == "content_key"
    assert definition.params["probe_test_fraction"] == 0.2
    assert acc > 0.85


def test_bounded_reservoirs_and_ridge_over_every_train_row(digits) -> None:  # type: ignore[no-untyped-def]
    """kNN: bank and test rows are the bottom-R keys of each side; the ridge probe still
    fits every train-side row (its statistics), scored on the bottom-R held-out rows."""
    x, y = digits
    mon = Monitor(LABEL_ONLY, reservoir_size=100, alarms=None, params={"ridge_probe": {"l2": 0.01}})
    feed(mon, x, y, as_numpy=True)
    res = mon.compute()
    tr, te = split_by_key(x)
    bank, test = tr[:100], te[:100]
    assert res["knn_accuracy"] == knn_accuracy(x[bank], y[bank], x[test], y[test])
    assert res["ridge_probe"] == ridge_probe(x[tr], y[tr], x[test], y[test], l2=0.01)
    assert res.definitions["ridge_probe"].outcome["n_train"] == len(tr)


def test_labels_on_some_updates_only_feed_the_label_state_from_those(digits) -> None:  # type: ignore[no-untyped-def]
    x, y = digits
    mixed = Monitor(["rankme", *LABEL_ONLY], reservoir_size=2048, alarms=None)
    labelled = np.zeros(len(x), dtype=bool)
    for i, sl in enumerate(uneven(len(x))):
        if i % 2:
            mixed.update(torch.from_numpy(x[sl]), labels=torch.from_numpy(y[sl]))
            labelled[sl] = True
        else:
            mixed.update(torch.from_numpy(x[sl]))
    res = mixed.compute()
    assert res.n_rows == len(x)  # the label-free metrics see every row
    xl, yl = x[labelled], y[labelled]
    tr, te = split_by_key(xl)
    assert res["knn_accuracy"] == knn_accuracy(xl[tr], yl[tr], xl[te], yl[te])
    assert res["ridge_probe"] == offline_ridge(xl[tr], yl[tr], xl[te], yl[te])[1]


def test_never_given_labels_means_no_label_metrics_and_no_state(digits) -> None:  # type: ignore[no-untyped-def]
    x, _ = digits
    mon = Monitor(reservoir_size=64, alarms=None)
    feed_x = torch.from_numpy(x)
    mon.update(feed_x[:300])
    res = mon.compute()
    assert not set(LABEL_ONLY) & set(res) and not set(LABEL_ONLY) & set(mon.metrics)
    st = mon._state
    for name in ("lab_total", "lab_outer", "lab_class_sums", "lab_class_counts"):
        assert getattr(st, name).numel() == 0, name
    for name in ("lab_rows", "lab_keys", "lab_labels", "held_rows", "held_keys", "held_labels"):
        assert getattr(st, name) == [], name
    # once labels come, the references join the default set
    mon.update(feed_x[300:], labels=np.arange(len(x) - 300) % 3)
    assert set(LABEL_ONLY) <= set(mon.compute())


def test_label_metrics_without_labels_are_nan_with_a_reason(digits) -> None:  # type: ignore[no-untyped-def]
    x, _ = digits
    mon = Monitor(["rankme", "knn_accuracy"], alarms=None)
    mon.update(torch.from_numpy(x[:100]))
    with pytest.warns(RuntimeWarning, match="no labelled rows"):
        res = mon.compute()
    assert math.isnan(res["knn_accuracy"]) and math.isfinite(res["rankme"])
    with pytest.raises(ValueError, match="needs labels"):
        Monitor(["linear_probe"])


def test_bad_labels_raise_clear_errors() -> None:
    mon = Monitor(LABEL_ONLY, alarms=None)
    z = torch.randn(6, 3)
    with pytest.raises(ValueError, match="one class index per embedding row"):
        mon.update(z, labels=torch.arange(5))
    with pytest.raises(ValueError, match="integer class indices"):
        mon.update(z, labels=torch.zeros(6))
    with pytest.raises(ValueError, match="integer class indices"):
        mon.update(z, labels=np.array(["a"] * 6))
    with pytest.raises(ValueError, match="non-negative"):
        mon.update(z, labels=np.array([0, 1, -1, 0, 1, 0]))
    with pytest.raises(ValueError, match="one class index per embedding row"):
        mon.update(z, labels=torch.zeros(6, 2, dtype=torch.int64))
    assert mon.n_updates == 0 and not mon._state.has_labels  # nothing was folded


def test_nonfinite_rows_drop_their_labels_and_the_sync_free_path_agrees(  # type: ignore[no-untyped-def]
    digits, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = digits
    x = x.copy()
    x[[5, 400]] = np.nan
    results = []
    for device_path in (False, True):
        if device_path:  # the path accelerators take, run on the CPU
            monkeypatch.setattr(sslwatch.online.state, "on_host", lambda t: False)
        mon = Monitor(LABEL_ONLY, reservoir_size=2048, alarms=None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonFiniteWarning)
            feed(mon, x, y)
            results.append(mon.compute())
    ok = np.isfinite(x).all(axis=1)
    xf, yf = x[ok], y[ok]
    tr, te = split_by_key(xf)
    for res in results:
        assert res["knn_accuracy"] == knn_accuracy(xf[tr], yf[tr], xf[te], yf[te])
        assert res["ridge_probe"] == offline_ridge(xf[tr], yf[tr], xf[te], yf[te])[1]
        assert res.definitions["ridge_probe"].outcome["n_train"] == len(tr)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_monitor_equals_the_host_monitor(digits) -> None:  # type: ignore[no-untyped-def]
    x, y = digits
    results = []
    for device in ("cpu", "cuda"):
        mon = Monitor(LABEL_ONLY, reservoir_size=2048, alarms=None)
        for sl in uneven(len(x)):
            mon.update(
                torch.from_numpy(x[sl]).to(device), labels=torch.from_numpy(y[sl]).to(device)
            )
        results.append(mon.compute())
    host, cuda = results
    assert cuda["knn_accuracy"] == host["knn_accuracy"]
    assert cuda["ridge_probe"] == host["ridge_probe"]
    assert cuda.definitions["ridge_probe"].outcome == host.definitions["ridge_probe"].outcome


def test_reset_clears_the_label_state_and_the_analysis_takes_both_references(digits) -> None:  # type: ignore[no-untyped-def]
    x, y = digits
    mon = Monitor(LABEL_ONLY, alarms=None)
    feed(mon, x[:300], y[:300])
    mon.reset()
    assert not mon._state.has_labels
    assert "ridge_probe" in REFERENCES and "knn_accuracy" in REFERENCES


def test_one_element_states_keep_their_shapes() -> None:
    """torchmetrics squeezes every one-element tensor of a computed collection to 0-d; the
    Monitor's state must keep its shapes: a single sampled row, a single class, D = 1."""
    torch.manual_seed(0)
    few = Monitor(LABEL_ONLY, alarms=None)
    few.update(torch.randn(3, 4), labels=torch.tensor([0, 1, 2]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = few.compute()  # one row on a side: no RuntimeError from torch.cat
    for name in LABEL_ONLY:
        assert math.isnan(res[name]) or 0.0 <= res[name] <= 1.0
    assert all("zero-dimensional" not in str(w.message) for w in caught)

    one_class = Monitor(["ridge_probe"], alarms=None)
    one_class.update(torch.randn(50, 4), labels=torch.zeros(50, dtype=torch.int64))
    with pytest.warns(RuntimeWarning, match="at least two distinct classes"):
        assert math.isnan(one_class.compute()["ridge_probe"])

    z = torch.randn(400, 1, dtype=torch.float64)
    flat = Monitor(["stable_rank", "entropy_gaussian"], alarms=None)
    flat.update(z)
    res = flat.compute()
    var = float(z.var(correction=1))  # one dimension, closed form (sample covariance)
    assert res["entropy_gaussian"] == pytest.approx(0.5 * math.log(2 * math.pi * math.e * var))
    assert res["stable_rank"] == pytest.approx(1.0)
