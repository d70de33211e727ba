"""Monitor: streaming values against one-shot oracles, the reservoir, robustness, alarms, sinks."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import math
import struct
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import sslwatch.online.state
from sslwatch.core.evaluate import evaluate
from sslwatch.core.registry import REGISTRY
from sslwatch.metrics.spectrum import alpha_req, rankme, stable_rank
from sslwatch.metrics.views import alignment, lidar
from sslwatch.online.alarms import CollapseAlarms, CollapseWarning
from sslwatch.online.keys import KEY_PRIME, KEY_SPACE, content_keys
from sslwatch.online.monitor import Monitor, MonitorResult, NonFiniteWarning
from sslwatch.online.settings import MonitorOptions, MonitorSettings
from sslwatch.online.sinks import CSV_COLUMNS, CSVSink, StoreSink, TensorBoardSink

SPECTRUM = [
    "rankme",
    "stable_rank",
    "alpha_req",
    "nesum",
    "participation_ratio",
    "entropy_gaussian",
]


# --------------------------------------------------------------------------- oracles


def np_spectrum_oracle(x: np.ndarray) -> dict[str, float]:
    """The spectrum metrics written plainly with numpy (SVD / eigh), on all rows."""
    s = np.linalg.svd(x, compute_uv=False)
    p = s / s.sum() + 1e-7
    cov = np.cov(x, rowvar=False)
    lam = np.sort(np.linalg.eigvalsh(cov))[::-1]
    last = min(100, lam.size)
    ranks = np.arange(4, last + 1)
    slope = np.polyfit(-np.log(ranks), np.log(lam[3:last]), 1)[0]
    _, logdet = np.linalg.slogdet(cov)
    return {
        "rankme": float(np.exp(-np.sum(p * np.log(p)))),
        "stable_rank": float((s**2).sum() / s[0] ** 2),
        "alpha_req": float(slope),
        "nesum": float(lam.sum() / lam[0]),
        "participation_ratio": float(lam.sum() ** 2 / (lam**2).sum()),
        "entropy_gaussian": float(0.5 * (x.shape[1] * math.log(2 * math.pi * math.e) + logdet)),
    }


def decaying(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = np.arange(1, d + 1, dtype=np.float64) ** -0.8
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (rng.standard_normal((n, d)) * scales) @ q + 0.3


def uneven_batches(n: int, seed: int) -> list[slice]:
    rng = np.random.default_rng(seed)
    out, start = [], 0
    while start < n:
        stop = min(n, start + int(rng.integers(1, 80)))
        out.append(slice(start, stop))
        start = stop
    return out


def python_key(row: np.ndarray, seed: int) -> int:
    """content_keys re-derived with Python integers from the row's bytes (no torch maths)."""
    from sslwatch.online.keys import _hash_coefficients

    if row.dtype == np.float32:
        words = [struct.unpack("<I", struct.pack("<f", v))[0] for v in row.tolist()]
        limbs = [[w & 0xFFFF for w in words], [(w >> 16) & 0xFFFF for w in words]]
    else:
        words = [struct.unpack("<Q", struct.pack("<d", v))[0] for v in row.tolist()]
        limbs = [[(w >> s) & 0xFFFF for w in words] for s in (0, 16, 32, 48)]
    flat = [x for limb in limbs for x in limb]
    coef = _hash_coefficients(len(flat), seed).to(torch.int64).tolist()
    h = [
        (coef[-1][c] + sum(a[c] * x for a, x in zip(coef, flat, strict=False))) % KEY_PRIME
        for c in range(3)
    ]
    return (h[0] * KEY_PRIME + h[1]) * KEY_PRIME + h[2]


def feed(monitor: Monitor, x: np.ndarray | torch.Tensor, batches: list[slice]) -> None:
    for i, sl in enumerate(batches):
        monitor.update(x[sl], step=i)


# --------------------------------------------------------------------------- spectrum


def test_streaming_spectrum_equals_numpy_oracle_on_concatenation() -> None:
    x = decaying(1500, 24)
    mon = Monitor(SPECTRUM, alarms=None)
    feed(mon, torch.from_numpy(x), uneven_batches(len(x), 1))
    res = mon.compute()
    oracle = np_spectrum_oracle(x)
    for name in SPECTRUM:
        assert res[name] == pytest.approx(oracle[name], rel=1e-9), name
    # and the library's one-shot functions on the concatenation
    assert res["rankme"] == pytest.approx(rankme(x), rel=1e-9)
    assert res["stable_rank"] == pytest.approx(stable_rank(x), rel=1e-9)
    assert res["alpha_req"] == pytest.approx(alpha_req(x), rel=1e-9)
    assert res.definitions["rankme"].n == 1500 and res.definitions["rankme"].d == 24
    assert res.definitions["rankme"].dtype == "float64"
    assert res.n_rows == 1500 and res.n_nonfinite == 0


