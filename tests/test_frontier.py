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
from timm_scaling.imagesets import data_label
from timm_scaling.scaling import is_model_name

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


def test_a_point_of_many_runs_is_resampled_in_slices_to_the_same_draws(monkeypatch):
    """100,000 runs of a model x 2000 draws were 1.6 GB of indices at once (3.3 GB for three
    such points); drawn a slice of draws at a time, the same seed gives the same draws."""
    from timm_scaling.frontier import fit

    runs = [np.random.default_rng(0).normal(size=n) for n in (1, 3, 50, 3000)]
    whole = fit.bootstrap_means(runs, 500, np.random.default_rng(5))
    monkeypatch.setattr(fit, "RESAMPLED_AT_ONCE", 7)  # 2 draws of 3 runs, 1 draw of 50 at once
    assert np.array_equal(fit.bootstrap_means(runs, 500, np.random.default_rng(5)), whole)


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
        ("tf_efficientnet_b3.ns_jft_in1k", "tf_efficientnet.ns_jft_in1k"),
        ("efficientnet-b0", "efficientnet"),
        ("tf_efficientnetv2_s", "tf_efficientnetv2"),
        ("resnet50", "resnet"),
        ("densenet121.tv_in1k", "densenet.tv_in1k"),
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
        r"^compound φ=\d vs (depth|width|resolution) at \d\.\d+ GMACs: "
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
    assert verdict.line.endswith("n=1 per point: no interval, no claim")
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
    result = runner.invoke(app, ["frontier", str(path), "-o", str(out), "--bootstrap", "200"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "frontier.json").read_text())
    (g,) = data["groups"]
    assert g["name"] == "tf_efficientnet.ns_jft_in1k"
    raw = pd.DataFrame(TIMM_STYLE)
    reg = stats.linregress(np.log10(raw.infer_gmacs), raw.top1)
    assert g["fit"]["per_doubling"] == pytest.approx(reg.slope * math.log10(2))
    assert [p["label"] for p in data["points"]] == ["b0", "b1", "b2", "b3", "b4", "b5"]
    assert [p["img_size"] for p in data["points"]] == [224, 240, 260, 300, 380, 456]
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
    # A device, not a file: named as what it is.
    line = one_line_error(runner.invoke(app, ["frontier", "/dev/null"]), 3)
    assert "/dev/null is not a file: pass a report.csv" in line


