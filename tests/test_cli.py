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
        # the predictions are drawn in original units, those of rmse (the figure used to be standardised)
        assert "Original units (those of rmse)" in report and "inside the central p predictive interval" in report


def test_compare_takes_ensembles_as_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import arviz as az

    guides = "map,ensemble:map:3,ensemble:meanfield"
    assert main(["compare", "--data", "builtin:gap1d", "--guides", guides, *FAST, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert " ensemble:map:3 |" in out and " ensemble:meanfield |" in out
    report = check_report(tmp_path, ["map", "ensemble-map-3", "ensemble-meanfield"])
    assert "map is a point estimate" in report and "ensemble:map:3 mixes point estimates" in report
    assert "8 particles per step (the guide's default)" in report  # the members' own count, not a missing one
    # equally weighted members are written as chains: 3 MAP members, and ensemble:KIND's 8
    assert az.from_netcdf(tmp_path / "ensemble-map-3.nc").posterior.sizes["chain"] == 3
    idata = az.from_netcdf(tmp_path / "ensemble-meanfield.nc")
    if idata.posterior.attrs.get("ensemble_weights") is None:
        assert idata.posterior.sizes["chain"] == 8
    else:  # stacking weights from PSIS-LOO: one chain of the mixture
        assert idata.posterior.sizes["chain"] == 1


def test_compare_keeps_the_best_of_several_fits_as_one_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import arviz as az

    assert (
        main(["compare", "--data", "builtin:gap1d", "--guides", "best:meanfield:2", *FAST, "--out", str(tmp_path)]) == 0
    )
    assert " best:meanfield:2 |" in capsys.readouterr().out
    check_report(tmp_path, ["best-meanfield-2"])
    # the kept fit is one guide, not a mixture: its draws are one chain
    assert az.from_netcdf(tmp_path / "best-meanfield-2.nc").posterior.sizes["chain"] == 1


#: The reference runs of the tests: tiny, so the chains need not mix (the report then says so).
TINY_REFERENCE = {
    "chees": ["--chees-chains", "8", "--chees-warmup", "20", "--chees-samples", "8"],
    "nuts": ["--nuts-samples", "20", "--nuts-warmup", "20", "--nuts-chains", "2"],
}


@pytest.mark.parametrize(
    ("kernel", "data"), [("chees", "builtin:gap1d"), ("chees", "builtin:moons"), ("nuts", "builtin:gap1d")]
)
def test_compare_against_a_reference(
    kernel: str, data: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import arviz as az

    argv = ["compare", "--data", data, "--guides", "meanfield,map", "--hidden", "4", *FAST, "--reference", kernel]
    # 20 warm-up iterations may leave divergent draws: a DivergenceWarning, shown and tolerated.
    assert main([*argv, *TINY_REFERENCE[kernel], "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    columns = ("w1", "sd_ratio") if data == "builtin:gap1d" else ("agreement", "total_variation")
    assert "| reference |" in captured.out and all(column in captured.out for column in columns)
    assert " nuts |" not in captured.out and not (tmp_path / "nuts.nc").exists()  # the row was "nuts" whatever ran
    label, chains, draws = {"chees": ("ChEES-HMC", 8, 8), "nuts": ("NUTS", 2, 20)}[kernel]
    assert f"sampling the reference posterior with {label}" in captured.err
    report = check_report(tmp_path, ["meanfield", "map"])
    settings = f'sampled by {label} (`pb.mcmc`, kernel "{kernel}"): {chains} chains × {draws} draws after 20 warm-up'
    assert "**Against the reference.** The row *reference* is the posterior each guide approximates, " in report
    assert settings in report and f"Closest to the {label} reference: **" in report
    assert "draws divergent; " in report and "[reference.nc](reference.nc)" in report
    # which R̂: nested over ChEES's superchains (8 chains start in pairs of 4), classic across NUTS's chains
    what = "E[y | θ]" if data == "builtin:gap1d" else "the class probabilities"
    rhat = "nested R̂ (2 superchains of 4 chains)" if kernel == "chees" else "R̂ (2 chains)"
    assert f"{rhat} of {what} at the {200 if data == 'builtin:gap1d' else 400} test points at most " in report
    assert ("within 1.01, the chains mixed" in report) != ("above 1.01, so the chains did not mix" in report)
    assert "reference: " + label in captured.err  # the same sentence, without --out too
    idata = az.from_netcdf(tmp_path / "reference.nc")  # the real chains, thinned to --export-samples
    assert idata.posterior.sizes["chain"] == chains and idata.posterior.sizes["draw"] == min(draws, 20)
    assert "diverging" in idata.sample_stats


def test_the_reference_mixing_is_the_nested_rhat_of_its_predictions() -> None:
    """prediction_rhat is pb.nested_rhat of E[y | θ] per chain, and the report reads it honestly."""
    from torch import nn

    import pyrobnn as pb
    from pyrobnn.cli._reference import Reference, mixing_text, prediction_rhat

    model = pb.BayesianModel(pb.lift(nn.Linear(2, 1)), pb.likelihoods.Gaussian(0.5))
    x = torch.randn(30, 2, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(0)

    def draws(offset: float) -> pb.MCMCDraws:
        """64 chains × 100 iid draws in 16 superchains of 4; the odd superchains shifted by ``offset``."""
        out = pb.MCMCDraws(model, num_chains=64, num_draws=100, kernel="chees", superchain_size=4)
        values = 0.1 * torch.randn(out.values.shape, generator=g)
        values[torch.arange(64) // 4 % 2 == 1] += offset
        out.values.copy_(values)
        return out

    for offset, verdict in ((0.0, "within 1.01, the chains mixed"), (1.0, "above 1.01, so the chains did not mix")):
        source = draws(offset)
        rhat = prediction_rhat(pb.Posterior(model, source), x)
        w, b = source.chains["weight"], source.chains["bias"]  # (64, 100, 1, 2), (64, 100, 1)
        expected = pb.nested_rhat((w @ x.T).squeeze(-2) + b, superchain_size=4).max()
        assert rhat == pytest.approx(float(expected), rel=1e-6)
        # iid draws: nR̂² − 1 ≈ χ²₁₅/15 / (M·N) = 1/400 on average, so nR̂ ≈ 1.001 (≤ 1.004 at χ²'s 99.9%);
        # a shift of 10 draw sd between superchains puts it far above 1.01
        assert (rhat < 1.005) if offset == 0 else (rhat > 2)
        text = mixing_text(Reference(pb.Posterior(model, source), "chees", 400, rhat), len(x), "regression")
        assert 'ChEES-HMC (`pb.mcmc`, kernel "chees"): 64 chains × 100 draws after 400 warm-up' in text
        assert f"nested R̂ (16 superchains of 4 chains) of E[y | θ] at the 30 test points at most {rhat:.3g}" in text
        assert verdict in text
    one = pb.MCMCDraws(model, num_chains=1, num_draws=10, kernel="nuts")
    assert prediction_rhat(pb.Posterior(model, one), x) is None
    text = mixing_text(Reference(pb.Posterior(model, one), "nuts", 20, None), len(x), "regression")
    assert "one chain, so no R̂ says whether it mixed (more chains, warm-up or draws: --nuts-chains" in text


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
    # 80 rows: the default share is the most allowed, 30% (it was a flat 10%, 8 test rows)
    assert "56 training and 24 test points" in report and "at most 30% of the 80 rows" in report
    assert "2 epochs (8 steps)" in report  # 56 training rows in batches of 16: 4 steps per epoch


def test_fit_on_a_uci_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_uci(tmp_path / "toy")
    out = tmp_path / "report"
    assert main(["fit", "--data", f"uci:{folder}", "--split", "1", "--guide", "lowrank", *FAST, "--out", str(out)]) == 0
    report = check_report(out, ["lowrank"])
    # `fit` writes a report on one guide, titled as such (it was "guide comparison")
    assert "# pyrobnn fit: toy" in report and "50 training and 10 test points" in report
    header, _, row = capsys.readouterr().out.strip().splitlines()[:3]
    columns = [c.strip() for c in header.split("|")]
    rmse, se = (float(v) for v in row.split("|")[columns.index("rmse")].split("±"))  # "value ± se"
    assert math.isfinite(rmse) and rmse > 0 and 0 < se < rmse


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
        (["fit", "--data", "builtin:gap1d", "--features", "x"], "--features only apply to csv:PATH data"),
        (["fit", "--data", "csv:{csv}", "--target", "price", "--features", "size,colour"], "colour"),
        (["fit", "--data", "csv:{csv}", "--target", "price", "--features", ","], "--features names no column"),
        (["compare", "--data", "builtin:gap1d", "--reference", "hmc"], "invalid choice: 'hmc' (choose from"),
        (
            ["compare", "--data", "builtin:gap1d", "--guides", "ensemble:mapp:4"],
            "write it as ensemble:KIND:K or best:KIND:K",
        ),
        (["compare", "--data", "builtin:gap1d", "--guides", "ensemble:map:1"], "K >= 2 fits"),
        (["compare", "--data", "builtin:gap1d", "--guides", "best:meanfield:1"], "K >= 2 fits"),
        (["compare", "--data", "builtin:gap1d", "--guides", "best:flows:4"], "best:KIND:K"),
        (["compare", "--data", "builtin:gap1d", "--guides", "ensemble:map:four"], "ensemble:KIND:K"),
        (
            ["compare", "--data", "builtin:gap1d", "--reference", "nuts", "--chees-chains", "8"],
            "--chees-chains only applies to --reference chees; not --reference nuts",
        ),
        (
            ["fit", "--data", "builtin:gap1d", "--nuts-samples", "5", "--nuts-chains", "1"],
            "--nuts-chains, --nuts-samples only apply to --reference nuts; add --reference nuts",
        ),
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


def write_csv_with_text(path: Path, n: int = 60) -> Path:
    """A csv whose column ``region`` holds text, beside two numeric inputs and the target."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, generator=g)
    y = x[:, 0] - 0.5 * x[:, 1] + 0.1 * torch.randn(n, generator=g)
    rows = [
        f"{a:.4f},{'east' if i % 2 else 'west'},{b:.4f},{c:.4f}"
        for i, ((a, b), c) in enumerate(zip(x.tolist(), y.tolist(), strict=True))
    ]
    path.write_text("\n".join(["size,region,age,price", *rows]) + "\n")
    return path


def test_features_selects_the_csv_input_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_csv_with_text(tmp_path / "houses.csv")
    argv = ["fit", "--data", f"csv:{path}", "--target", "price", *FAST]
    assert main(argv) == 2  # every column but the target is an input by default, and "east" is no number
    assert "column 'region'" in capsys.readouterr().err  # the datasets' own error names the column
    out = tmp_path / "report"
    assert main([*argv, "--features", "size, age", "--test-fraction", "0.1", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "2 inputs" in report and "Network: 2-50-1" in report
    assert "54 training and 6 test points (10% held out, --test-fraction)" in report


@pytest.mark.parametrize(("rows", "share"), [(20, 0.3), (80, 0.3), (500, 0.2), (1000, 0.1), (5000, 0.1)])
def test_the_default_test_share_grows_for_small_files(rows: int, share: float, tmp_path: Path) -> None:
    from pyrobnn.cli import default_test_fraction

    path = write_csv(tmp_path / "data.csv", n=rows)
    assert default_test_fraction(str(path)) == pytest.approx(share)  # 100 test rows, within [0.1, 0.3]


def _diverging_for(monkeypatch: pytest.MonkeyPatch, kinds: set[str]) -> None:
    """Make the named guides' fits diverge for real: an absurd learning rate for them alone."""
    import pyrobnn.cli

    real_fit = pyrobnn.cli.fit

    def fit(model: object, kind: str, *args: object, **kwargs: object) -> object:
        if kind in kinds:
            kwargs["lr"] = 1e30
        return real_fit(model, kind, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pyrobnn.cli, "fit", fit)


def test_a_failed_guide_is_a_row_and_every_finished_one_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _diverging_for(monkeypatch, {"fullrank"})
    argv = ["compare", "--data", "builtin:gap1d", "--guides", "meanfield,fullrank,map", *FAST, "--out", str(tmp_path)]
    assert main(argv) == 1  # a guide failed: status 1, but only after everything else is written
    captured = capsys.readouterr()
    assert (
        "pyrobnn: fullrank failed: fitting the 'fullrank' guide (FullRankGuide): the loss became" in captured.err
        and "Try a lower --lr" in captured.err
    )
    report = check_report(tmp_path, ["meanfield", "map"])
    assert not (tmp_path / "fullrank.nc").exists()
    header, _, *rows = captured.out.split("\n\n")[0].splitlines()
    columns = [c.strip() for c in header.split("|")]
    cells = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")] for r in rows}
    assert (
        cells["fullrank"][columns.index("status")] == "failed" and cells["meanfield"][columns.index("status")] == "ok"
    )
    assert cells["fullrank"][columns.index("test_log_likelihood")] == "n/a"
    assert "failed: fullrank: fitting the 'fullrank' guide (FullRankGuide): the loss became" in captured.out
    assert (
        "**Failed guides.**" in report
        and "- **fullrank**: fitting the 'fullrank' guide (FullRankGuide): the loss became" in report
    )


def test_when_every_guide_fails_it_says_so_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _diverging_for(monkeypatch, {"meanfield", "map"})
    argv = ["compare", "--data", "builtin:gap1d", "--guides", "meanfield,map", *FAST, "--out", str(tmp_path / "r")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "every guide failed (meanfield, map); no table or report to write" in err
    assert "meanfield failed" in err and "map failed" in err and not (tmp_path / "r").exists()


def test_the_report_reads_its_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """MAP has no LOO; se, p_loo, bad-k share shown; terms defined; which guide to trust; labels; particles."""
    argv = ["compare", "--data", "builtin:moons", "--guides", "meanfield,map", *FAST, "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    header, _, *rows = out.split("\n\n")[0].splitlines()
    columns = [c.strip() for c in header.split("|")]
    assert {"elpd_loo_per_point", "p_loo", "loo_bad_khat"} <= set(columns)
    cells = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")] for r in rows}
    assert all(cells["map"][columns.index(c)] == "n/a" for c in ("elpd_loo_per_point", "p_loo", "loo_bad_khat"))
    assert "±" in cells["meanfield"][columns.index("elpd_loo_per_point")]
    assert "±" in cells["meanfield"][columns.index("accuracy")]
    report = (tmp_path / "report.md").read_text()
    assert "# pyrobnn guide comparison: moons" in report
    assert "None particles" not in report and "(meanfield 8, map 8)" not in report
    assert "8 particles per step (the guide's default)" in report
    assert "*accuracy*: share of test points whose most probable class" in report and "*ece*: expected" in report
    assert "Rows are sorted by test log-likelihood, best first." in report
    assert "Class labels" in report
    assert "**Which guide to trust.** Best held-out log-likelihood: **" in report
    assert "map is a point estimate" in report


def test_unreliable_loo_is_flagged_in_the_table_and_the_prose() -> None:
    import pandas as pd

    from pyrobnn.cli import table_text
    from pyrobnn.cli._trust import loo_text

    frame = pd.DataFrame(
        {
            "test_log_likelihood": [-0.46, -0.5],
            "test_log_likelihood_se": [0.05, 0.05],
            "elpd_loo": [-304.8, -150.0],
            "elpd_loo_per_point": [-1.129, -0.556],
            "elpd_loo_per_point_se": [0.1, 0.05],
            "p_loo": [177.0, 12.0],
            "loo_bad_khat": [177 / 270, 0.0],
        },
        index=["meanfield", "lowrank"],
    )
    table = table_text(frame)
    assert "-1.129 ± 0.1 ⚠" in table and "-0.556 ± 0.05 |" in table
    assert "⚠: some Pareto k of PSIS-LOO are too high (loo_bad_khat > 0): elpd_loo is unreliable." in table
    text = loo_text(frame)
    assert text.startswith("**LOO is unreliable for meanfield**") and "meanfield 66% (p_loo 177)" in text


def test_the_map_elbo_panel_shows_no_kl() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from torch import nn

    import pyrobnn as pb

    x = torch.randn(20, 1)
    model = pb.BayesianModel(pb.lift(nn.Linear(1, 1)), pb.likelihoods.Gaussian(0.1))
    fig = Figure()
    FigureCanvasAgg(fig)
    for kind, kl in (("map", "−log p(θ̂) (negative log prior)"), ("meanfield", "KL(q‖p)")):
        axes = fig.subplots(1, 2)
        pb.plots.plot_elbo(pb.fit(model, kind, (x, x[:, 0]), num_steps=5, progress=False), axes=axes)
        labels = [t.get_text() for t in axes[1].get_legend().get_texts()]
        assert kl in labels and (("KL(q‖p)" in labels) == (kind != "map"))
        fig.clear()


def test_regression_predictions_are_drawn_in_original_units(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pyrobnn.cli import _figures

    g = torch.Generator().manual_seed(0)
    x = 1000 + 100 * torch.rand(60, generator=g)  # far from the standardised scale
    y = 50 + 5 * torch.sin(x / 20)
    path = tmp_path / "raw.csv"
    path.write_text("\n".join(["x,y", *(f"{a:.4f},{b:.4f}" for a, b in zip(x.tolist(), y.tolist(), strict=True))]))
    limits = {}
    real_save = _figures._save

    def save(out: Path, names: list[str], draw: object, **kwargs: object) -> None:
        if out.name == "predictions.png":
            from matplotlib.figure import Figure

            ax = Figure().subplots()
            draw(ax, names[0])  # type: ignore[operator]
            limits["x"], limits["y"] = ax.dataLim.intervalx, ax.dataLim.intervaly
        real_save(out, names, draw, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_figures, "_save", save)
    argv = ["fit", "--data", f"csv:{path}", "--target", "y", *FAST, "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    assert 960 < limits["x"][0] < 1001 and 1099 < limits["x"][1] < 1130  # the data's x, and a quarter beyond
    assert 30 < limits["y"][0] < 46 and 54 < limits["y"][1] < 70  # y around 50 ± 5, with the band


def test_only_usage_mistakes_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    import pyrobnn.cli as cli

    def broken(*args: object, **kwargs: object) -> int:
        raise ValueError("a fault inside the library")

    # a ValueError from deeper in the library is no usage mistake: it is not reported as one
    monkeypatch.setattr(cli, "run", broken)
    with pytest.raises(ValueError, match="a fault inside the library"):
        main(["fit", "--data", "builtin:gap1d", "--quiet"])
