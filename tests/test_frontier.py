"""`timm-scaling frontier`: reading, Pareto front, fits, bootstrap verdicts, outputs, bad input."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from timm_scaling import frontier
from timm_scaling.cli import app

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO.parent / "shared" / "reference"
runner = CliRunner()


def write_csv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def linear_rows(rng, groups: dict[str, tuple[float, float, list[float]]], seeds: int, noise: float):
    """Runs of y = a + b log10(x) + N(0, noise) for group -> (a, b, costs)."""
    rows = []
    for group, (a, b, costs) in groups.items():
        for k, cost in enumerate(costs):
            for seed in range(seeds):
                y = a + b * math.log10(cost) + rng.normal(0, noise)
                rows.append(dict(model=f"{group}_{k}", method=group, gmacs=cost, top1=y, seed=seed))
    return pd.DataFrame(rows)


def group(fr, name):
    return next(g for g in fr.groups if g.name == name)


# ------------------------------------------------------------------------------ statistics


def test_log_linear_fit_recovers_known_parameters():
    rng = np.random.default_rng(1)
    costs = list(np.geomspace(0.4, 10, 8))
    rows = linear_rows(rng, {"width": (70.0, 6.0, costs)}, seeds=4, noise=0.3)
    fr = frontier.analyse(rows, draws=500)
    fit = group(fr, "width").fit
    assert fit.b == pytest.approx(6.0, abs=0.4)
    assert fit.a == pytest.approx(70.0, abs=0.3)
    assert fit.ci["b"][0] < 6.0 < fit.ci["b"][1]
    assert fit.per_doubling == pytest.approx(fit.b * math.log10(2))
    # A second implementation: scipy's regression on the model means.
    means = rows.groupby("model").agg(x=("gmacs", "mean"), y=("top1", "mean"))
    reg = stats.linregress(np.log10(means.x), means.y)
    assert (fit.a, fit.b) == pytest.approx((reg.intercept, reg.slope))


def test_power_law_recovers_known_parameters_alone_and_with_shared_c():
    rng = np.random.default_rng(2)
    x = np.geomspace(0.1, 100, 12)
    err = 10 + 30 * x**-0.5 + rng.normal(0, 0.05, x.size)
    law = frontier.fit_power_law([(x, err)], c_max=err.min())
    assert law.c == pytest.approx(10, abs=0.5)
    assert law.a[0] == pytest.approx(30, rel=0.05)
    assert law.b[0] == pytest.approx(0.5, abs=0.03)
    x2 = np.geomspace(0.2, 50, 6)
    err2 = 10 + 15 * x2**-0.8 + rng.normal(0, 0.05, x2.size)
    shared = frontier.fit_power_law([(x, err), (x2, err2)], c_max=min(err.min(), err2.min()))
    assert shared.c == pytest.approx(10, abs=0.5)
    assert shared.b == pytest.approx((0.5, 0.8), abs=0.06)


def test_power_law_is_refused_with_few_costs_and_the_output_says_why():
    rng = np.random.default_rng(3)
    rows = linear_rows(rng, {"width": (70.0, 6.0, [0.5, 1, 2, 4, 8])}, seeds=2, noise=0.2)
    fr = frontier.analyse(rows, draws=200)
    g = group(fr, "width")
    assert g.fit is not None
    assert g.power_law is None
    assert "5 distinct cost(s)" in g.power_law_note and "useless" in g.power_law_note


def test_group_with_fewer_than_three_costs_is_not_fitted_and_says_why():
    rows = pd.DataFrame(
        dict(model=["a", "b"], method=["depth", "depth"], gmacs=[1.0, 2.0], top1=[70.0, 71.0])
    )
    fr = frontier.analyse(rows, draws=200)
    g = group(fr, "depth")
    assert g.fit is None and "2 distinct cost(s)" in g.fit_note


@pytest.mark.parametrize(
    ("xs", "ys", "expected"),
    [
        ([1, 2, 3, 4], [70, 75, 74, 80], [True, True, False, True]),
        ([1, 1, 2], [70, 72, 71], [False, True, False]),  # same cost, lower accuracy: dominated
        ([1, 1, 2], [70, 70, 75], [True, True, True]),  # identical points dominate neither
        ([5, 4, 3], [70, 71, 72], [False, False, True]),
    ],
)
def test_pareto_front_on_hand_checked_tables(xs, ys, expected):
    assert frontier.pareto_front(xs, ys).tolist() == expected


def test_pareto_front_for_a_throughput_where_higher_x_is_better():
    front = frontier.pareto_front([100, 200, 300], [80, 75, 70], lower_x_is_better=False)
    assert front.tolist() == [True, True, True]
    front = frontier.pareto_front([100, 200, 300], [80, 85, 70], lower_x_is_better=False)
    assert front.tolist() == [False, True, True]


def test_bootstrap_interval_covers_the_true_difference_at_about_the_nominal_rate():
    # compound at cost 1 is truly 3 points above width's line there; 200 simulated studies with
    # 4 seeds per model, each with a 200-draw bootstrap.
    rng = np.random.default_rng(4)
    truth = {"width": (70.0, 5.0, [0.5, 1.0, 2.0]), "compound": (73.0, 0.0, [1.0])}
    covered = 0
    simulations = 200
    for sim in range(simulations):
        rows = linear_rows(rng, truth, seeds=4, noise=0.5)
        (verdict,) = frontier.analyse(rows, draws=200, seed=sim).verdicts
        low, high = verdict.ci
        covered += low <= 3.0 <= high
    assert 0.88 <= covered / simulations <= 0.99


def test_bootstrap_widens_resampled_means_to_the_unbiased_variance():
    values = [1.0, 2.0, 4.0]
    draws = frontier.bootstrap_means([values, [5.0]], 20000, np.random.default_rng(0))
    assert draws[:, 0].var() == pytest.approx(np.var(values, ddof=1) / 3, rel=0.05)
    assert np.all(draws[:, 1] == 5.0)


def test_paper_table2_gives_a_monotone_fit():
    table2 = REFERENCE_DIR / "paper_table2_b0_b7.csv"
    if not table2.exists():
        pytest.skip(f"no reference table at {table2} (the shared folder beside the checkout)")
    rows, warnings = frontier.read_results([table2], "gmacs", "top1")
    fr = frontier.analyse(rows, draws=200)
    assert warnings == []
    g = group(fr, "efficientnet")  # efficientnet-b0..b7: the family of the names
    raw = pd.read_csv(table2)
    reg = stats.linregress(np.log10(raw.gmacs), raw.top1)
    assert g.fit.b == pytest.approx(reg.slope) and g.fit.b > 0
    law = g.power_law  # eight costs: fitted alone; decreasing error means rising accuracy
    assert law is not None and law.a > 0 and law.b > 0
    assert 0 <= law.c < (100 - raw.top1).min()
    assert fr.front == raw.model.tolist()  # every bigger B-model is more accurate


# ---------------------------------------------------------------------------------- groups


@pytest.mark.parametrize(
    ("model", "method"),
    [
        ("effnet_b0", "baseline"),
        ("effnet_b0_d4", "depth"),
        ("effnet_b0_w1p4", "width"),
        ("effnet_b0_r2", "resolution"),
        ("effnet_b0_phi2", "compound"),
        ("effnet_b0_d2_w1p4", "mixed"),
        ("tf_efficientnet_b3.ns_jft_in1k", "tf_efficientnet"),
        ("efficientnet-b0", "efficientnet"),
        ("tf_efficientnetv2_s", "tf_efficientnetv2"),
        ("resnet50", "resnet"),
        ("densenet121.tv_in1k", "densenet"),
        ("resnet50d", "other"),
    ],
)
def test_method_of_a_model_name(model, method):
    assert frontier.method_of(model) == method


def our_report(rng, seeds: int) -> pd.DataFrame:
    """Our names, no method column: compound 3 points above the others at equal cost."""
    models = {
        "effnet_b0": (0.39, 70.0),
        "effnet_b0_d2": (0.7, 71.5),
        "effnet_b0_d4": (1.4, 73.0),
        "effnet_b0_w1p4": (0.75, 71.6),
        "effnet_b0_w2": (1.5, 73.1),
        "effnet_b0_r1p5": (0.85, 71.8),
        "effnet_b0_r2": (1.5, 73.0),
        "effnet_b0_phi1": (0.7, 74.5),
        "effnet_b0_phi2": (1.4, 76.0),
    }
    rows = []
    for model, (cost, top1) in models.items():
        for seed in range(seeds):
            rows.append(
                dict(
                    model=model,
                    seed=seed,
                    gmacs=cost,
                    param_count=5.3 * cost,
                    top1=top1 + rng.normal(0, 0.1),
                )
            )
    return pd.DataFrame(rows)


def test_our_names_group_by_method_share_the_baseline_and_give_verdict_lines(tmp_path):
    path = write_csv(
        tmp_path / "report.csv", our_report(np.random.default_rng(5), 3).to_dict("records")
    )
    fr, written = frontier.run([path], draws=100)
    assert [g.name for g in fr.groups] == ["baseline", "depth", "width", "resolution", "compound"]
    assert "effnet_b0" in group(fr, "depth").models
    assert {p.name for p in written} == {
        "frontier.json",
        "frontier.md",
        "frontier.png",
        "frontier.svg",
    }
    pattern = re.compile(
        r"^compound vs (depth|width|resolution) at \d\.\d+ GMACs: "
        r"\+\d\.\d pts, 95% CI \[\d\.\d, \d\.\d\]$"
    )
    lines = [v.line for v in fr.verdicts]
    assert len(lines) == 6 and all(pattern.match(line) for line in lines), lines
    assert all(v.difference == pytest.approx(3.0, abs=0.5) for v in fr.verdicts)


def test_no_difference_says_so_and_n1_claims_nothing():
    rng = np.random.default_rng(6)
    same = {"width": (70.0, 5.0, [0.5, 1.0, 2.0]), "compound": (70.0, 5.0, [1.0])}
    fr = frontier.analyse(linear_rows(rng, same, seeds=4, noise=0.5), draws=500)
    (verdict,) = fr.verdicts
    assert "no significant difference" in verdict.line and verdict.significant is False
    fr = frontier.analyse(linear_rows(rng, same, seeds=1, noise=0.5), draws=500)
    (verdict,) = fr.verdicts
    assert verdict.line.endswith("n=1 per model: no interval, no claim")
    assert verdict.ci is None and verdict.significant is None
    assert any("n=1" in note for note in fr.notes)


def test_at_reads_both_curves_and_never_extrapolates():
    rng = np.random.default_rng(7)
    truth = {"width": (70.0, 5.0, [0.5, 1.0, 2.0]), "compound": (72.0, 5.0, [0.5, 1.0, 4.0])}
    fr = frontier.analyse(linear_rows(rng, truth, seeds=3, noise=0.2), at=[1.5, 3.0], draws=300)
    inside, outside = fr.verdicts
    assert inside.difference == pytest.approx(2.0, abs=0.5) and inside.via == "fit"
    assert outside.difference is None and "outside width's measured costs" in outside.line


def test_noise_floor_with_eval_size():
    rng = np.random.default_rng(8)
    truth = {"width": (70.0, 5.0, [0.5, 1.0, 2.0]), "compound": (73.0, 0.0, [1.0])}
    fr = frontier.analyse(linear_rows(rng, truth, seeds=3, noise=0.2), eval_size=10000, draws=200)
    (verdict,) = fr.verdicts
    p = verdict.reference_value / 100
    assert verdict.noise_floor == pytest.approx(100 * math.sqrt(p * (1 - p) / 10000))
    assert not any("--eval-size" in note for note in fr.notes)


# ------------------------------------------------------------------------- the command


TIMM_STYLE = [  # timm's results/benchmark column names; numbers of the order timm publishes
    dict(model="tf_efficientnet_b0.ns_jft_in1k", top1=78.7, infer_gmacs=0.39, infer_img_size=224),
    dict(model="tf_efficientnet_b1.ns_jft_in1k", top1=81.4, infer_gmacs=0.70, infer_img_size=240),
    dict(model="tf_efficientnet_b2.ns_jft_in1k", top1=82.4, infer_gmacs=1.02, infer_img_size=260),
    dict(model="tf_efficientnet_b3.ns_jft_in1k", top1=84.1, infer_gmacs=1.87, infer_img_size=300),
    dict(model="tf_efficientnet_b4.ns_jft_in1k", top1=85.2, infer_gmacs=4.51, infer_img_size=380),
    dict(model="tf_efficientnet_b5.ns_jft_in1k", top1=86.1, infer_gmacs=10.46, infer_img_size=456),
]


def test_timm_style_csv_with_infer_gmacs(tmp_path):
    path = write_csv(tmp_path / "results.csv", TIMM_STYLE)
    out = tmp_path / "out"
    result = runner.invoke(app, ["frontier", str(path), "--out", str(out), "--bootstrap", "200"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "frontier.json").read_text())
    (g,) = data["groups"]
    assert g["name"] == "tf_efficientnet"
    raw = pd.DataFrame(TIMM_STYLE)
    reg = stats.linregress(np.log10(raw.infer_gmacs), raw.top1)
    assert g["fit"]["per_doubling"] == pytest.approx(reg.slope * math.log10(2))
    assert [p["label"] for p in data["points"]] == ["b0", "b1", "b2", "b3", "b4", "b5"]
    assert (out / "frontier.png").stat().st_size > 10000
    assert "<svg" in (out / "frontier.svg").read_text()[:500]
    assert "| MACs (GMACs) |" in (out / "frontier.md").read_text()


def test_format_json_and_markdown_print_what_the_files_hold(tmp_path):
    path = write_csv(tmp_path / "results.csv", TIMM_STYLE)
    result = runner.invoke(app, ["frontier", str(path), "--format", "json", "--bootstrap", "100"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed == json.loads((tmp_path / "frontier.json").read_text())
    assert [p["model"] for p in printed["points"]] == [row["model"] for row in TIMM_STYLE]
    result = runner.invoke(
        app, ["frontier", str(path), "--format", "markdown", "--bootstrap", "100"]
    )
    assert result.output == (tmp_path / "frontier.md").read_text()


def test_same_seed_same_numbers_another_seed_other_intervals():
    rng = np.random.default_rng(10)
    truth = {"width": (70.0, 5.0, [0.5, 1.0, 2.0]), "compound": (73.0, 0.0, [1.0])}
    rows = linear_rows(rng, truth, seeds=3, noise=0.5)
    first = frontier.analyse(rows, draws=200, seed=1).to_dict()
    assert first == frontier.analyse(rows, draws=200, seed=1).to_dict()
    assert first["verdicts"] != frontier.analyse(rows, draws=200, seed=2).to_dict()["verdicts"]


# ----------------------------------------------------------------------------- bad input


def one_line_error(result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_missing_file(tmp_path):
    line = one_line_error(runner.invoke(app, ["frontier", str(tmp_path / "nope.csv")]), 3)
    assert "does not exist" in line


def test_empty_csv_and_header_only(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    assert "is empty" in one_line_error(
        runner.invoke(app, ["frontier", str(tmp_path / "empty.csv")]), 3
    )
    (tmp_path / "header.csv").write_text("model,top1,gmacs\n")
    line = one_line_error(runner.invoke(app, ["frontier", str(tmp_path / "header.csv")]), 3)
    assert "no rows" in line


def test_missing_columns_name_the_accepted_aliases(tmp_path):
    path = write_csv(tmp_path / "r.csv", [dict(model="a", top1=70.0, flops=1.0)])
    line = one_line_error(runner.invoke(app, ["frontier", str(path)]), 3)
    assert "'gmacs'" in line and "infer_gmacs" in line and "flops" in line


def test_non_numeric_rows_are_dropped_with_a_count(tmp_path):
    rows = [dict(model=f"m{i}", method="width", gmacs=2.0**i, top1=70.0 + i) for i in range(4)]
    rows += [dict(model="bad1", method="width", gmacs="n/a", top1=71.0)]
    rows += [dict(model="bad2", method="width", gmacs=1.0, top1="oops")]
    path = write_csv(tmp_path / "r.csv", rows)
    result = runner.invoke(app, ["frontier", str(path), "--bootstrap", "200"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "dropped 2 of 6 rows" in result.output and "(lines 6, 7)" in result.output
    assert len(json.loads((tmp_path / "frontier.json").read_text())["points"]) == 4


def test_nothing_left_after_dropping(tmp_path):
    path = write_csv(tmp_path / "r.csv", [dict(model="a", gmacs="x", top1=70.0)])
    line = one_line_error(runner.invoke(app, ["frontier", str(path)]), 3)
    assert "no rows left" in line


@pytest.mark.parametrize(
    "args", [["--bootstrap", "10"], ["--at", "-1"], ["--format", "xml"], ["--eval-size", "0"]]
)
def test_bad_options_exit_2(tmp_path, args):
    path = write_csv(tmp_path / "r.csv", TIMM_STYLE)
    one_line_error(runner.invoke(app, ["frontier", str(path), *args]), 2)


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def test_bad_input_in_a_real_process_is_one_line_and_exit_3(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "timm_scaling", "frontier", str(tmp_path / "missing.csv")],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert proc.returncode == 3
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_frontier_imports_neither_torch_nor_timm(tmp_path):
    path = write_csv(tmp_path / "results.csv", TIMM_STYLE)
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from timm_scaling.cli import app\n"
        f"r = CliRunner().invoke(app, ['frontier', {str(path)!r}, '--bootstrap', '200'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(sorted(m for m in ('torch', 'timm', 'calflops') if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