def test_empty_csv_and_header_only(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    assert "is empty" in one_line_error(
        runner.invoke(app, ["frontier", str(tmp_path / "empty.csv")]), 3
    )
    (tmp_path / "header.csv").write_text("model,top1,gmacs\n")
    line = one_line_error(runner.invoke(app, ["frontier", str(tmp_path / "header.csv")]), 3)
    assert "no rows" in line


@pytest.mark.parametrize("header", ["model,gmacs,top1,top1", "model, gmacs,top1,gmacs"])
def test_two_columns_of_one_name_are_refused_naming_it(tmp_path, header):
    """pandas reads the first and renames the second (top1.1): a silent choice of number."""
    path = tmp_path / "dup.csv"
    path.write_text(f"{header}\nresnet18,1.8,70,10\nresnet34,3.6,73,20\nresnet50,4.1,76,30\n")
    name = "top1" if header.endswith("top1") else "gmacs"
    line = one_line_error(runner.invoke(app, ["frontier", str(path)]), 3)
    assert f"{path} has two columns named '{name}'" in line


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


# ------------------------------------------------------------ timm's results and benchmarks

TIMM_DATA = REPO / "tests" / "data" / "timm"
RESULTS = TIMM_DATA / "results-imagenet.csv"
BENCHMARK = TIMM_DATA / "benchmark-infer-amp-nchw-pt291-cu128-4090.csv"
IMAGENET = REPO / "analysis" / "imagenet"


@pytest.mark.parametrize(
    ("name", "family", "without_tag"),
    [
        ("tf_efficientnet_b3.in1k", "tf_efficientnet.in1k", "tf_efficientnet"),
        ("resnet50.tv_in1k", "resnet.tv_in1k", "resnet"),
        ("regnety_016.pycls_in1k", "regnety.pycls_in1k", "regnety"),
        ("convnext_tiny.fb_in1k", "convnext.fb_in1k", "convnext"),
        ("edgenext_xx_small.in1k", "edgenext.in1k", "edgenext"),
        ("resnext101_32x8d.tv_in1k", "resnext.tv_in1k", "resnext"),
        ("vit_base_patch16_224.augreg_in1k", "vit_patch16.augreg_in1k", "vit_patch16"),
        ("tf_efficientnetv2_b3.in1k", "tf_efficientnetv2.in1k", "tf_efficientnetv2"),
        ("inception_v3.tv_in1k", "inception_v3.tv_in1k", "inception_v3"),
        ("efficientnet-b0", "efficientnet", "efficientnet"),
    ],
)
def test_family_of_timm_names(name, family, without_tag):
    assert frontier.family_of(name) == family
    assert frontier.family_of(name, tag=False) == without_tag
    assert frontier.method_of(name) == family


# Names whose family still holds what looks like a size: a generation (eva02), a name that is a
# size word (tiny_vit), or a size that no rule of thumb reads (dla102x2, swinv2's windows).
FAMILY_EXCEPTIONS = {
    "dla102x2",
    "eva02_patch14",
    "tiny_vit",
    "swinv2_window12to_192to256",
    "swinv2_window12to_192to384",
}
LOOKS_SIZED = re.compile(
    r"(?:^|_)(?:x*(?:tiny|small|base|medium|large|huge|giant|nano|pico|femto|atto)|\d+)(?:_|$)"
    r"|[a-uw-z]\d{2,}(?!\d)"
)


def test_family_of_every_name_in_timms_results():
    names = pd.read_csv(IMAGENET / "results-imagenet.csv")["model"]
    families = {name: frontier.family_of(name, tag=False) for name in names}
    sized = {
        family
        for family in families.values()
        if LOOKS_SIZED.search(
            "_".join(t for t in family.split("_") if not re.match(r"(patch|window)\d", t))
        )
    }
    assert sized == FAMILY_EXCEPTIONS
    # The tag is kept as it is, and sizes of one family meet in one group.
    assert frontier.family_of("convnext_tiny.fb_in1k") == frontier.family_of(
        "convnext_xxlarge.fb_in1k"
    )
    assert len(set(families.values())) < len(set(names.str.split(".").str[0])) / 2


def test_join_takes_each_rows_cost_from_its_architecture_and_size():
    rows, warnings = frontier.read_results([RESULTS, BENCHMARK], "gmacs", "top1")
    bench = pd.read_csv(BENCHMARK).set_index(["model", "infer_img_size"])
    for _, row in rows.iterrows():
        expected = bench.loc[(row["model"].split(".")[0], row["img_size"])]
        assert row["gmacs"] == expected["infer_gmacs"]
        assert row["macts"] == expected["infer_macts"]
    # convnext_tiny at 224 and 288: two costs, two points, labelled by size
    fr = frontier.analyse(rows, draws=100)
    tiny = [p for p in fr.points if p.model == "convnext_tiny.fb_in1k"]
    assert [(p.label, p.img_size, p.n) for p in tiny] == [
        ("tiny@224", 224, 1),
        ("tiny@288", 288, 1),
    ]
    assert tiny[0].x == bench.loc[("convnext_tiny", 224), "infer_gmacs"]
    assert tiny[1].x == bench.loc[("convnext_tiny", 288), "infer_gmacs"]
    assert tiny[1].name == "convnext_tiny.fb_in1k@288"
    b3 = next(p for p in fr.points if p.model == "tf_efficientnet_b3.in1k")
    assert (b3.label, b3.name) == ("b3", "tf_efficientnet_b3.in1k")  # one size: no @


def test_rows_without_a_cost_are_left_out_with_one_warning_and_their_count(tmp_path):
    result = runner.invoke(
        app,
        ["frontier", str(RESULTS), str(BENCHMARK), "--out", str(tmp_path), "--bootstrap", "100"],
    )
    assert result.exit_code == 0, result.output
    (line,) = [x for x in result.output.splitlines() if "no gmacs in the cost tables" in x]
    total = len(pd.read_csv(RESULTS))
    assert f"2 of {total} rows" in line and "--measure-missing" in line
    assert "convnext_small.fb_in1k@288" in line and "densenet121.tv_in1k@224" in line
    data = json.loads((tmp_path / "frontier.json").read_text())
    assert len(data["points"]) == total - 2
    assert all(p["img_size"] for p in data["points"])


def test_cost_tables_alone_and_disagreeing_cost_tables(tmp_path):
    line = one_line_error(runner.invoke(app, ["frontier", str(BENCHMARK)]), 3)
    assert "cost table(s) only" in line and BENCHMARK.name in line
    other = pd.read_csv(BENCHMARK)
    other.loc[other.model == "resnet50", "infer_gmacs"] *= 1.5  # another GPU's run, say
    other_path = write_csv(tmp_path / "benchmark-other.csv", other.to_dict("records"))
    rows, warnings = frontier.read_results([RESULTS, BENCHMARK, other_path], "gmacs", "top1")
    (warning,) = [w for w in warnings if "disagree" in w]
    assert "1 (architecture, image size) pair(s) (resnet50@224)" in warning
    resnet50 = rows.loc[rows.model == "resnet50.tv_in1k", "gmacs"].item()
    assert resnet50 == pd.read_csv(BENCHMARK).set_index("model").loc["resnet50", "infer_gmacs"]


def test_cost_table_without_image_size_joins_on_architecture_only_where_unique(tmp_path):
    bench = pd.read_csv(BENCHMARK).drop(columns="infer_img_size")
    one_size = bench[~bench.model.isin(["convnext_tiny", "edgenext_xx_small"])]
    path = write_csv(tmp_path / "costs.csv", one_size.to_dict("records"))
    results = pd.read_csv(RESULTS)
    single = results[~results.model.str.startswith(("convnext_tiny", "edgenext"))]
    acc = write_csv(tmp_path / "results.csv", single.to_dict("records"))
    rows, _ = frontier.read_results([acc, path], "gmacs", "top1")
    assert rows.set_index("model").loc["resnet50.tv_in1k", "gmacs"] == 4.11
    write_csv(tmp_path / "costs.csv", bench.to_dict("records"))
    line = one_line_error(runner.invoke(app, ["frontier", str(acc), str(path)]), 3)
    assert "no infer_img_size" in line and "convnext_tiny" in line


def test_models_picks_the_analysed_points_and_the_rest_are_context(tmp_path):
    args = ["frontier", str(RESULTS), str(BENCHMARK), "--out", str(tmp_path), "--bootstrap", "100"]
    picked = ["--models", "tf_efficientnet_b?.in1k", "--models", "resnet*.tv_in1k"]
    result = runner.invoke(app, [*args, *picked, "--reference", "tf_efficientnet.in1k"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "frontier.json").read_text())
    assert {g["name"] for g in data["groups"]} == {"tf_efficientnet.in1k", "resnet.tv_in1k"}
    assert len(data["points"]) == 11
    assert "convnext_tiny.fb_in1k@224" in data["unselected"]
    assert {v["other"] for v in data["verdicts"]} == {"resnet.tv_in1k"}
    line = one_line_error(runner.invoke(app, [*args, "--models", "tf_efficientnet_b9*"]), 2)
    assert "matches no model" in line and "close names: tf_efficientnet_b" in line


def test_n1_verdict_interval_from_evaluation_noise_by_hand():
    # b3 and resnet34 at their published top-1, put at one cost so the comparison is direct.
    results = pd.read_csv(RESULTS).set_index("model")
    b3, r34 = (
        results.loc["tf_efficientnet_b3.in1k", "top1"],
        results.loc["resnet34.tv_in1k", "top1"],
    )
    rows = pd.DataFrame(
        dict(
            model=["tf_efficientnet_b3.in1k", "resnet34.tv_in1k"], gmacs=[1.0, 1.0], top1=[b3, r34]
        )
    )
    fr = frontier.analyse(rows, reference="tf_efficientnet.in1k", eval_size=50000, draws=100)
    (verdict,) = fr.verdicts
    # Var of a difference of two independent accuracies on 50,000 images each, in points:
    se = 100 * math.sqrt((0.80878 * 0.19122 + 0.73298 * 0.26702) / 50000)
    assert (b3, r34) == (80.878, 73.298)
    assert verdict.difference == pytest.approx(7.58)
    assert verdict.ci == pytest.approx([7.58 - 1.959964 * se, 7.58 + 1.959964 * se], abs=1e-5)
    assert verdict.interval_from == "evaluation noise" and verdict.significant
    assert "evaluation noise only; the spread between training runs is unknown" in verdict.line
    fr = frontier.analyse(rows, reference="tf_efficientnet.in1k", draws=100)
    assert fr.verdicts[0].ci is None and "no claim" in fr.verdicts[0].line


# ------------------------------------------------------------------- configurations (ours)


def settings_rows() -> list[dict]:
    rows = []
    for model, cost, top1 in (("effnet_b0", 0.39, 80.0), ("effnet_b0_w2", 1.5, 84.0)):
        for seed in (0, 1):
            base = dict(model=model, gmacs=cost, img_size=32, dataset="digits", recipe="digits")
            rows.append(dict(base, epochs=3, seed=seed, top1=top1 + seed))
    return rows


def test_rows_of_one_model_in_two_settings_are_refused_and_where_picks_one(tmp_path):
    rows = settings_rows() + [dict(settings_rows()[0], epochs=1, top1=15.6)]
    path = write_csv(tmp_path / "report.csv", rows)
    line = one_line_error(runner.invoke(app, ["frontier", str(path)]), 3)
    assert "effnet_b0 differ in epochs (1, 3)" in line
    assert "--where epochs=3" in line and "--group epochs" in line
    result = runner.invoke(app, ["frontier", str(path), "--where", "epochs=3", "--format", "json"])
    assert result.exit_code == 0, result.output
    b0 = next(p for p in json.loads(result.output)["points"] if p["model"] == "effnet_b0")
    assert (b0["n"], b0["y"]) == (2, 80.5)  # the two seeds, not the 1-epoch run
    result = runner.invoke(app, ["frontier", str(path), "--where", "epochs=9"])
    assert "matches no row" in one_line_error(result, 2)
    picture = tmp_path / "front.png"
    result = runner.invoke(app, ["frontier", str(path), "--where", "epochs=3", "-o", str(picture)])
    assert one_line_error(result, 2) == (
        f"error: --output {picture} names a file, but --output is a folder (it holds "
        "frontier.json, frontier.md, frontier.png and frontier.svg); pass --output "
        f"{tmp_path / 'front'}"
    )
    # A mistyped --group is named first, not the rows' settings it was meant to sort out.
    result = runner.invoke(app, ["frontier", str(path), "--group", "epoch"])
    assert "no 'epoch' column to group by" in one_line_error(result, 2)


@pytest.mark.parametrize(("column", "other"), [("epochs", 4), ("dataset", "folder:/data/b")])
def test_models_trained_in_other_settings_are_not_one_frontier(tmp_path, column, other):
    # One model's run extended (`--resume --epochs 4`), or trained on other data: not a point
    # beside the others, which the frontier would have put on the front (issue 34.2).
    rows = settings_rows() + [
        dict(settings_rows()[0], model="effnet_b0_d4", gmacs=1.4, top1=95.0, seed=seed)
        for seed in (0, 1)
    ]
    for row in rows[-2:]:
        row[column] = other
    path = write_csv(tmp_path / "report.csv", rows)
    line = one_line_error(runner.invoke(app, ["frontier", str(path)]), 3)
    assert f"rows differ in {column}" in line and "effnet_b0_d4" in line
    first = settings_rows()[0][column]
    assert f"--where {column}={first}" in line and f"--group {column}" in line
    fr, _ = frontier.run([path], draws=100, conditions=[f"{column}={first}"])
    assert sorted(p.model for p in fr.points) == ["effnet_b0", "effnet_b0_w2"]
    fr, _ = frontier.run([path], draws=100, group=column)
    assert sorted(map(str, {p.group for p in fr.points})) == sorted(map(str, {first, other}))


def test_a_folder_runs_dataset_cell_names_its_folder(tmp_path):
    assert data_label("folder", tmp_path / "a" / ".." / "imgs") == f"folder:{tmp_path / 'imgs'}"
    assert data_label("tar", None) == f"tar:{Path('data').resolve()}"
    assert data_label("fashion_mnist", tmp_path) == "fashion_mnist"  # one data set wherever


def test_runs_of_one_model_with_other_model_kwargs_are_another_setting(tmp_path):
    rows = [dict(r, model_kwargs="") for r in settings_rows()]
    rows.append(dict(rows[0], model_kwargs='{"output_stride": 8}', top1=30.0))
    path = write_csv(tmp_path / "report.csv", rows)
    line = one_line_error(runner.invoke(app, ["frontier", str(path)]), 3)
    assert "effnet_b0 differ in model_kwargs" in line and "--group model_kwargs" in line
    fr, _ = frontier.run([path], draws=100, group="model_kwargs")
    b0 = [p for p in fr.points if p.model == "effnet_b0"]
    assert sorted(p.n for p in b0) == [1, 2]  # the dilated run is a point of its own


def test_a_run_written_twice_is_one_run_the_last_kept(tmp_path):
    rows = settings_rows()
    rows.append(dict(rows[0], top1=81.0))  # seed 0 of effnet_b0 again
    path = write_csv(tmp_path / "report.csv", rows)
    fr, _ = frontier.run([path], draws=100)
    b0 = next(p for p in fr.points if p.model == "effnet_b0")
    assert sorted(b0.runs) == [81.0, 81.0] and b0.n == 2
    (warning,) = fr.warnings
    assert warning.startswith("1 row(s) repeat another") and "effnet_b0" in warning


def test_synthetic_data_gives_no_verdict_and_says_why(tmp_path):
    rows = [dict(r, dataset="synthetic", top1=10.0 + r["seed"]) for r in settings_rows()]
    rows += [dict(r, model="effnet_b0_phi1", gmacs=0.7) for r in rows[:2]]
    fr, _ = frontier.run([write_csv(tmp_path / "report.csv", rows)], draws=100)
    assert fr.verdicts == []
    assert any("synthetic" in n and "chance" in n for n in fr.notes)


@pytest.mark.parametrize("slope", [0.0, -0.5])  # flat, or falling accuracy (error rising)
def test_power_law_at_its_bound_is_no_power_law(slope):
    costs = np.geomspace(0.4, 10, 9)
    flat = pd.DataFrame(
        [
            dict(model=f"w{k}", method="width", gmacs=c, top1=56.0 + slope * math.log(c), seed=s)
            for k, c in enumerate(costs)
            for s in (0, 1)
        ]
    )
    (g,) = frontier.analyse(flat, draws=100).groups
    assert g.power_law is None
    assert g.power_law_note == "no power law: error does not fall with cost here"


def test_bad_reference_and_bad_x_are_bad_options_and_a_folder_is_a_folder(tmp_path):
    path = write_csv(tmp_path / "r.csv", TIMM_STYLE)
    line = one_line_error(runner.invoke(app, ["frontier", str(path), "--reference", "compund"]), 2)
    assert "'compund' is not a group" in line and "tf_efficientnet.ns_jft_in1k" in line
    line = one_line_error(runner.invoke(app, ["frontier", str(path), "--x", "nonsense"]), 2)
    assert "--x 'nonsense'" in line and "infer_img_size" not in line and "gmacs" in line
    # One column for both axes drew accuracy against itself.
    line = one_line_error(runner.invoke(app, ["frontier", str(path), "--x", "top1"]), 2)
    assert line.startswith("error: --x and --y are both 'top1': --x is the cost")
    line = one_line_error(runner.invoke(app, ["frontier", str(tmp_path)]), 3)
    assert "is a folder" in line


@pytest.mark.slow
def test_the_whole_of_timms_results_is_readable(tmp_path):
    files = [str(IMAGENET / "results-imagenet.csv"), *map(str, IMAGENET.glob("benchmark-*.csv"))]
    result = runner.invoke(app, ["frontier", *files, "--out", str(tmp_path), "--bootstrap", "100"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) < 300
    hint = " ".join(lines[-6:])
    assert "points in 508 groups" in hint and "--models" in hint and "--all" in hint
    data = json.loads((tmp_path / "frontier.json").read_text())
    assert len(data["points"]) == len(pd.read_csv(files[0]))  # every row matched; none merged
    assert (tmp_path / "frontier.png").stat().st_size > 10000


@pytest.mark.slow
def test_measure_missing_profiles_the_rows_the_cost_tables_lack(tmp_path):
    acc = write_csv(tmp_path / "report.csv", [dict(model="effnet_b0", img_size=224, top1=77.0)])
    rows, warnings = frontier.read_results([acc, BENCHMARK], "gmacs", "top1", measure_missing=True)
    from timm_scaling.cost import measure_cost

    assert warnings == []
    assert rows["gmacs"].item() == pytest.approx(measure_cost("effnet_b0", 224)["gmacs"])
    assert 0.38 < rows["gmacs"].item() < 0.41


def test_a_label_never_sits_beside_another_point():
    """Resolution variants share B0's parameters: their points stack in the parameters panel,
    and a label right-below one (the default place) lies beside the one under it."""
    from timm_scaling.frontier.plot import place_labels

    anchors = np.array([[100.0, 100.0], [100.0, 92.0]])  # r=1.3 above r=2.02, 8 pt apart
    free = place_labels(anchors, ["r=1.3", "r=2.02"])
    assert free[0] == (5, -10)  # without the markers: at the height of the other point
    offsets = place_labels(anchors, ["r=1.3", "r=2.02"], markers=anchors)
    for (x, y), offset, other in zip(anchors, offsets, anchors[::-1], strict=True):
        assert offset is not None
        edge = np.array([x + offset[0], y + offset[1] + 0.55 * 7])
        assert np.hypot(*(edge - (x, y))) <= np.hypot(*(edge - other))


def test_labels_placed_never_overlap():
    from timm_scaling.frontier.plot import LABEL_SIZE, place_labels

    anchors = np.array([[100.0 + 3 * k, 100.0 + 2 * (k % 3)] for k in range(12)])  # crowded
    texts = [f"label{k}" for k in range(12)]
    offsets = place_labels(anchors, texts)
    boxes = []
    for (x, y), text, offset in zip(anchors, texts, offsets, strict=True):
        if offset is None:
            continue
        width = 0.55 * LABEL_SIZE * len(text)
        left = x + offset[0] if offset[0] >= 0 else x + offset[0] - width
        boxes.append((left, y + offset[1], left + width, y + offset[1] + 1.1 * LABEL_SIZE))
    assert len(boxes) >= 6  # most are placed ...
    for i, a in enumerate(boxes):  # ... and none overprints another
        for b in boxes[:i]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])