def test_numpy_input_and_many_single_rows() -> None:
    x = decaying(200, 6, seed=3)
    mon = Monitor(["rankme", "stable_rank"], alarms=None)
    for row in x:
        mon.update(row[None, :])
    res = mon.compute()
    oracle = np_spectrum_oracle(x)
    assert res["rankme"] == pytest.approx(oracle["rankme"], rel=1e-9)
    assert res["stable_rank"] == pytest.approx(oracle["stable_rank"], rel=1e-9)


def test_float32_gram_option_is_close_and_half_inputs_are_accepted() -> None:
    x64 = decaying(1200, 32, seed=2)
    x32 = torch.from_numpy(x64).float()
    oracle = np_spectrum_oracle(x32.double().numpy())
    batches = uneven_batches(1200, 4)
    names = ["rankme", "stable_rank", "alpha_req", "participation_ratio"]
    exact = Monitor(names, alarms=None, gram_dtype="float64")
    auto = Monitor(names, alarms=None)  # "auto" is exact
    fast = Monitor(names, alarms=None, gram_dtype="float32")  # float32 products
    for mon in (exact, auto, fast):
        feed(mon, x32, batches)
    r_exact, r_auto, r_fast = exact.compute(), auto.compute(), fast.compute()
    for name in names:
        assert r_exact[name] == pytest.approx(oracle[name], rel=1e-9)
        assert r_auto[name] == pytest.approx(oracle[name], rel=1e-9)
        assert r_fast[name] == pytest.approx(oracle[name], rel=1e-6)
    assert r_exact.definitions["rankme"].dtype == "float32"

    bf = x32.to(torch.bfloat16)
    mon = Monitor(["rankme"], alarms=None)
    feed(mon, bf, batches)
    res = mon.compute()
    assert res.definitions["rankme"].dtype == "bfloat16"
    assert res["rankme"] == pytest.approx(
        np_spectrum_oracle(bf.double().numpy())["rankme"], rel=1e-9
    )


