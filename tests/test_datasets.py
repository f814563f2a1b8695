"""Dataset readers (UCI split folders, CSV files) and standardisation on the training split."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from pyrobnn import datasets

#: The UCI data live beside the repository (``../shared/data/uci``), in CI too; the test skips without them.
UCI = Path(__file__).resolve().parents[2] / "shared" / "data" / "uci"


def write_uci(folder: Path, data: np.ndarray, splits: list[tuple[list[int], list[int]]]) -> Path:
    """A tiny dataset in the UCI layout: features are every column but the last, the target the last."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savetxt(folder / "data.txt", data)
    (folder / "index_features.txt").write_text("\n".join(str(i) for i in range(data.shape[1] - 1)) + "\n")
    (folder / "index_target.txt").write_text(f"{data.shape[1] - 1}\n")
    for k, (train, test) in enumerate(splits):
        (folder / f"index_train_{k}.txt").write_text("\n".join(map(str, train)) + "\n")
        (folder / f"index_test_{k}.txt").write_text("\n".join(map(str, test)) + "\n")
    return folder


def test_load_uci_reads_the_split_it_is_asked_for(tmp_path: Path) -> None:
    data = np.arange(24, dtype=float).reshape(6, 4)
    folder = write_uci(tmp_path / "tiny", data, [([0, 1, 2, 3], [4, 5]), ([5, 4, 3, 2], [1, 0])])
    assert datasets.uci_num_splits(folder) == 2
    ds = datasets.load_uci(folder, split=1)
    assert ds.name == "tiny" and ds.task == "regression" and ds.x_train.dtype == torch.get_default_dtype()
    np.testing.assert_array_equal(ds.x_train.numpy(), data[[5, 4, 3, 2], :3])
    np.testing.assert_array_equal(ds.y_test.numpy(), data[[1, 0], 3])


def test_load_uci_errors_say_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'.*nowhere' does not exist; it should hold data.txt .*index_train_<k>.txt"):
        datasets.load_uci(tmp_path / "nowhere", 0)
    folder = write_uci(tmp_path / "tiny", np.ones((4, 3)), [([0, 1, 2], [3])] * 3)
    with pytest.raises(ValueError, match=r"split 3 is out of range: tiny has 3 splits \(0-2\)"):
        datasets.load_uci(folder, 3)
    with pytest.raises(ValueError, match=r"split -1 is out of range"):
        datasets.load_uci(folder, -1)
    (folder / "index_train_2.txt").write_text("0\n7\n")
    with pytest.raises(ValueError, match=r"index_train_2.txt: row index 7 out of range; data.txt has 4 rows"):
        datasets.load_uci(folder, 2)
    (folder / "index_target.txt").unlink()
    with pytest.raises(ValueError, match=r"lacks index_target.txt; it should hold"):
        datasets.load_uci(folder, 0)


@pytest.mark.skipif(not (UCI / "yacht").is_dir(), reason="the UCI data are not beside the repository")
def test_load_uci_on_the_real_yacht_data() -> None:
    ds = datasets.load_uci(UCI / "yacht", split=0)
    # sizes from ../shared/data/uci/README.md: 308 rows, 6 inputs, 277 / 31 per split, 20 splits
    assert ds.x_train.shape == (277, 6) and ds.x_test.shape == (31, 6) and ds.y_train.shape == (277,)
    assert datasets.uci_num_splits(UCI / "yacht") == 20
    raw = np.loadtxt(UCI / "yacht" / "data.txt")
    train = np.loadtxt(UCI / "yacht" / "index_train_0.txt", dtype=int)
    np.testing.assert_allclose(ds.y_train.numpy(), raw[train, 6], rtol=1e-6)


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_load_csv_splits_by_seed_and_infers_the_task(tmp_path: Path) -> None:
    rows = "\n".join(f"{i},{i * 0.5},{i * 1.5 + 0.25},{i % 3}" for i in range(20))
    path = write_csv(tmp_path / "toy.csv", "a,b,y,label\n" + rows + "\n\n")
    assert datasets.csv_columns(path) == ["a", "b", "y", "label"]
    ds = datasets.load_csv(path, "y", features=["a", "b"])
    assert ds.name == "toy" and ds.task == "regression" and ds.x_train.shape == (18, 2) and ds.x_test.shape == (2, 2)
    np.testing.assert_allclose(ds.y_train.numpy(), ds.x_train[:, 0].numpy() * 1.5 + 0.25)  # rows stay whole
    again, other = datasets.load_csv(path, "y", features=["a", "b"]), datasets.load_csv(path, "y", seed=1)
    assert torch.equal(ds.x_test, again.x_test) and not torch.equal(ds.y_test, other.y_test)
    # a whole-number target with at most 10 distinct values is taken as classes, unless told otherwise
    cls = datasets.load_csv(path, "label", test_fraction=0.25)
    assert cls.task == "classification" and cls.classes == ("0", "1", "2") and cls.num_classes == 3
    assert cls.y_train.dtype == torch.long and cls.x_test.shape == (5, 3)
    assert datasets.load_csv(path, "label", task="regression").task == "regression"
    assert datasets.load_csv(path, "a").task == "regression"  # 20 distinct whole numbers


