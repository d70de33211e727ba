"""Hostile-but-fair inputs to every command (issue 16).

Each case runs the real command line (typer's CliRunner; a subprocess where a real
process matters) and asserts the exit code, that an error is exactly one line on stderr
naming the file or value, that no traceback appears (nor an exception escapes), and
that no input file changed (every input is hashed before and after). Successful cases
are compared with independent oracles: string labels against the same data with labels
mapped by ``np.unique`` (scikit-learn's ``LabelEncoder``), big-endian files against the
native-order file, a salvaged store against the values written before the damage.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner, Result

import sweep_models as sm
from sslwatch.cli import app
from sslwatch.core.definitions import MetricDefinition
from sslwatch.offline.store import ResultStore
from store_damage import damage_page

runner = CliRunner()
EPOCHS = (0, 5, 10, 15, 20)
#: Run names that rich would read as markup if they were not escaped.
MARKUP_RUNS = ("exp[v1]", "exp[v2]", "a[/b]")
SCORE_METRICS = "rankme,silhouette,linear_probe,knn_accuracy,label_ami"


class Payload:
    """A custom class: a .pt holding it needs pickle code to load."""

    def __init__(self, z: torch.Tensor) -> None:
        self.z = z


# --------------------------------------------------------------------------- helpers


def _hashes(paths: Sequence[Path]) -> dict[Path, str | None]:
    out: dict[Path, str | None] = {}
    for p in paths:
        out[p] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
    return out


def invoke(args: Sequence[Any], inputs: Sequence[Path]) -> Result:
    """Run the CLI; no input may change, no traceback may show, no exception escape."""
    before = _hashes(inputs)
    res = runner.invoke(app, [str(a) for a in args])
    assert _hashes(inputs) == before, "an input file changed"
    assert "Traceback" not in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return res


def assert_error(res: Result, code: int, *needles: str) -> str:
    """Exit ``code`` and exactly one stderr line, ``error: ...``, holding every needle."""
    assert res.exit_code == code, (res.exit_code, res.output)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def assert_ok(res: Result) -> None:
    assert res.exit_code == 0, res.output
    assert "error" not in res.stderr.lower(), res.stderr


def fill_store(
    path: Path, runs: Sequence[str] = MARKUP_RUNS, epochs: Sequence[int] = EPOCHS
) -> None:
    """A small but analysable store: accuracy rises with quality and the metrics follow."""
    with ResultStore(path) as store:
        for i, name in enumerate(runs):
            rng = np.random.default_rng(i)
            quality = 0.6 + 0.2 * i
            run = store.ensure_run(name, method="simclr", architecture="cnn")
            for epoch in epochs:
                acc = 0.79 + 0.14 * quality * (1 - np.exp(-epoch / 8)) + rng.normal(0, 0.003)
                values = {
                    "linear_probe": acc,
                    "rankme": 60 + 400 * (acc - 0.79),
                    "silhouette": 0.05 + 0.8 * (acc - 0.79) + rng.normal(0, 0.01),
                }
                point = store.ensure_point(run, path=f"/ck/{name}/e{epoch}.pt", epoch=epoch)
                store.record_results(
                    point,
                    [
                        ("backbone", MetricDefinition(metric=m, n=500, d=32), float(v), 0.1)
                        for m, v in values.items()
                    ],
                )
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # damage must hit what readers see
    con.close()


def _quick_check(path: Path) -> str:
    """SQLite's own verdict (independent of sslwatch): 'ok' or the first problem."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return str(con.execute("PRAGMA quick_check").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        con.close()


@pytest.fixture(scope="module")
def good_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stores") / "good.db"
    fill_store(path)
    return path