def test_a_large_table_keeps_its_front_and_fits_not_every_point(tmp_path, monkeypatch):
    # issue 32.6: a million rows died of memory (draws x points of constant replicates) and
    # wrote a 368 MB frontier.json and a 451 MB SVG of every point
    import importlib

    analysing = importlib.import_module("timm_scaling.frontier.analyse")
    plotting = importlib.import_module("timm_scaling.frontier.plot")
    results = importlib.import_module("timm_scaling.frontier.results")

    rng = np.random.default_rng(0)
    costs = 10 ** rng.uniform(-1, 1, 60)
    rows = [
        dict(model=f"effnet_b0_w{i}", gmacs=c, top1=70 + 5 * np.log10(c) + rng.normal(0, 1))
        for i, c in enumerate(costs)
    ]
    path = write_csv(tmp_path / "many.csv", rows)
    for module in (results, plotting):
        monkeypatch.setattr(module, "MAX_LISTED", 20)
    fr, written = frontier.run([path], draws=200, out=tmp_path / "out", group="family")
    data = json.loads((tmp_path / "out" / "frontier.json").read_text())
    on_front = [p.name for p in fr.points if p.on_front]
    assert sorted(p["name"] for p in data["points"]) == sorted(on_front)
    assert data["points_omitted"] == 60 - len(on_front)
    assert data["groups"][0]["points"] == 60 and data["groups"][0]["fit"] is not None
    assert (tmp_path / "out" / "frontier.svg").is_file()
    # the bootstrap: nothing to resample in one-run points; a cap where there is
    assert analysing._replicates(fr.points, 2000, 0)[0] is None
    two = [dict(r, seed=s, top1=r["top1"] + s) for r in rows for s in (0, 1)]
    monkeypatch.setattr(analysing, "MAX_REPLICATES", 60 * 150)
    fr, _ = frontier.run([write_csv(tmp_path / "two.csv", two)], draws=2000, group="family")
    assert fr.bootstrap_draws == 150
    assert any(note.startswith("150 bootstrap draws, not 2000") for note in fr.notes)