def test_load_csv_text_labels_become_sorted_classes(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "iris.csv", "x,species\n1,versicolor\n2,setosa\n3,setosa\n4,virginica\n")
    ds = datasets.load_csv(path, "species", test_fraction=0.25)
    assert ds.classes == ("setosa", "versicolor", "virginica")
    labels = torch.cat([ds.y_train, ds.y_test])[torch.cat([ds.x_train, ds.x_test])[:, 0].argsort()]
    assert labels.tolist() == [1, 0, 0, 2]


def test_load_csv_errors_name_the_cell_or_the_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", "a,b,y\n1,2,3\n4,oops,6\n7,8,9\n")
    with pytest.raises(ValueError, match=r"no column 'target'; the columns are: a, b, y"):
        datasets.load_csv(path, "target")
    with pytest.raises(ValueError, match=r"no column\(s\) 'c'; the columns are: a, b, y"):
        datasets.load_csv(path, "y", features=["a", "c"])
    with pytest.raises(
        ValueError,
        match=r"d.csv: line 3, column 'b': 'oops' is not a number; fix the cell, or leave the column out with "
        r"features=\['a'\] \(--features a on the command line\)",
    ):
        datasets.load_csv(path, "y")
    nan = write_csv(tmp_path / "nan.csv", "a,y\n1,2.5\n2,nan\n3,4.5\n")
    with pytest.raises(ValueError, match=r"line 3, column 'y': the target is missing \('nan'\); drop the row or fill"):
        datasets.load_csv(nan, "y")
    with pytest.raises(ValueError, match=r"line 3, column 'y': 'nan' is not a finite number \(a missing value\); drop"):
        datasets.load_csv(nan, "a")
    inf = write_csv(tmp_path / "inf.csv", "a,y\n1,2.5\n2,inf\n3,4.5\n")
    with pytest.raises(ValueError, match=r"line 3, column 'y': 'inf' is not a finite number; drop the row or fill in"):
        datasets.load_csv(inf, "y")
    empty = write_csv(tmp_path / "empty.csv", "a,y\n1,2.5\n,3.5\n3,4.5\n")
    with pytest.raises(ValueError, match=r"line 3, column 'a': an empty cell is not a finite number; drop the row or"):
        datasets.load_csv(empty, "y")
    mixed = write_csv(tmp_path / "mixed.csv", "a,y\n1,2.5\n2,three\n3,4.5\n")
    with pytest.raises(
        ValueError,
        match=r"'three' is not a number, though other targets are; fix the cell, or read every target as a "
        r"class label with task='classification' \(--task classification on the command line\)",
    ):
        datasets.load_csv(mixed, "y")
    ragged = write_csv(tmp_path / "ragged.csv", "a,y\n1,2\n3\n")
    with pytest.raises(ValueError, match=r"line 3 has 1 fields, the header has 2"):
        datasets.load_csv(ragged, "y")
    with pytest.raises(ValueError, match=r"task must be one of regression, classification"):
        datasets.load_csv(path, "y", task="ordinal")
    with pytest.raises(ValueError, match=r"CSV file '.*missing.csv' does not exist"):
        datasets.load_csv(tmp_path / "missing.csv", "y")


@pytest.mark.parametrize("cell", ["", "NA", "?"])
@pytest.mark.parametrize("task", [None, "regression", "classification"])
def test_load_csv_missing_target_names_the_cell_and_the_fix(tmp_path: Path, cell: str, task: str | None) -> None:
    path = write_csv(tmp_path / "m.csv", f"a,y\n1,2\n2,{cell}\n3,4\n4,2\n")
    shown = "an empty cell" if not cell else repr(cell)
    with pytest.raises(
        ValueError,
        match=rf"m.csv: line 3, column 'y': the target is missing \({re.escape(shown)}\); drop the row or fill",
    ):
        datasets.load_csv(path, "y", task=task)


def test_load_csv_empty_text_label_is_missing_but_na_among_text_labels_is_a_class(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "a,y\n1,east\n2,\n3,west\n")
    with pytest.raises(ValueError, match=r"line 3, column 'y': the target is missing \(an empty cell\)"):
        datasets.load_csv(path, "y")
    labelled = write_csv(tmp_path / "na.csv", "a,y\n1,east\n2,NA\n3,west\n")
    assert datasets.load_csv(labelled, "y").classes == ("NA", "east", "west")