def _listing(folder: Path) -> list[str]:
    """The files in ``folder``, leaving out the -wal/-shm files SQLite keeps beside a WAL
    store that was opened read-only (SQLite's own; the store itself is unchanged)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(("-wal", "-shm")))


def make_store(kind: str, good: Path, folder: Path) -> Path:
    """A store of one kind: damaged (a page of random bytes), truncated, empty (0 bytes),
    foreign (a text file), other (SQLite, not sslwatch), folder."""
    path = folder / f"{kind}.db"
    if kind in ("damaged", "truncated"):
        shutil.copy(good, path)
        if kind == "damaged":
            damage_page(path)
        else:
            os.truncate(path, path.stat().st_size // 2)
        assert _quick_check(path) != "ok"  # SQLite agrees that it is damaged
    elif kind == "empty":
        path.touch()
    elif kind == "foreign":
        path.write_text("run,metric,value\nexp,rankme,3.5\n" * 50)
    elif kind == "other":
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE experiments (id INTEGER PRIMARY KEY, name TEXT)")
        con.commit()
        con.close()
    elif kind == "folder":
        path.mkdir()
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "runs" / "alpha" / "epoch_1.pt"
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(sm.TinyCNN().state_dict(), path)
    return path


def sweep_args(checkpoint: Path | str, db: Path, *extra: str) -> list[str]:
    return [
        "sweep",
        "--model",
        sm.TINY,
        "--checkpoints",
        str(checkpoint),
        "--data",
        "digits",
        "--db",
        str(db),
        "--metrics",
        "rankme",
        "--sample-size",
        "200",
        *extra,
    ]


# --------------------------------------------------------------------------- stores

_DAMAGED = ("is damaged", "sslwatch doctor")
# (command, kind of store, exit code, what the line must say besides the file's name)
STORE_CASES: list[tuple[str, str, int, tuple[str, ...]]] = [
    *[(cmd, "damaged", 3, _DAMAGED) for cmd in ("analyze", "report", "export", "merge")],
    *[(cmd, "truncated", 3, _DAMAGED) for cmd in ("analyze", "report", "export", "merge")],
    *[(cmd, "empty", 2, ("empty",)) for cmd in ("analyze", "report", "export", "merge")],
    *[
        (cmd, "foreign", 2, ("not an SQLite database",))
        for cmd in ("analyze", "report", "export", "merge")
    ],
    *[
        (cmd, "other", 2, ("not an sslwatch results store",))
        for cmd in ("analyze", "report", "export", "merge")
    ],
    ("sweep", "damaged", 101, _DAMAGED),
    ("sweep", "truncated", 101, _DAMAGED),
    ("sweep", "foreign", 101, ("not an SQLite database",)),
    ("sweep", "other", 101, ("not an sslwatch results store",)),
    ("sweep", "folder", 101, ("is a folder",)),
]


@pytest.mark.parametrize(("command", "kind", "code", "needles"), STORE_CASES)
def test_bad_stores_are_one_line_errors_and_stay_untouched(
    command: str,
    kind: str,
    code: int,
    needles: tuple[str, ...],
    good_store: Path,
    checkpoint: Path,
    tmp_path: Path,
) -> None:
    db = make_store(kind, good_store, tmp_path)
    good = tmp_path / "good-copy.db"
    shutil.copy(good_store, good)
    out = tmp_path / "out"
    args: list[Any]
    inputs = [db]
    if command == "analyze":
        args = ["analyze", db, "--n-boot", "20"]
    elif command == "report":
        args = ["report", db, "-o", out.with_suffix(".html"), "--n-boot", "20"]
    elif command == "export":
        args = ["export", db, "--csv", out.with_suffix(".csv")]
    elif command == "merge":
        args, inputs = ["merge", good, db, "-o", out.with_suffix(".db")], [good, db]
    else:
        args, inputs = sweep_args(checkpoint, db), [db, checkpoint]
    listing = _listing(tmp_path)
    res = invoke(args, inputs)
    assert_error(res, code, str(db), *needles)
    if command != "sweep":
        assert _listing(tmp_path) == listing  # no output file, no temporary file left
    if kind == "empty":
        assert db.stat().st_size == 0  # no schema written into it


def test_a_damaged_store_is_one_line_in_a_real_process(good_store: Path, tmp_path: Path) -> None:
    db = make_store("damaged", good_store, tmp_path)
    before = _hashes([db])
    proc = subprocess.run(
        [sys.executable, "-m", "sslwatch", "analyze", str(db)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    assert str(db) in proc.stderr and "sslwatch doctor" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert _hashes([db]) == before


def test_read_only_commands_never_upgrade_a_version_1_store(tmp_path: Path) -> None:
    """export and merge read an old store as it is (oracle: the bytes of the file)."""
    old = tmp_path / "old.db"
    fill_store(old, runs=("r1",))
    con = sqlite3.connect(old)  # make it a version-1 store, as written before seconds
    con.execute("DROP TABLE point_timings")
    con.execute("ALTER TABLE results DROP COLUMN seconds")
    con.execute("ALTER TABLE results DROP COLUMN outcome")
    con.execute("UPDATE schema_info SET version = 1")
    con.commit()
    con.execute("VACUUM")
    con.close()
    csv_out, merged = tmp_path / "old.csv", tmp_path / "merged.db"
    assert_ok(invoke(["export", old, "--csv", csv_out], [old]))
    assert_ok(invoke(["merge", old, "-o", merged], [old]))
    assert len(csv_out.read_text().splitlines()) == 1 + len(EPOCHS) * 3
    con = sqlite3.connect(old)
    assert con.execute("SELECT version FROM schema_info").fetchone() == (1,)
    con.close()


# --------------------------------------------------------------------------- doctor


def test_doctor_salvages_a_damaged_store(tmp_path: Path) -> None:
    big = tmp_path / "big.db"
    fill_store(big, epochs=range(0, 80))  # results over several pages
    with ResultStore(big, read_only=True) as a:
        truth = {(r["run"], r["path"], r["metric"]): r["value"] for r in a.tidy_rows()}
    db = make_store("damaged", big, tmp_path)
    out = tmp_path / "repaired.db"
    res = invoke(["doctor", db, "-o", out], [db])
    assert res.exit_code == 3, res.output  # damaged, even though the salvage worked
    assert f"{db}: damaged" in res.stdout and "problem:" in res.stdout
    with ResultStore(out, read_only=True) as b:
        got = {(r["run"], r["path"], r["metric"]): r["value"] for r in b.tidy_rows()}
    # Every value kept is the one written; only the damaged page's rows are missing.
    assert got and all(truth[k] == v for k, v in got.items())
    lost = len(truth) - len(got)
    assert 0 < lost < len(truth) // 4
    assert f"results {len(got)} saved, {lost} lost" in res.stdout
    assert invoke(["doctor", out], [out]).exit_code == 0  # the salvaged store is sound


def test_doctor_on_a_sound_store_is_exit_0(good_store: Path) -> None:
    res = invoke(["doctor", good_store], [good_store])
    assert_ok(res)
    assert "sound" in res.stdout


@pytest.mark.parametrize(
    ("kind", "needle"),
    [("empty", "empty"), ("foreign", "not an SQLite database"), ("other", "not an sslwatch")],
)
def test_doctor_refuses_what_is_not_a_store(
    kind: str, needle: str, good_store: Path, tmp_path: Path
) -> None:
    db = make_store(kind, good_store, tmp_path)
    assert_error(invoke(["doctor", db], [db]), 2, str(db), needle)


def test_doctor_will_not_overwrite_an_existing_output(good_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "exists.db"
    out.write_text("keep me")
    res = invoke(["doctor", good_store, "-o", out], [good_store, out])
    assert_error(res, 2, str(out), "already exists")


# --------------------------------------------------------------------------- markup


def test_markup_run_names_print_as_written(
    good_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sslwatch.cli import console

    monkeypatch.setattr(console, "_width", 250)  # no cell cut short with an ellipsis
    res = invoke(["analyze", good_store, "--n-boot", "20"], [good_store])
    assert_ok(res)
    for name in MARKUP_RUNS:  # each printed as itself: exp[v1] and exp[v2] stay distinct
        assert name in res.stdout, name
    assert res.stdout.count("exp[v1]") == res.stdout.count("exp[v2]")


def test_markup_in_a_missing_file_name_is_printed(tmp_path: Path) -> None:
    missing = tmp_path / "missing[red]z.npy"
    assert_error(invoke(["score", missing], []), 2, str(missing))


def test_markup_in_an_embedding_file_name_is_printed(tmp_path: Path) -> None:
    path = tmp_path / "emb[bold]v1[red].npy"
    np.save(path, np.random.default_rng(0).normal(size=(60, 5)))
    res = invoke(["score", path, "--metrics", "rankme"], [path])
    assert_ok(res)
    assert path.name in res.stdout


def test_markup_in_a_merge_output_name_is_printed(good_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "all[red].db"
    res = invoke(["merge", good_store, "-o", out], [good_store])
    assert_ok(res)
    assert str(out) in res.stdout


def test_markup_in_an_analyze_option_value_is_printed(good_store: Path) -> None:
    res = invoke(["analyze", good_store, "--reference", "acc[/x]"], [good_store])
    assert_error(res, 2, "acc[/x]")


# --------------------------------------------------------------------------- arrays


@pytest.fixture(scope="module")
def small_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    rng = np.random.default_rng(0)
    idx = rng.choice(len(data.target), 400, replace=False)
    return data.data[idx].astype(np.float32), data.target[idx].astype(np.int64)


WORDS = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])


def score_values(
    folder: Path,
    file: Path,
    *extra: Any,
    inputs: Sequence[Path] = (),
    metrics: str = SCORE_METRICS,
) -> Any:
    """``sslwatch score FILE --json``: metric -> value (the command must succeed)."""
    out = folder / f"{file.stem}-{len(list(folder.glob('*.json')))}.json"
    res = invoke(["score", file, "--json", out, "--metrics", metrics, *extra], [file, *inputs])
    assert_ok(res)
    return {r["metric"]: r["value"] for r in json.loads(out.read_text())["results"]}


@pytest.fixture(scope="module")
def mapped_oracle(
    small_digits: tuple[np.ndarray, np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, float]:
    """Scores with the string labels mapped by np.unique (scikit-learn's LabelEncoder)."""
    x, y = small_digits
    folder = tmp_path_factory.mktemp("oracle")
    ids = np.unique(WORDS[y], return_inverse=True)[1].astype(np.int64)
    path = folder / "ints.npz"
    np.savez(path, embeddings=x, labels=ids)
    values: dict[str, float] = score_values(folder, path)
    return values


LABEL_FORMS = ["npz-str", "npz-bytes", "labels-npy", "labels-txt", "pt-list", "labels-npz-str"]


@pytest.mark.parametrize("form", LABEL_FORMS)
def test_string_labels_equal_the_np_unique_mapping(
    form: str,
    small_digits: tuple[np.ndarray, np.ndarray],
    mapped_oracle: dict[str, float],
    tmp_path: Path,
) -> None:
    x, y = small_digits
    words = WORDS[y]
    emb, extra, inputs = tmp_path / "emb.npz", [], []
    if form == "npz-str":
        np.savez(emb, embeddings=x, labels=words)
    elif form == "npz-bytes":
        np.savez(emb, embeddings=x, labels=words.astype("S"))
    elif form == "pt-list":
        emb = tmp_path / "emb.pt"
        torch.save({"embeddings": torch.from_numpy(x), "labels": [str(w) for w in words]}, emb)
    else:
        np.savez(emb, embeddings=x)
        lab = {
            "labels-npy": tmp_path / "lab.npy",
            "labels-txt": tmp_path / "lab.txt",
            "labels-npz-str": tmp_path / "lab.npz",
        }[form]
        if form == "labels-npy":
            np.save(lab, words)
        elif form == "labels-txt":
            lab.write_text("\n".join(words) + "\n")
        else:
            np.savez(lab, y=words)
        extra, inputs = ["--labels", lab], [lab]
    assert score_values(tmp_path, emb, *extra, inputs=inputs) == mapped_oracle


def test_big_endian_files_score_like_native_ones(
    small_digits: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    x, y = small_digits
    native, big = tmp_path / "native.npz", tmp_path / "big.npz"
    np.savez(native, embeddings=x.astype(np.float64), labels=y)
    np.savez(big, embeddings=x.astype(">f8"), labels=y.astype(">i4"))
    assert score_values(tmp_path, big) == score_values(tmp_path, native)
    big_npy, native_npy = tmp_path / "big.npy", tmp_path / "native.npy"
    np.save(big_npy, x.astype(">f4"))
    np.save(native_npy, x.astype("<f4"))
    unlabelled = "rankme,silhouette,cluster_agreement"
    assert score_values(tmp_path, big_npy, metrics=unlabelled) == score_values(
        tmp_path, native_npy, metrics=unlabelled
    )


def test_an_unrelated_object_array_beside_the_embeddings_is_not_read(
    small_digits: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    x, y = small_digits
    plain, mixed = tmp_path / "plain.npz", tmp_path / "mixed.npz"
    np.savez(plain, embeddings=x, labels=y)
    junk = np.array([{"note": "made by a notebook"}, None], dtype=object)
    np.savez(mixed, embeddings=x, labels=y, junk=junk)
    assert score_values(tmp_path, mixed) == score_values(tmp_path, plain)
    # ... but asking for it is a clear refusal naming the array
    assert_error(invoke(["score", mixed, "--key", "junk"], [mixed]), 2, str(mixed), "'junk'")


def _save(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


def _ok_npy(folder: Path) -> Path:
    return _save(folder / "ok.npy", np.random.default_rng(0).normal(size=(30, 4)))


def _structured(d: Path) -> tuple[list[Any], list[Path], tuple[str, ...]]:
    path = _save(d / "st.npy", np.zeros(20, dtype=[("a", "f4"), ("b", "f4")]))
    return ["score", path], [path], (str(path), "structured array", "a, b")


def _object_labels(d: Path) -> tuple[list[Any], list[Path], tuple[str, ...]]:
    path = d / "obj.npz"
    np.savez(path, embeddings=np.ones((20, 3)), labels=np.array(["a", "b"] * 10, dtype=object))
    return ["score", path], [path], (str(path), "'labels'", "Python objects")


def _string_embeddings(d: Path) -> tuple[list[Any], list[Path], tuple[str, ...]]:
    path = _save(d / "words.npy", np.array([["a", "b"], ["c", "d"]] * 10))
    return ["score", path], [path], (str(path), "'embeddings'", "not numbers")


def _labels_count(d: Path) -> tuple[list[Any], list[Path], tuple[str, ...]]:
    path, lab = _ok_npy(d), d / "few.txt"
    lab.write_text("cat\ndog\ncat\n")
    return ["score", path, "--labels", lab], [path, lab], (str(lab), "3 labels", "30")


def _one_hot(d: Path) -> tuple[list[Any], list[Path], tuple[str, ...]]:
    path = d / "onehot.npz"
    np.savez(path, embeddings=np.ones((10, 3)), labels=np.eye(10))
    return ["score", path], [path], (str(path), "1-D", "(10, 10)")


def _two_rows(d: Path) -> tuple[list[Any], list[Path], tuple[str, ...]]:
    path = _save(d / "two.npy", np.random.default_rng(0).normal(size=(2, 8)))
    return ["score", path], [path], (str(path), "3")


def _metrics_comma(d: Path) -> tuple[list[Any], list[Path], tuple[str, ...]]:
    path = _ok_npy(d)
    return ["score", path, "--metrics", ","], [path], ("--metrics", "','", "names no metric")


def _json_missing_folder(d: Path) -> tuple[list[Any], list[Path], tuple[str, ...]]:
    path = _ok_npy(d)
    out = d / "nodir" / "x.json"
    return ["score", path, "--json", out], [path], ("--json", str(out.parent), "does not exist")


def _csv_is_a_folder(d: Path) -> tuple[list[Any], list[Path], tuple[str, ...]]:
    path = _ok_npy(d)
    (d / "outdir").mkdir()
    return ["score", path, "--csv", d / "outdir"], [path], ("--csv", str(d / "outdir"), "folder")


def _json_under_a_file(d: Path) -> tuple[list[Any], list[Path], tuple[str, ...]]:
    path, plain = _ok_npy(d), d / "plain"
    plain.write_text("x")
    args = ["score", path, "--json", plain / "x.json"]
    return args, [path, plain], ("--json", str(plain), "is a file, not a folder")


def _unsafe_pt(d: Path) -> tuple[list[Any], list[Path], tuple[str, ...]]:
    path = d / "evil.pt"
    torch.save({"z": Payload(torch.ones(30, 4))}, path)
    needles = (str(path), "needs pickle code to load", "Payload", "--trust-checkpoints")
    return ["score", path], [path], (*needles, "executes code from the file")


def _garbage_pt(d: Path) -> tuple[list[Any], list[Path], tuple[str, ...]]:
    path = d / "garbage.pt"
    path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    return ["score", path], [path], (str(path), "cannot be read")


def _missing_key(d: Path) -> tuple[list[Any], list[Path], tuple[str, ...]]:
    path = d / "keys.npz"
    np.savez(path, a=np.ones((10, 3)), b=np.ones((10, 3)))
    return ["score", path, "--key", "z[red]"], [path], (str(path), "'z[red]'", "['a', 'b']")


ARRAY_ERRORS: dict[str, Callable[[Path], tuple[list[Any], list[Path], tuple[str, ...]]]] = {
    "structured": _structured,
    "object-labels": _object_labels,
    "string-embeddings": _string_embeddings,
    "labels-count": _labels_count,
    "one-hot-labels": _one_hot,
    "two-rows": _two_rows,
    "metrics-comma": _metrics_comma,
    "json-in-missing-folder": _json_missing_folder,
    "csv-is-a-folder": _csv_is_a_folder,
    "json-under-a-file": _json_under_a_file,
    "unsafe-pt": _unsafe_pt,
    "garbage-pt": _garbage_pt,
    "missing-key": _missing_key,
}


@pytest.mark.parametrize("name", list(ARRAY_ERRORS))
def test_bad_arrays_and_options_of_score_are_one_line_errors(name: str, tmp_path: Path) -> None:
    args, inputs, needles = ARRAY_ERRORS[name](tmp_path)
    line = assert_error(invoke(args, inputs), 2, *needles)
    if name == "two-rows":
        assert "lower k" not in line  # k is already 2: lowering it is no fix
    if name == "unsafe-pt":  # our line, not torch's multi-line text
        assert "weights_only" not in line and "will likely succeed" not in line
    assert not list(tmp_path.glob("**/x.json")) and not list(tmp_path.glob("**/*.csv"))


def test_trust_checkpoints_loads_a_pickled_embedding_file(tmp_path: Path) -> None:
    path = tmp_path / "trusted.pt"
    z = torch.from_numpy(np.random.default_rng(0).normal(size=(50, 6)))
    torch.save({"z": z, "meta": Payload(z)}, path)
    plain = tmp_path / "plain.npy"
    np.save(plain, z.numpy())
    unlabelled = "rankme,silhouette,cluster_agreement"
    trusted = score_values(tmp_path, path, "--trust-checkpoints", metrics=unlabelled)
    assert trusted == score_values(tmp_path, plain, metrics=unlabelled)


def test_output_paths_are_checked_before_any_work(tmp_path: Path) -> None:
    """A huge input would take minutes; the bad --csv is refused at once."""
    import time

    big = tmp_path / "big.npy"
    np.save(big, np.random.default_rng(0).normal(size=(20000, 64)).astype(np.float32))
    start = time.perf_counter()
    res = invoke(["score", big, "--csv", tmp_path / "no" / "such" / "x.csv"], [big])
    assert_error(res, 2, "--csv", str(tmp_path / "no" / "such"))
    assert time.perf_counter() - start < 5


def test_string_labels_in_a_real_process(
    small_digits: tuple[np.ndarray, np.ndarray], mapped_oracle: dict[str, float], tmp_path: Path
) -> None:
    x, y = small_digits
    emb, out = tmp_path / "emb.npz", tmp_path / "out.json"
    np.savez(emb, embeddings=x, labels=WORDS[y])
    proc = subprocess.run(
        [sys.executable, "-m", "sslwatch", "score", str(emb), "--metrics", SCORE_METRICS,
         "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    values = {r["metric"]: r["value"] for r in json.loads(out.read_text())["results"]}
    assert values == mapped_oracle


# --------------------------------------------------------------------------- other commands


def test_analyze_metric_option_naming_nothing_is_a_usage_error(good_store: Path) -> None:
    res = invoke(["analyze", good_store, "--metric", ","], [good_store])
    assert_error(res, 2, "--metric", "names nothing")


@pytest.mark.parametrize(
    ("command", "needles"),
    [
        ("report-to-folder", ("--output", "is a folder")),
        ("export-under-a-file", ("--csv", "is a file, not a folder")),
        ("merge-into-folder", ("-o", "is a folder")),
        ("export-onto-the-store", ("--csv", "is the results store itself")),
    ],
)
def test_unwritable_outputs_of_store_commands(
    command: str, needles: tuple[str, ...], good_store: Path, tmp_path: Path
) -> None:
    (tmp_path / "plain").write_text("x")
    args: list[Any] = {
        "report-to-folder": ["report", good_store, "-o", tmp_path],
        "export-under-a-file": ["export", good_store, "--csv", tmp_path / "plain" / "x.csv"],
        "merge-into-folder": ["merge", good_store, "-o", tmp_path],
        "export-onto-the-store": ["export", good_store, "--csv", good_store],
    }[command]
    res = invoke(args, [good_store, tmp_path / "plain"])
    assert_error(res, 2, *needles)


def test_sweep_metrics_naming_nothing_is_a_set_up_error(checkpoint: Path, tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    args = sweep_args(checkpoint, db)
    args[args.index("rankme")] = ","
    assert_error(invoke(args, [checkpoint]), 101, "metric")


@pytest.mark.parametrize("pattern", ["epoch_1.pt", "*.pt"])
def test_a_checkpoint_path_with_brackets_is_that_file(tmp_path: Path, pattern: str) -> None:
    """``runs/exp[v1]/epoch_1.pt`` exists: it is that file, not a glob class matching
    nothing; ``runs/exp[v1]/*.pt`` takes the brackets literally when as a class they
    match no file."""
    path = tmp_path / "runs" / "exp[v1]" / "epoch_1.pt"
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(sm.TinyCNN().state_dict(), path)
    db = tmp_path / "r.db"
    res = invoke(sweep_args(path.parent / pattern, db), [path])
    assert_ok(res)
    assert "exp[v1]" in res.output
    with ResultStore(db, read_only=True) as store:
        assert {r["run"] for r in store.tidy_rows()} == {"exp[v1]"}
