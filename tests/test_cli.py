"""The ``pyrobnn`` command end to end, on tiny fits: data sources, report artefacts, errors."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pyrobnn.cli import main

FAST = ["--steps", "15", "--samples", "40", "--export-samples", "20", "--quiet"]


def write_csv(path: Path, n: int = 80) -> Path:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, generator=g)
    y = x[:, 0] - 0.5 * x[:, 1] + 0.1 * torch.randn(n, generator=g)
    lines = ["size,age,price"] + [f"{a:.4f},{b:.4f},{c:.4f}" for (a, b), c in zip(x.tolist(), y.tolist(), strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_uci(folder: Path, n: int = 60, splits: int = 2) -> Path:
    """A dataset in the standard UCI split layout: data.txt, column and row indices."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    data = rng.normal(size=(n, 4))
    data[:, 3] = data[:, :3].sum(1) + 0.1 * rng.normal(size=n)
    np.savetxt(folder / "data.txt", data)
    (folder / "index_features.txt").write_text("0\n1\n2\n")
    (folder / "index_target.txt").write_text("3\n")
    for k in range(splits):
        rows = rng.permutation(n)
        (folder / f"index_train_{k}.txt").write_text("\n".join(map(str, rows[:50])) + "\n")
        (folder / f"index_test_{k}.txt").write_text("\n".join(map(str, rows[50:])) + "\n")
    return folder


def check_report(out: Path, guides: list[str], pngs: tuple[str, ...] = ("elbo", "predictions", "calibration")) -> str:
    import arviz as az

    report = (out / "report.md").read_text()
    for png in (f"{name}.png" for name in pngs):
        assert f"]({png})" in report
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for guide in guides:
        idata = az.from_netcdf(out / f"{guide}.nc")
        assert idata.posterior.sizes["draw"] == 20
        assert "log_likelihood" in idata.groups()
        assert f"[{guide}.nc]({guide}.nc)" in report
    return report


def test_datasets_lists_the_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "gap1d" in out and "moons" in out and "classification" in out


@pytest.mark.parametrize("data", ["builtin:gap1d", "builtin:moons"])
def test_compare_on_builtin_data_writes_table_plots_and_netcdf(
    data: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["compare", "--data", data, "--guides", "meanfield,map", *FAST, "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "| guide" in out and "meanfield" in out and "map" in out
    assert ("rmse" in out) == (data == "builtin:gap1d") and ("accuracy" in out) == (data == "builtin:moons")
    report = check_report(tmp_path, ["meanfield", "map"])
    assert out.strip() in report  # the printed table is the report's table
    if data == "builtin:moons":  # 2-D class inputs: an entropy map, and reliability diagrams
        assert "Predictive entropy over the input plane" in report and "Reliability diagrams" in report
    else:
        assert "Standardised units" in report and "inside the central p predictive interval" in report


@pytest.mark.parametrize("data", ["builtin:gap1d", "builtin:moons"])
def test_compare_against_a_nuts_reference(data: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import arviz as az

    nuts = ["--reference", "nuts", "--nuts-samples", "20", "--nuts-warmup", "20", "--nuts-chains", "2"]
    argv = ["compare", "--data", data, "--guides", "meanfield,map", "--hidden", "4", *FAST, *nuts]
    # 20 warm-up iterations may leave divergent draws: a DiagnosticWarning, shown and tolerated.
    assert main([*argv, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    columns = ("w1", "sd_ratio") if data == "builtin:gap1d" else ("agreement", "total_variation")
    assert " nuts |" in out and all(column in out for column in columns)
    report = check_report(tmp_path, ["meanfield", "map"])
    assert "**Against NUTS.**" in report and "Closest to NUTS: **" in report
    idata = az.from_netcdf(tmp_path / "nuts.nc")  # the real chains, thinned to --export-samples
    assert idata.posterior.sizes["chain"] == 2 and idata.posterior.sizes["draw"] == 20
    assert "diverging" in idata.sample_stats


def test_without_matplotlib_the_table_and_netcdf_are_still_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import arviz  # noqa: F401  (imported before matplotlib is hidden; arviz 0.2x needs it itself)

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # any import of it now fails
    assert main(["fit", "--data", "builtin:gap1d", *FAST, "--out", str(tmp_path)]) == 0
    assert "Plots skipped: matplotlib is not installed" in capsys.readouterr().err
    report = (tmp_path / "report.md").read_text()
    assert "Plots skipped" in report and ".png" not in report and not list(tmp_path.glob("*.png"))
    assert "| meanfield" in report and (tmp_path / "meanfield.nc").is_file()


def test_fit_on_a_csv_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_csv(tmp_path / "houses.csv")
    out = tmp_path / "report"
    argv = ["fit", "--data", f"csv:{path}", "--target", "price", "--epochs", "2", "--batch-size", "16"]
    assert main([*argv, *FAST[2:], "--out", str(out)]) == 0
    assert "read as regression" in capsys.readouterr().err
    report = check_report(out, ["meanfield"])
    assert "72 training and 8 test points" in report  # 10% held out
    assert "2 epochs (10 steps)" in report


def test_fit_on_a_uci_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_uci(tmp_path / "toy")
    out = tmp_path / "report"
    assert main(["fit", "--data", f"uci:{folder}", "--split", "1", "--guide", "lowrank", *FAST, "--out", str(out)]) == 0
    report = check_report(out, ["lowrank"])
    assert "# pyrobnn guide comparison: toy" in report and "50 training and 10 test points" in report
    header, _, row = capsys.readouterr().out.strip().splitlines()
    columns = [c.strip() for c in header.split("|")]
    rmse = float(row.split("|")[columns.index("rmse")])
    assert math.isfinite(rmse) and rmse > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare", "--data", "builtin:nope"], "unknown built-in dataset 'nope'; available: gap1d, hetero1d"),
        (["fit", "--data", "builtin:gap1d", "--guide", "fullrnk"], "valid guides: meanfield, lowrank, fullrank"),
        (["fit", "--data", "moons"], "unsupported --data 'moons'; use builtin:NAME"),
        (["fit", "--data", "csv:{csv}"], "csv data need --target COLUMN; the columns of"),
        (["fit", "--data", "csv:{csv}", "--target", "prize"], "prize"),
        (["fit", "--data", "csv:{tmp}/missing.csv", "--target", "y"], "missing.csv"),
        (["fit", "--data", "uci:{uci}"], "uci data need --split K; "),
        (["fit", "--data", "uci:{uci}", "--split", "5"], "2 splits"),
        (["fit", "--data", "builtin:gap1d", "--split", "0"], "--split only applies to uci:DIR data"),
    ],
)
def test_mistakes_name_what_is_valid_and_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = {"csv": write_csv(tmp_path / "houses.csv"), "uci": write_uci(tmp_path / "toy"), "tmp": tmp_path}
    argv = [a.format(**paths) for a in argv]
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err
    if "prize" in argv:  # an unknown column lists the real ones
        assert "size" in err and "age" in err and "price" in err