def test_points_are_the_plain_groupby_mean_std_and_runs_of_their_rows():
    """aggregate sums by group code: each point equals pandas' own groupby of its rows, in the
    rows' order, and the JSON names each listed point's label."""
    rng = np.random.default_rng(4)
    names = ["effnet_b0", "effnet_b0_d2", "effnet_b0_w1p5", "resnet18", "resnet34", "other"]
    rows = pd.DataFrame(
        {
            "model": rng.choice(names, 300),
            "img_size": rng.choice([32, 64], 300),
            "seed": np.arange(300),
            "gmacs": rng.uniform(0.1, 2, 300),
            "param_count": rng.uniform(1, 9, 300),
            "top1": rng.uniform(50, 90, 300),
            "width_mult": rng.choice([1.0, 2.0, np.nan], 300),
        }
    )
    points = frontier.aggregate(rows, "gmacs", "top1", rows["model"].map(frontier.method_of))
    by = rows.groupby(["model", "img_size"])
    assert len(points) == by.ngroups == 12
    for p in points:
        own = by.get_group((p.model, p.img_size))
        assert p.runs == own["top1"].tolist() and p.n == len(own)
        assert p.y == pytest.approx(own["top1"].mean(), rel=1e-12)
        assert p.std == pytest.approx(own["top1"].std(), rel=1e-9)
        assert p.costs == pytest.approx(own[["gmacs", "param_count"]].mean().to_dict(), rel=1e-12)
        assert p.name == f"{p.model}@{p.img_size}"  # every model here is at both sizes
        first = own["width_mult"].iloc[0]
        if not is_model_name(p.model):  # resnet18, other: labelled by the first run
            width = "" if np.isnan(first) or first == 1 else f"w={first:g}"
            assert p.label == f"{width or p.model}@{p.img_size}"
    listed = json.loads(json.dumps(points[0].to_dict()))
    assert listed["label"] == points[0].label and "multipliers" not in listed