@pytest.mark.parametrize(
    ("target", "shown", "task"),
    [
        ("3", "3.0", None),  # inferred: was read as classification with one class
        ("3", "3.0", "regression"),  # was fitted with a zero-variance target
        ("3", "3.0", "classification"),
        ("east", "'east'", None),
        ("east", "'east'", "classification"),
    ],
)
def test_load_csv_constant_target_is_refused(tmp_path: Path, target: str, shown: str, task: str | None) -> None:
    path = write_csv(tmp_path / "c.csv", "a,y\n" + "".join(f"{i},{target}\n" for i in range(5)))
    with pytest.raises(
        ValueError,
        match=rf"c.csv: the target column 'y' is constant: every row has target {shown}, so there is nothing to "
        r"learn; choose another target column \(target=\.\.\. in load_csv, --target on the command line\)",
    ):
        datasets.load_csv(path, "y", task=task)


def test_load_csv_text_feature_column_names_the_columns_to_keep(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "r.csv", "a,region,b,y\n1,east,2,3.5\n2,west,3,4.5\n3,east,1,2.5\n")
    with pytest.raises(
        ValueError,
        match=r"r.csv: feature column 'region' holds text \('east' on line 2\), but features must be numbers: "
        r"encode it as numbers \(one 0/1 column per category\) or leave the column out with features=\['a', 'b'\] "
        r"\(--features a,b on the command line\)",
    ):
        datasets.load_csv(path, "y")
    assert datasets.load_csv(path, "y", features=["a", "b"]).x_train.shape == (2, 2)


def test_standardize_refuses_a_constant_regression_target() -> None:
    x = torch.randn(4, 2)
    ds = datasets.Dataset("flat", "regression", x[:3], torch.full((3,), 3.0), x[3:], torch.tensor([5.0]), "")
    with pytest.raises(
        ValueError, match=r"flat: every training target is 3, so there is nothing to learn and no scale to standardise"
    ):
        datasets.standardize(ds)


def test_standardize_uses_the_training_split_only() -> None:
    x_train = torch.tensor([[0.0, 5.0], [2.0, 5.0], [4.0, 5.0]])
    y_train, x_test, y_test = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([[100.0, 7.0]]), torch.tensor([10.0])
    ds = datasets.Dataset("t", "regression", x_train, y_train, x_test, y_test, "")
    data = datasets.standardize(ds)
    sd = np.std([0.0, 2.0, 4.0])  # population standard deviation (ddof=0), as in the UCI protocol
    np.testing.assert_allclose(data.x_train[:, 0].numpy(), np.array([-2.0, 0.0, 2.0]) / sd, rtol=1e-6)
    np.testing.assert_allclose(data.x_test.numpy(), [[98.0 / sd, 2.0]], rtol=1e-6)  # constant column: scale 1
    assert data.x_scale.tolist()[1] == 1.0 and data.y_mean == 2.0
    np.testing.assert_allclose(data.y_scale, np.std([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(data.y_test.numpy(), [8.0 / data.y_scale], rtol=1e-6)
    moons = datasets.standardize(datasets.load("moons"))
    assert torch.equal(moons.y_train, moons.dataset.y_train) and (moons.y_mean, moons.y_scale) == (0.0, 1.0)


def _gap1d_train_as_before(seed: int, n_train: int = 160) -> tuple[torch.Tensor, torch.Tensor]:
    """gap1d's training split as the generator drew it before the test split crossed the gap."""
    g = torch.Generator().manual_seed(seed)
    side = torch.randint(0, 2, (n_train, 1), generator=g)
    x = torch.where(
        side == 0, -2 + 1.5 * torch.rand(n_train, 1, generator=g), 0.5 + 1.5 * torch.rand(n_train, 1, generator=g)
    )
    return x, torch.sin(3 * x).squeeze(-1) + 0.1 * torch.randn(n_train, generator=g)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_gap1d_tests_inside_the_gap_its_training_split_leaves(seed: int) -> None:
    ds = datasets.load("gap1d", seed=seed)
    # the training split is the one a seed always gave, bit for bit: only the test split changed
    x_train, y_train = _gap1d_train_as_before(seed)
    assert torch.equal(ds.x_train, x_train) and torch.equal(ds.y_train, y_train)
    assert not ((ds.x_train.abs() < 0.5).any())
    # test inputs uniform on [-2, 2]: the count in the gap (-0.5, 0.5) is Binomial(200, 1/4),
    # mean 50 and sd 6.1, so [30, 70] is 3.3 sd either side (the old test split had 0 there)
    in_gap = int((ds.x_test.abs() < 0.5).sum())
    assert ds.x_test.shape == (200, 1) and 30 <= in_gap <= 70
    # …and they reach both ends: no point in [-2, -1.8) has probability 0.95^200 < 1e-4
    assert -2 <= ds.x_test.min() < -1.8 and 1.8 < ds.x_test.max() <= 2
    # the same function and noise as the training split: the residual sd of 200 N(0, 0.1²)
    # draws has sd 0.1 / √400 = 0.005, so 0.02 is 4 of them
    residual = ds.y_test - torch.sin(3 * ds.x_test).squeeze(-1)
    assert abs(residual.std().item() - 0.1) < 0.02
    assert "test x uniform on [-2, 2]" in datasets.describe("gap1d")