def test_float32_products_warn_when_the_spectrum_tail_is_round_off() -> None:
    """Rank 4 plus a mean in D = 64, exact in float32: float32 products leave ~1e-9 of the
    trace where the true eigenvalues are 0, and RankMe reads it (oracle: float64 SVD)."""
    rng = np.random.default_rng(3)
    a, b = rng.integers(-3, 4, size=(3000, 4)), rng.integers(-3, 4, size=(4, 64))
    low_rank = torch.from_numpy((a @ b + 3).astype(np.float32))
    oracle = np_spectrum_oracle(low_rank.double().numpy())["rankme"]
    fast = Monitor(["rankme"], alarms=None, gram_dtype="float32")
    feed(fast, low_rank, uneven_batches(3000, 5))
    with pytest.warns(UserWarning, match=r"of 64 covariance eigenvalues are below float32"):
        inflated = fast.compute()["rankme"]
    assert inflated > oracle * (1 + 1e-4)  # what the warning is about
    exact = Monitor(["rankme"], alarms=None)
    feed(exact, low_rank, uneven_batches(3000, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # float64 products: exact, no warning
        assert exact.compute()["rankme"] == pytest.approx(oracle, rel=1e-9)
    full_rank = torch.from_numpy(decaying(3000, 64, seed=4)).float()
    healthy = Monitor(["rankme"], alarms=None, gram_dtype="float32")
    feed(healthy, full_rank, uneven_batches(3000, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every eigenvalue resolved: no warning
        healthy.compute()


def test_blas_threads_limit_is_scoped_and_value_neutral() -> None:
    from threadpoolctl import threadpool_info

    before = [(i["filepath"], i["num_threads"]) for i in threadpool_info()]
    x = torch.from_numpy(decaying(800, 40, seed=12))
    values = []
    for threads in (1, None):
        mon = Monitor(["rankme", "stable_rank"], alarms=None, blas_threads=threads)
        feed(mon, x, uneven_batches(800, 13))
        values.append(mon.compute())
    assert [(i["filepath"], i["num_threads"]) for i in threadpool_info()] == before
    for name in ("rankme", "stable_rank"):
        assert values[0][name] == pytest.approx(values[1][name], rel=1e-12)
    with pytest.raises(ValueError, match="blas_threads"):
        Monitor(blas_threads=0)


def test_moment_fraction_uses_the_keyed_subsample() -> None:
    x = decaying(2000, 12, seed=5)
    mon = Monitor(["rankme", "stable_rank"], alarms=None, moment_fraction=0.25)
    feed(mon, torch.from_numpy(x), uneven_batches(2000, 2))
    res = mon.compute()
    keys = content_keys(torch.from_numpy(x), 0).numpy()
    chosen = x[keys < int(0.25 * KEY_SPACE)]
    assert 350 < len(chosen) < 650  # a Bernoulli(1/4) thinning
    assert res["rankme"] == pytest.approx(np_spectrum_oracle(chosen)["rankme"], rel=1e-9)
    assert res.definitions["rankme"].n == len(chosen)
    assert res.definitions["rankme"].params["moment_fraction"] == 0.25


# --------------------------------------------------------------------------- reservoir


def test_content_keys_match_python_integer_oracle() -> None:
    rng = np.random.default_rng(0)
    x64 = rng.standard_normal((5, 7))
    x32 = x64.astype(np.float32)
    k64 = content_keys(torch.from_numpy(x64), seed=11)
    k32 = content_keys(torch.from_numpy(x32), seed=11)
    for i in range(5):
        assert int(k64[i]) == python_key(x64[i], 11)
        assert int(k32[i]) == python_key(x32[i], 11)
    # a key depends on the row only, not on the batch it arrives in
    big = torch.from_numpy(rng.standard_normal((300, 40)))
    keys = content_keys(big, 3)
    singles = torch.cat([content_keys(big[i : i + 1], 3) for i in range(0, 300, 37)])
    assert torch.equal(keys[::37], singles)
    assert not torch.equal(keys, content_keys(big, 4))  # seeded


def test_device_key_implementation_equals_host_implementation() -> None:
    from sslwatch.online.keys import _hash_coefficients, _keys_torch

    rng = np.random.default_rng(5)
    for z in (
        torch.from_numpy(rng.standard_normal((70, 33))),
        torch.from_numpy(rng.standard_normal((70, 33)).astype(np.float32)),
    ):
        limbs = 4 if z.dtype == torch.float64 else 2
        columns = _hash_coefficients(limbs * 33, 9).T.contiguous()
        assert torch.equal(_keys_torch(z, columns), content_keys(z, 9))


def test_content_keys_are_uniform() -> None:
    rng = np.random.default_rng(1)
    # structured rows (a grid, many exact zeros) still get uniform keys
    x = np.zeros((4000, 16), dtype=np.float32)
    x[np.arange(4000), np.arange(4000) % 16] = np.arange(4000) / 7.0
    for z in (x, rng.standard_normal((4000, 16))):
        u = content_keys(torch.from_numpy(z), 0).double().numpy() / KEY_SPACE
        assert u.min() >= 0 and u.max() < 1
        assert stats.kstest(u, "uniform").pvalue > 1e-3


def test_reservoir_is_bounded_and_is_the_bottom_r_of_all_rows() -> None:
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.standard_normal((3000, 8)))
    r = 100
    mon = Monitor(["collapse_std"], reservoir_size=r, alarms=None)
    for sl in uneven_batches(3000, 3):
        mon.update(x[sl])
        held = sum(int(t.shape[0]) for t in mon._state.rows)
        assert held <= 2 * r + 80
    sample = mon.sample()
    assert sample is not None and sample.shape == (r, 8)
    keys = content_keys(x, 0)
    expected = x[torch.argsort(keys)[:r]]
    assert torch.equal(sample, expected)
    # uniform-like: about half of the kept rows come from the first half of the stream
    first_half = int((torch.argsort(keys)[:r] < 1500).sum())
    assert 30 <= first_half <= 70


@settings(max_examples=20, deadline=None)
@given(
    perm_seed=st.integers(0, 10_000),
    cuts=st.lists(st.integers(1, 399), max_size=12),
    size=st.integers(2, 150),
)
def test_reservoir_invariant_to_batch_split_and_order(
    perm_seed: int, cuts: list[int], size: int
) -> None:
    rng = np.random.default_rng(7)
    x = torch.from_numpy(rng.standard_normal((400, 5)).astype(np.float32))
    reference = Monitor(["collapse_std"], reservoir_size=size, alarms=None)
    reference.update(x)
    perm = torch.from_numpy(np.random.default_rng(perm_seed).permutation(400))
    shuffled = x[perm]
    bounds = [0, *sorted(set(cuts)), 400]
    mon = Monitor(["collapse_std"], reservoir_size=size, alarms=None)
    for a, b in itertools.pairwise(bounds):
        if b > a:
            mon.update(shuffled[a:b])
    assert torch.equal(mon.sample(), reference.sample())


def test_reservoir_is_deterministic_and_seeded() -> None:
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((500, 6)))
    samples = []
    for seed in (0, 0, 1):
        mon = Monitor(["collapse_std"], reservoir_size=50, seed=seed, alarms=None)
        feed(mon, x, uneven_batches(500, seed + 10))
        samples.append(mon.sample())
    assert torch.equal(samples[0], samples[1])
    assert not torch.equal(samples[0], samples[2])
    mon.reset()
    assert mon.sample() is None


def test_point_metrics_are_evaluate_on_the_reservoir_sample(digits) -> None:  # type: ignore[no-untyped-def]
    x, _ = digits
    names = ["silhouette", "cluster_agreement", "entropy", "collapse_std"]
    mon = Monitor(names, reservoir_size=150, seed=4, alarms=None)
    feed(mon, torch.from_numpy(x[:500]), uneven_batches(500, 5))
    res = mon.compute()
    sample = mon.sample()
    assert sample is not None and res.n_sample == 150
    offline = evaluate(sample, metrics=names, sample_size=None, seed=4)
    for name in names:
        assert res[name] == offline[name], name
    assert res.definitions["silhouette"].params["sample_size"] == 150
    assert res.definitions["silhouette"].n == 150


def test_views_feed_view_metrics() -> None:
    rng = np.random.default_rng(4)
    base = rng.standard_normal((240, 6))
    views = torch.from_numpy(
        np.stack([base + 0.1 * rng.standard_normal((240, 6)) for _ in range(3)], axis=1)
    )
    mon = Monitor(
        ["rankme", "lidar", "alignment", "cluster_agreement"], reservoir_size=100, alarms=None
    )
    for sl in uneven_batches(240, 6):
        mon.update(views[sl, 0], views=views[sl])
    res = mon.compute()
    kept = mon._state.compute()["view_rows"].reshape(-1, 3, 6)
    assert kept.shape[0] == 100
    assert res["lidar"] == pytest.approx(lidar(kept), rel=1e-12)
    assert res["alignment"] == pytest.approx(alignment(kept[:, 0], kept[:, 1]), rel=1e-12)
    assert res.definitions["cluster_agreement"].params["source"] == "views"
    assert res.definitions["lidar"].n == 100
    with pytest.raises(ValueError, match="n_views"):
        mon.update(views[:5, 0], views=views[:5, 0])
    with pytest.raises(ValueError, match="keep q and d fixed"):
        mon.update(views[:5, 0], views=views[:5, :2])


# --------------------------------------------------------------------------- robustness


def test_nonfinite_rows_are_skipped_counted_and_reported() -> None:
    x = decaying(600, 10, seed=6)
    dirty = x.copy()
    dirty[[5, 77, 78]] = np.nan
    dirty[300, 2] = np.inf
    mon = Monitor(["rankme", "collapse_std"], reservoir_size=50, alarms=None)
    with pytest.warns(NonFiniteWarning, match=r"at step \d") as record:
        for i, sl in enumerate([slice(0, 50), slice(50, 290), slice(290, 600)]):
            mon.update(torch.from_numpy(dirty[sl]), step=i)
    messages = [str(w.message) for w in record]
    assert len(messages) == 3 and "2 of 240 embedding rows at step 1" in messages[1]
    assert all(w.filename == __file__ for w in record)  # points at the caller's line
    res = mon.compute()
    clean = np.delete(x, [5, 77, 78, 300], axis=0)
    assert res.n_nonfinite == 4 and res.n_rows == 596
    assert res.nonfinite_steps == (0, 1, 2)
    assert res["rankme"] == pytest.approx(np_spectrum_oracle(clean)["rankme"], rel=1e-9)
    assert math.isfinite(res["collapse_std"])
    assert res.log_dict()["sslwatch/embeddings/nonfinite_rows"] == 4.0


def sync_free_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Send CPU tensors down the sync-free path that tensors on accelerators take."""
    monkeypatch.setattr(sslwatch.online.state, "on_host", lambda t: False)


def test_accelerator_path_equals_host_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sync-free path used on GPUs (run here on the CPU) gives the same state."""
    x = decaying(700, 10, seed=9)
    x[[3, 400]] = np.nan
    views = torch.from_numpy(np.stack([x, x + 0.1], axis=1))
    views[10, 1, 0] = math.inf
    names = ["rankme", "alpha_req", "collapse_std", "lidar"]
    results, samples, warned = [], [], []
    for device_path in (False, True):
        if device_path:
            sync_free_path(monkeypatch)
        mon = Monitor(names, reservoir_size=60, alarms=None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for i, sl in enumerate(uneven_batches(700, 8)):
                mon.update(torch.from_numpy(x[sl]), views=views[sl], step=i)
            results.append(mon.compute())
        samples.append((mon.sample(), mon._state.compute()["view_rows"]))
        steps = sorted(
            str(w.message).split(" at step ")[1].split(" ")[0]
            for w in caught
            if issubclass(w.category, NonFiniteWarning)
        )
        warned.append(steps)
    host, device = results
    # batch 0 holds rows 3 and 10 (embedding + views), batch 9 row 400: 4 warnings each
    assert warned[0] == warned[1] and len(warned[0]) == 4
    assert torch.equal(samples[0][0], samples[1][0])
    assert torch.equal(samples[0][1], samples[1][1])
    assert device.n_nonfinite == host.n_nonfinite == 2 and device.n_rows == 698
    assert sorted(device.nonfinite_steps) == sorted(host.nonfinite_steps)
    for name in names:
        assert device[name] == pytest.approx(host[name], rel=1e-12), name


def test_mixed_route_is_centred_so_a_large_mean_keeps_the_covariance_precise() -> None:
    # ReLU-like features: mean 1000x the spread. An uncentred float32 product would lose
    # the covariance (eigenvalues ~1e-6 of the raw second moment) to rounding.
    x = (decaying(2000, 24, seed=4) + 1000.0).astype(np.float32)
    oracle = np_spectrum_oracle(x.astype(np.float64))
    names = ["rankme", "participation_ratio", "alpha_req", "nesum"]
    mon = Monitor(names, alarms=None, gram_dtype="float32")
    feed(mon, torch.from_numpy(x), uneven_batches(2000, 7))
    res = mon.compute()
    for name in names:
        assert res[name] == pytest.approx(oracle[name], rel=1e-5), name
    # the pending float32 sums are folded in before compute and survive a reset cycle
    mon.reset()
    feed(mon, torch.from_numpy(x), uneven_batches(2000, 3))
    again = mon.compute()
    for name in names:
        assert again[name] == pytest.approx(oracle[name], rel=1e-5), name


def test_autocast_does_not_lower_the_moments_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    x = decaying(600, 16, seed=10)
    oracle = np_spectrum_oracle(x.astype(np.float32).astype(np.float64))["rankme"]
    mon = Monitor(["rankme"], alarms=None, gram_dtype="float32")
    sync_free_path(monkeypatch)  # torch matmul path, which autocast would hit
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feed(mon, torch.from_numpy(x).float(), uneven_batches(600, 11))
    assert mon.compute()["rankme"] == pytest.approx(oracle, rel=1e-5)


def test_exception_inside_a_metric_is_a_warning_and_nan(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def boom(ctx, p):  # type: ignore[no-untyped-def]
        raise RuntimeError("planted failure")

    spec = REGISTRY["stable_rank"]
    monkeypatch.setitem(REGISTRY._specs, "stable_rank", dataclasses.replace(spec, compute=boom))
    mon = Monitor(["rankme", "stable_rank"], alarms=None)
    mon.update(torch.randn(50, 4, dtype=torch.float64))
    with pytest.warns(RuntimeWarning, match="stable_rank.*planted failure"):
        res = mon.compute()
    assert math.isnan(res["stable_rank"]) and math.isfinite(res["rankme"])
    assert "planted failure" in res.errors["stable_rank"]


def test_empty_and_tiny_windows_never_raise() -> None:
    mon = Monitor(["rankme", "silhouette"], alarms=None)
    with pytest.warns(RuntimeWarning, match="no finite embeddings"):
        res = mon.compute()
    assert all(math.isnan(v) for v in res.values()) and res.n_rows == 0
    mon.update(torch.tensor([[1.0, 2.0, 3.0]]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = mon.compute()
    assert math.isnan(res["silhouette"]) and any("silhouette" in str(w.message) for w in caught)


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="needs labels"):
        Monitor(["linear_probe"])
    with pytest.raises(ValueError, match="unknown metric"):
        Monitor(["rank_me"])
    with pytest.raises(ValueError, match="unknown parameter"):
        Monitor(["rankme"], params={"rankme": {"epsilon": 1}})
    with pytest.raises(ValueError, match="reservoir_size"):
        Monitor(reservoir_size=1)
    mon = Monitor(["rankme"], dim=4)
    with pytest.raises(ValueError, match="one Monitor per representation"):
        mon.update(torch.randn(3, 5))
    with pytest.raises(ValueError, match="2-D"):
        mon.update(torch.randn(3, 4, 1))


def test_settings_are_declared_once_and_taken_by_keyword_or_whole() -> None:
    # the keyword form lists every setting but metrics (a positional argument)
    declared = {f.name for f in dataclasses.fields(MonitorSettings)}
    assert set(MonitorOptions.__annotations__) == declared - {"metrics"}
    settings = MonitorSettings(metrics=("rankme",), reservoir_size=64, seed=3, alarms=None)
    whole = Monitor(settings=settings)
    by_keyword = Monitor(["rankme"], reservoir_size=64, seed=3, alarms=None)
    assert whole.settings == by_keyword.settings == settings
    assert Monitor().settings == MonitorSettings()  # one set of defaults
    with pytest.raises(ValueError, match="not both"):
        Monitor(["rankme"], settings=settings)
    with pytest.raises(ValueError, match="not both"):
        Monitor(settings=settings, seed=1)
    with pytest.raises(ValueError, match="moment_fraction"):
        MonitorSettings(moment_fraction=0.0)


def test_params_override_reaches_value_and_definition() -> None:
    x = decaying(300, 8, seed=8)
    mon = Monitor(["rankme"], params={"rankme": {"eps": 1e-3}}, alarms=None)
    mon.update(torch.from_numpy(x))
    res = mon.compute()
    s = np.linalg.svd(x, compute_uv=False)
    p = s / s.sum() + 1e-3
    assert res["rankme"] == pytest.approx(float(np.exp(-np.sum(p * np.log(p)))), rel=1e-9)
    assert res.definitions["rankme"].params["eps"] == 1e-3


# --------------------------------------------------------------------------- alarms


ALARM_METRICS = ["rankme", "collapse_std", "entropy"]


def healthy(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, d)))


def collapsed(n: int, d: int, seed: int, spread: float) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    direction = np.ones(d) / math.sqrt(d)
    return torch.from_numpy(direction + spread * rng.standard_normal((n, d)))


def run_windows(mon: Monitor, windows: list[torch.Tensor]) -> list[MonitorResult]:
    out = []
    for i, w in enumerate(windows):
        mon.update(w, step=10 * (i + 1))
        out.append(mon.compute())
        mon.reset()
    return out


def test_alarms_fire_on_collapse_and_can_stop() -> None:
    d = 16
    windows = [healthy(200, d, 0), healthy(200, d, 1), collapsed(200, d, 2, 0.01)]
    mon = Monitor(ALARM_METRICS, reservoir_size=200, alarms=CollapseAlarms(stop_on_collapse=True))
    with pytest.warns(CollapseWarning, match="at step 30") as record:
        results = run_windows(mon, windows)
    fired = {e.alarm.split(" ")[0] for e in results[-1].alarms}
    assert {"rankme", "collapse_std", "entropy"} <= fired
    assert results[0].alarms == () and results[1].alarms == ()
    assert mon.should_stop
    assert any("collapse_std" in str(w.message) for w in record)
    # the absolute RankMe floor alone, on a healthy-then-collapsed pair
    only_floor = Monitor(
        ["rankme"],
        alarms=CollapseAlarms(
            rankme_fraction=None, collapse_std_fraction=None, entropy_drop=None, rankme_min=3.0
        ),
    )
    with pytest.warns(CollapseWarning, match="rankme below minimum"):
        run_windows(only_floor, [collapsed(100, d, 3, 1e-4)])
    assert not only_floor.should_stop  # stop_on_collapse defaults to False


def test_alarms_stay_quiet_on_a_healthy_run() -> None:
    d = 16
    windows = [healthy(200, d, s) * (1.0 + 0.05 * s) for s in range(5)]
    mon = Monitor(ALARM_METRICS, reservoir_size=200, alarms=CollapseAlarms(stop_on_collapse=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CollapseWarning)
        results = run_windows(mon, windows)
    assert all(r.alarms == () for r in results) and not mon.should_stop
    assert mon.alarm_events == []


def test_rankme_fraction_respects_warmup_and_state_roundtrip() -> None:
    d = 16
    # a high-rank random init, then a legitimately lower (but healthy) rank
    low_rank = torch.from_numpy(
        np.random.default_rng(5).standard_normal((300, 3))
        @ np.random.default_rng(6).standard_normal((3, d))
    )
    cfg = CollapseAlarms(
        rankme_min=None,
        collapse_std_fraction=None,
        entropy_drop=None,
        rankme_fraction=0.5,
        warmup=1,
    )
    mon = Monitor(["rankme"], alarms=cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CollapseWarning)
        run_windows(mon, [healthy(300, d, 0), low_rank])  # warmup compute ignored
    state = mon.state_dict()
    resumed = Monitor(["rankme"], alarms=cfg)
    resumed.load_state_dict(state)
    with pytest.warns(CollapseWarning, match="running maximum"):
        run_windows(resumed, [collapsed(300, d, 7, 1e-3)])


# --------------------------------------------------------------------------- sinks


def small_result(step: int, poison: bool = False) -> MonitorResult:
    x = decaying(120, 6, seed=step)
    if poison:
        x[0] = 0.0
        x[:, 0] = 1.0
    mon = Monitor(["rankme", "stable_rank", "entropy_gaussian"], name="backbone", alarms=None)
    mon.update(torch.from_numpy(x), step=step)
    return mon.compute(epoch=step // 10)


def test_csv_sink_appends_with_one_header_and_survives_a_torn_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "sub" / "m.csv"
    r1, r2 = small_result(5), small_result(15)
    CSVSink(path).write(r1)
    with open(path, "a") as fh:  # a crash in the middle of a line
        fh.write("2024-01-01,99,9,backbone,rank")
    sink = CSVSink(path)
    sink.write(r2)
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert sum(1 for r in rows if tuple(r) == CSV_COLUMNS) == 1
    good = [r for r in rows[1:] if len(r) == len(CSV_COLUMNS)]
    assert len(good) == 6
    by_key = {(r[1], r[4]): r for r in good}
    assert float(by_key[("15", "rankme")][5]) == r2["rankme"]
    assert by_key[("15", "rankme")][2] == "1" and by_key[("5", "rankme")][3] == "backbone"
    assert by_key[("5", "rankme")][9] == r1.definitions["rankme"].digest()
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="columns"):
        CSVSink(tmp_path / "other.csv")


def test_csv_sink_writes_nan_and_inf_readably(tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = small_result(3, poison=True)
    assert res["entropy_gaussian"] == -math.inf
    CSVSink(tmp_path / "m.csv").write(res)
    with open(tmp_path / "m.csv", newline="") as fh:
        rows = {r["metric"]: r for r in csv.DictReader(fh)}
    assert float(rows["entropy_gaussian"]["value"]) == -math.inf


def test_tensorboard_sink_writes_scalars(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with TensorBoardSink(tmp_path / "tb") as sink:
        sink.write(small_result(5))
        sink.write(small_result(15), step=16)
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "sslwatch/backbone/rankme" in tags and "sslwatch/backbone/nonfinite_rows" in tags
    events = acc.Scalars("sslwatch/backbone/rankme")
    assert [e.step for e in events] == [5, 16]
    assert events[0].value == pytest.approx(small_result(5)["rankme"], rel=1e-6)


def test_store_sink_records_online_points(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sslwatch.offline.store import ResultStore

    sink = StoreSink(tmp_path / "r.db", "run-a", method="simclr")
    r1, r2 = small_result(5), small_result(15)
    sink.write(r1)
    sink.write(r2)
    sink.close()
    with ResultStore(tmp_path / "r.db") as store:
        rows = store.tidy_rows(run="run-a")
    assert len(rows) == 6
    assert {r["source"] for r in rows} == {"online"}
    rankme_rows = {r["step"]: r for r in rows if r["metric"] == "rankme"}
    assert rankme_rows[15]["value"] == r2["rankme"] and rankme_rows[15]["epoch"] == 1
    assert rankme_rows[5]["representation"] == "backbone"
    assert rankme_rows[5]["digest"] == r1.definitions["rankme"].digest()


def test_update_budget_picks_the_smallest_power_of_two_stride_within_budget() -> None:
    from sslwatch.online.budget import UpdateBudget

    budget = UpdateBudget(0.02, warmup=3, every=10)
    fed = []
    for _ in range(23):
        budget.record_step(0.100)  # a 100 ms step
        take = budget.should_update()
        fed.append(take)
        if take:
            budget.record_update(0.010)  # a 10 ms update: 10% of the step
    # 10 ms / (2% of 100 ms) = 5 -> stride 8: fed at warm-up, then every 8th batch
    assert budget.stride == 8
    assert fed[:3] == [True, True, True]
    assert [i for i, f in enumerate(fed) if f][3:] == [3, 11, 19]
    cheap = UpdateBudget(0.02, warmup=1, every=1)
    for _ in range(5):
        cheap.record_step(1.0)
        assert cheap.should_update()
        cheap.record_update(0.001)
    assert cheap.stride == 1
    capped = UpdateBudget(0.001, warmup=1, every=1, max_stride=4)
    capped.record_step(0.01)
    capped.should_update()
    capped.record_update(1.0)
    capped.should_update()
    assert capped.stride == 4
    for bad in ({"fraction": 0.0}, {"fraction": 2.0}, {"warmup": 0}, {"max_stride": True}):
        with pytest.raises(ValueError):
            UpdateBudget(**bad)  # type: ignore[arg-type]


def test_moment_cost_is_stated_and_large_states_warn() -> None:
    """8 (D^2 + D) bytes of float64 moments; above 1 GiB the monitor says so."""
    from sslwatch.online.monitor import MOMENT_WARN_BYTES

    small = Monitor(dim=64)
    assert small.moment_bytes == 8 * (64 * 64 + 64)
    assert "moment_bytes=33280" in repr(small)
    assert Monitor(dim=64, gram_dtype="float32").moment_bytes == 8 * (64 * 64 + 64) + 12 * 64 * 64
    assert Monitor(metrics=["silhouette"], dim=64).moment_bytes == 0
    assert Monitor().moment_bytes is None  # D not known yet
    d_big = int((MOMENT_WARN_BYTES / 8) ** 0.5) + 1  # just above 1 GiB; nothing allocated
    with pytest.warns(UserWarning, match=r"GiB .* per rank.*metrics="):
        Monitor(dim=d_big)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Monitor(dim=d_big, metrics=["silhouette"])  # no moments, no warning
        learned = Monitor()
        learned.update(torch.randn(8, 16))
    assert learned.moment_bytes == 8 * (16 * 16 + 16)


@pytest.mark.parametrize("gram_dtype", ["float64", "float32"])
@pytest.mark.parametrize("n", [60, 200])
def test_streamed_spectra_equal_evaluate_on_both_routes(n: int, gram_dtype: str) -> None:
    """The Monitor's D x D moments (fed in batches, through the shared Gram accumulator)
    and evaluate's route for the shape (D x D moments when N >= D, N x N Grams when
    N < D) give the same spectrum metrics: float64 to round-off, the float32 route to
    its float32 products."""
    rng = np.random.default_rng(3)
    d = 96
    z = (rng.normal(size=(n, d)) * np.arange(1, d + 1) ** -0.6 + 0.5).astype(np.float32)
    names = ["rankme", "stable_rank", "alpha_req", "nesum"]
    mon = Monitor(metrics=names, gram_dtype=gram_dtype)  # type: ignore[arg-type]
    for start in range(0, n, 32):
        mon.update(torch.from_numpy(z[start : start + 32]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RankMe's N < D warning
        streamed = mon.compute()
        offline = evaluate(z, metrics=names)
    rel = 1e-9 if gram_dtype == "float64" else 1e-5
    for name in names:
        if gram_dtype == "float32" and n <= d and name in ("alpha_req", "nesum"):
            continue  # float32 products cannot resolve a rank-deficient covariance: warned
        assert streamed[name] == pytest.approx(offline[name], rel=rel), name
    if gram_dtype == "float32" and n <= d:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mon.compute()
        messages = [str(w.message) for w in caught]
        assert any("rank-deficient covariance" in m and "alpha_req, nesum" in m for m in messages)
