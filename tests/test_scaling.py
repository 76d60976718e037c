"""The torch-free scaling module: names in both directions, compound coefficients, sizes."""

import math
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timm_scaling.scaling import (
    ALPHA,
    BETA,
    GAMMA,
    Coefficients,
    Scaling,
    compound,
    format_number,
    parse_name,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("effnet_b0", Scaling()),
        ("effnet_b0_d4", Scaling(depth=4)),
        ("effnet_b0_w1p4", Scaling(width=1.4)),
        ("effnet_b0_r2", Scaling(resolution=2)),
        ("effnet_b0_d2_w1p4_r1p3", Scaling(2, 1.4, 1.3)),
        ("effnet_b0_phi2", compound(2)),
    ],
)
def test_names_parse_to_their_scaling(name, expected):
    assert parse_name(name) == expected
    assert expected.name == name


def test_phi2_is_the_papers_table7_compound_model():
    s = parse_name("effnet_b0_phi2")
    # Table 7 prints the compound model as d=1.4, w=1.2, r=1.3 (alpha^2, beta^2, gamma^2 rounded).
    assert (round(s.depth, 1), round(s.width, 1), round(s.resolution, 1)) == (1.4, 1.2, 1.3)
    assert s.coefficients == Coefficients(2, ALPHA, BETA, GAMMA)
    assert s.method == "compound"


def test_compound_coefficients_satisfy_the_papers_constraint():
    # alpha * beta^2 * gamma^2 ~ 2, so each phi step about doubles the nominal cost.
    assert ALPHA * BETA**2 * GAMMA**2 == pytest.approx(1.92, abs=0.01)
    for phi in range(1, 8):
        assert compound(phi).flop_factor == pytest.approx((ALPHA * BETA**2 * GAMMA**2) ** phi)


def test_custom_coefficients_get_their_own_name():
    s = compound(2, alpha=1.25, beta=1.1, gamma=1.1)
    assert s.name == "effnet_b0_phi2_a1p25b1p1g1p1"
    assert parse_name(s.name) == s
    assert s.depth == pytest.approx(1.25**2)


def test_flop_factor_is_d_w2_r2():
    assert Scaling(2, 3, 5).flop_factor == 2 * 9 * 25
    assert Scaling(resolution=2).flop_factor == 4


def test_method_of_each_axis():
    assert Scaling().method == "baseline"
    assert Scaling(depth=2).method == "depth"
    assert Scaling(width=2).method == "width"
    assert Scaling(resolution=2).method == "resolution"
    assert Scaling(2, 2).method == "mixed"
    assert compound(0) == Scaling()


def test_image_size_rounds_to_the_divisor():
    assert Scaling(resolution=2).image_size() == 448
    assert Scaling(resolution=2).image_size(32) == 64
    assert compound(2).image_size(divisor=8) == 296  # 224 * 1.3225 = 296.24
    assert Scaling(resolution=1.7).image_size(divisor=8) == 384  # 380.8 -> 384
    assert Scaling(resolution=1.3).image_size(32) == round(32 * 1.3)


@pytest.mark.parametrize(
    "bad",
    [
        "effnet_b1",
        "effnet_b0_",
        "effnet_b0_w2_d4",  # axes out of order
        "effnet_b0_w1.4",
        "effnet_b0_phi0",
        "effnet_b0_d1",
        "efficientnet_b0",
        "effnet_b0_w0",
    ],
)
def test_bad_names_raise_valueerror_stating_the_grammar(bad):
    with pytest.raises(ValueError) as info:
        parse_name(bad)
    assert bad in str(info.value)
    message = str(info.value)
    assert "effnet_b0" in message and "\n" not in message


def test_multiplier_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="out of range"):
        Scaling(width=0)
    with pytest.raises(ValueError, match="phi"):
        compound(-1)
    with pytest.raises(ValueError, match="do not follow"):
        Scaling(1.0, 1.0, 1.0, Coefficients(2))


# Multipliers with up to three decimals in 0.01..64: every one has an exact short name.
multipliers = st.integers(min_value=10, max_value=64_000).map(lambda k: k / 1000)


@given(multipliers, multipliers, multipliers)
def test_name_round_trips_for_any_scaling(d, w, r):
    s = Scaling(d, w, r)
    assert parse_name(s.name) == s
    assert parse_name(s.name).name == s.name


@given(
    st.integers(min_value=1, max_value=80).map(lambda k: k / 10),
    st.integers(min_value=100, max_value=150).map(lambda k: k / 100),  # 1.5^8 < 64
)
def test_compound_name_round_trips(phi, alpha):
    s = compound(phi, alpha=alpha)
    assert parse_name(s.name) == s


@given(st.floats(min_value=0.01, max_value=64, allow_nan=False))
def test_format_number_is_exact_to_six_decimals(x):
    text = format_number(x)
    assert float(text.replace("p", ".")) == round(x, 6)
    assert "e" not in text and not text.endswith("p")


def test_scaling_module_imports_no_torch():
    code = "import sys, timm_scaling.scaling; print('torch' in sys.modules, 'timm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_nominal_factor_of_compound_is_close_to_two_to_the_phi():
    for phi in range(1, 8):
        assert math.log2(compound(phi).flop_factor) == pytest.approx(phi, rel=0.1)
