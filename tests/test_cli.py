"""The command line: `sslwatch --version`, `sslwatch score` on every file format."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from sslwatch import __version__
from sslwatch.cli import app

runner = CliRunner()


def numpy_rankme(z: np.ndarray, eps: float = 1e-7) -> float:
    s = np.linalg.svd(z.astype(np.float64), compute_uv=False)
    p = s / s.sum() + eps
    return float(np.exp(-np.sum(p * np.log(p))))


@pytest.fixture()
def digits_npz(tmp_path, digits):  # type: ignore[no-untyped-def]
    x, y = digits
    path = tmp_path / "digits.npz"
    np.savez(path, embeddings=x.astype(np.float32), labels=y)
    return path


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.stdout


def test_score_npz_with_labels_writes_json_and_csv(tmp_path, digits_npz, digits) -> None:  # type: ignore[no-untyped-def]
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    result = runner.invoke(
        app,
        [
            "score",
            str(digits_npz),
            "--json",
            str(out_json),
            "--csv",
            str(out_csv),
            "--sample-size",
            "600",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "rankme" in result.stdout and "linear_probe" in result.stdout
    payload = json.loads(out_json.read_text())
    values = {r["metric"]: r["value"] for r in payload["results"]}
    x, _ = digits
    assert values["rankme"] == pytest.approx(numpy_rankme(x.astype(np.float32)), rel=1e-6)
    assert values["linear_probe"] > 0.85
    defs = {r["metric"]: r["definition"] for r in payload["results"]}
    assert defs["silhouette"]["n"] == 600 and defs["rankme"]["n"] == 1797
    rows = list(csv.DictReader(out_csv.open()))
    assert {r["metric"] for r in rows} == set(values)
    assert float(next(r for r in rows if r["metric"] == "rankme")["value"]) == pytest.approx(
        values["rankme"], rel=1e-12
    )


@pytest.mark.parametrize("fmt", ["npy", "pt", "safetensors"])
def test_score_other_formats(tmp_path, rng, fmt) -> None:  # type: ignore[no-untyped-def]
    z = rng.normal(size=(300, 10)).astype(np.float32)
    path = tmp_path / f"emb.{fmt}"
    if fmt == "npy":
        np.save(path, z)
    elif fmt == "pt":
        torch.save({"z": torch.from_numpy(z)}, path)
    else:
        save_file({"embeddings": torch.from_numpy(z)}, str(path))
    out = tmp_path / "r.json"
    result = runner.invoke(app, ["score", str(path), "--metrics", "rankme", "--json", str(out)])
    assert result.exit_code == 0, result.output
    value = json.loads(out.read_text())["results"][0]["value"]
    assert value == pytest.approx(numpy_rankme(z), rel=1e-6)


def test_separate_labels_file(tmp_path, rng) -> None:  # type: ignore[no-untyped-def]
    # two blobs in different directions, so cosine neighbours are class-pure too
    z = np.concatenate(
        [rng.normal(size=(100, 4)) + [8, 0, 0, 0], rng.normal(size=(100, 4)) + [0, 8, 0, 0]]
    )
    y = np.repeat([0, 1], 100)
    np.save(tmp_path / "z.npy", z)
    (tmp_path / "y.txt").write_text("\n".join(map(str, y)))
    out = tmp_path / "r.json"
    result = runner.invoke(
        app,
        [
            "score",
            str(tmp_path / "z.npy"),
            "--labels",
            str(tmp_path / "y.txt"),
            "--metrics",
            "label_ami,knn_accuracy",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    values = {r["metric"]: r["value"] for r in json.loads(out.read_text())["results"]}
    assert values["label_ami"] == pytest.approx(1.0)
    assert values["knn_accuracy"] == pytest.approx(1.0)


def test_missing_file_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # a path longer than any terminal line: the error must print it whole (no wrapping)
    missing = tmp_path / ("deep" * 30) / "nope.npy"
    result = runner.invoke(app, ["score", str(missing)])
    assert result.exit_code == 2
    assert str(missing) in result.output and "not found" in result.output


class Payload:
    """A custom class: loading it needs pickle code, which sslwatch refuses."""


def test_pickled_objects_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "evil.pt"
    torch.save({"z": Payload()}, path)
    result = runner.invoke(app, ["score", str(path)])
    assert result.exit_code == 2
    assert "evil.pt" in result.output


def test_ambiguous_arrays_and_bad_values(tmp_path, rng) -> None:  # type: ignore[no-untyped-def]
    np.savez(tmp_path / "two.npz", a=rng.normal(size=(10, 3)), b=rng.normal(size=(10, 3)))
    result = runner.invoke(app, ["score", str(tmp_path / "two.npz")])
    assert result.exit_code == 2 and "--key" in result.output
    bad = rng.normal(size=(10, 3))
    bad[0, 0] = np.inf
    np.save(tmp_path / "bad.npy", bad)
    result = runner.invoke(app, ["score", str(tmp_path / "bad.npy")])
    assert result.exit_code == 2 and "NaN or Inf" in result.output


def test_list_metrics() -> None:
    result = runner.invoke(app, ["metrics"])
    assert result.exit_code == 0
    assert "rankme" in result.stdout and "lidar" in result.stdout


@pytest.mark.parametrize(
    "labels",
    [
        np.array([3, 1, 3, 7, 1]),
        np.array([0.5, -2.0, 0.5, 9.0, -2.0]),
        np.array(["dog", "cat", "dog", "eel", "cat"]),
        np.array([b"dog", b"cat", b"dog", b"eel", b"cat"]),
        np.array(["dog", "cat", "dog", "eel", "cat"], dtype=object),
        np.array([3, 1, 3, 7, 1], dtype=">i8"),
        np.array([True, False, True, True, False]),
    ],
    ids=["int", "float", "str", "bytes", "object-str", "big-endian", "bool"],
)
def test_labels_of_any_type_become_np_unique_class_ids(labels, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sslwatch.offline.io import class_ids

    ids, classes = class_ids(labels, "labels", tmp_path / "f.npz")
    values, expected = np.unique(labels, return_inverse=True)  # scikit-learn's LabelEncoder
    assert ids.dtype == np.int64 and ids.tolist() == expected.tolist()
    assert classes == [str(v) for v in values]


def test_labels_that_cannot_be_sorted_together_name_the_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sslwatch.offline.io import class_ids

    with pytest.raises(ValueError, match=r"f\.npz: labels 'y' mix values"):
        class_ids(np.array([1, "a", 2.5], dtype=object), "y", tmp_path / "f.npz")


def test_only_the_selected_arrays_of_an_npz_are_read(tmp_path, rng) -> None:  # type: ignore[no-untyped-def]
    from sslwatch.offline.io import load_embedding_file, open_arrays

    path = tmp_path / "many.npz"
    z = rng.normal(size=(20, 4))
    junk = np.array([{"a": 1}], dtype=object)
    np.savez(path, embeddings=z.astype(">f8"), labels=np.array(["a", "b"] * 10), junk=junk)
    arrays = open_arrays(path)
    assert arrays.shapes == {"embeddings": (20, 4), "labels": (20,), "junk": (1,)}
    data = load_embedding_file(path)
    assert torch.equal(data.z, torch.from_numpy(z))  # native order, same values
    assert data.labels is not None and data.labels.tolist() == [0, 1] * 10
    with pytest.raises(ValueError, match="'junk' holds Python objects"):
        arrays.raw("junk")
