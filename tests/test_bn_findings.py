"""Seed statistics and verdicts of the BN study: t quantiles, CIs by hand, the no-CI-no-verdict rule, schema."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest

from cifarlab.analysis.bn_study.findings import (
    CONTRADICTED,
    INCONCLUSIVE,
    MIN_PAIRS,
    SCHEMA,
    SUPPORTED,
    Metric,
    findings_markdown,
    fmt_ci,
    make_finding,
    paired_comparison,
    read_findings,
    summarize_arm,
    t_cdf,
    t_quantile,
    validate_findings,
    verdict,
    write_findings,
)

BETA = Metric("lambda_max", "", "lower")
SEEDS = [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("p", "df", "expected"), [
    (0.975, 1, 12.706205), (0.975, 2, 4.302653), (0.975, 4, 2.776445), (0.975, 9, 2.262157),
    (0.975, 30, 2.042272), (0.95, 10, 1.812461), (0.995, 5, 4.032143), (0.975, 1e7, 1.959964),
    (0.025, 4, -2.776445), (0.5, 3, 0.0),
])
def test_t_quantile_known_values(p: float, df: float, expected: float) -> None:
    assert t_quantile(p, df) == pytest.approx(expected, abs=1e-6)


def test_t_quantile_against_scipy_including_fractional_df() -> None:
    stats = pytest.importorskip("scipy.stats")  # only a cross-check: scipy is not a dependency
    for df in [1.0, 1.7, 2.5, 4.0, 7.3, 19.0, 60.0]:
        for p in [0.6, 0.9, 0.975, 0.999]:
            assert t_quantile(p, df) == pytest.approx(float(stats.t.ppf(p, df)), rel=1e-9)
            assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-12)


def test_summarize_arm_matches_hand_computation() -> None:
    v = [1.0, 2.0, 4.0, 3.5, 2.5]
    s = summarize_arm(v)
    mean, sd = 2.6, math.sqrt(sum((x - 2.6) ** 2 for x in v) / 4)
    half = 2.776445 * sd / math.sqrt(5)
    assert (s.n, s.mean, s.std) == (5, pytest.approx(mean), pytest.approx(sd))
    assert (s.ci_low, s.ci_high) == (pytest.approx(mean - half, rel=1e-6), pytest.approx(mean + half, rel=1e-6))
    one = summarize_arm([3.0])
    assert (one.n, one.mean, one.std, one.ci_low, one.ci_high) == (1, 3.0, None, None, None)
    with pytest.raises(ValueError):
        summarize_arm([1.0, float("nan")])
    with pytest.raises(ValueError):
        summarize_arm([])


def _arms(shift: float, noise: float, seed: int = 0, n: int = 5,
          spread: float = 1.0) -> tuple[dict[int, float], dict[int, float]]:
    rng = np.random.default_rng(seed)
    std = {s: float(v) for s, v in zip(range(n), 3.0 + rng.normal(0, spread, n))}  # seeds vary a lot...
    bn = {s: std[s] + shift + float(rng.normal(0, noise)) for s in std}  # ...the paired difference little
    return bn, std


def test_paired_ci_matches_hand_computation() -> None:
    bn, std = _arms(-1.0, 0.1)
    c = paired_comparison(bn, std)
    d = [bn[s] - std[s] for s in SEEDS]
    mean, sd = float(np.mean(d)), float(np.std(d, ddof=1))
    assert c.pairing == "paired" and c.n_pairs == 5 and c.df == 4
    assert c.mean_diff == pytest.approx(mean)
    assert c.ci_low == pytest.approx(mean - 2.776445 * sd / math.sqrt(5), rel=1e-6)
    assert c.ci_high == pytest.approx(mean + 2.776445 * sd / math.sqrt(5), rel=1e-6)
    assert c.effect_size == pytest.approx(mean / sd) and c.effect_size_kind == "cohen_d_z"
    assert c.relative_effect == pytest.approx(mean / abs(np.mean(list(std.values()))))


def test_large_effect_in_predicted_direction_is_supported() -> None:
    bn, std = _arms(-1.0, 0.1, spread=3.0)
    assert verdict(paired_comparison(bn, std), "lower") == SUPPORTED
    # Pairing matters: the same numbers unpaired drown the effect in the seed-to-seed spread.
    unpaired = paired_comparison(list(bn.values()), {s + 10: v for s, v in std.items()})
    assert unpaired.pairing == "welch" and verdict(unpaired, "lower") == INCONCLUSIVE


def test_reversed_effect_is_contradicted() -> None:
    bn, std = _arms(+1.0, 0.1)
    f = make_finding("BN lowers lambda_max", BETA, bn, std, "lower")
    assert f.verdict == CONTRADICTED and f.comparison.ci_low > 0


def test_no_effect_is_inconclusive() -> None:
    for seed in range(5):
        bn, std = _arms(0.0, 0.3, seed=seed)
        c = paired_comparison(bn, std)
        if c.ci_low < 0 < c.ci_high:  # 95 % CI: a rare seed may exclude 0 by chance; these five do not
            assert verdict(c, "lower") == INCONCLUSIVE and verdict(c, "higher") == INCONCLUSIVE
    bn, std = _arms(0.0, 0.3, seed=0)
    assert verdict(paired_comparison(bn, std), "lower") == INCONCLUSIVE


def test_two_pairs_are_inconclusive_even_with_a_huge_difference() -> None:
    assert MIN_PAIRS == 3
    bn, std = {0: 1.0, 1: 1.1}, {0: 11.0, 1: 11.05}
    c = paired_comparison(bn, std)
    assert c.ci_high < 0  # the CI alone would exclude zero...
    assert verdict(c, "lower") == INCONCLUSIVE  # ...but n = 2 is below the minimum
    f = make_finding("claim", BETA, bn, std, "lower")
    assert f.verdict == INCONCLUSIVE and any("no verdict" in c for c in f.caveats)


def test_welch_with_mismatched_seeds() -> None:
    bn = {0: 1.0, 1: 1.2, 2: 0.9, 3: 1.1}
    std = {0: 3.0, 1: 3.3, 2: 2.8, 5: 3.1, 6: 2.9}
    c = paired_comparison(bn, std)
    assert c.pairing == "welch" and (c.n_bn, c.n_std, c.n_pairs) == (4, 5, 4)
    a, b = np.asarray(list(bn.values())), np.asarray(list(std.values()))
    va, vb = a.var(ddof=1) / 4, b.var(ddof=1) / 5
    df = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 4)
    assert c.df == pytest.approx(df)
    assert c.ci_high == pytest.approx(a.mean() - b.mean() + t_quantile(0.975, df) * math.sqrt(va + vb))
    f = make_finding("BN lowers it", BETA, bn, std, "lower")
    assert f.verdict == SUPPORTED and any("Welch" in x for x in f.caveats)


def _findings() -> list:
    bn, std = _arms(-1.0, 0.1)
    return [make_finding("BN makes the loss smoother (lower lambda_max)", BETA, bn, std, "lower",
                         caveats=["one batch per probe"]),
            make_finding("BN | speeds up", Metric("train loss at 2k steps", "nats", "lower"), *_arms(0.0, 0.3),
                         "lower"),
            make_finding("two seeds", Metric("test accuracy", "%", "higher"), [93.1, 93.4], [90.2, 90.0], "higher")]


def test_write_validate_roundtrip(tmp_path: Path) -> None:
    fs = _findings()
    path = write_findings(tmp_path / "out" / "findings.json", fs)
    obj = read_findings(path)
    assert obj["schema"] == SCHEMA and len(obj["findings"]) == 3
    assert obj["findings"] == json.loads(json.dumps([f.to_dict() for f in fs]))
    assert [f["verdict"] for f in obj["findings"]] == [SUPPORTED, INCONCLUSIVE, INCONCLUSIVE]
    assert findings_markdown(obj) == findings_markdown(fs)


@pytest.mark.parametrize("breakage", [
    lambda o: o.update(schema="cifarlab.bn_study.findings/0"),
    lambda o: o.pop("findings"),
    lambda o: o["findings"][0].pop("verdict"),
    lambda o: o["findings"][0].update(verdict="proven"),
    lambda o: o["findings"][1].update(verdict=SUPPORTED),  # a verdict its CI does not allow
    lambda o: o["findings"][2].update(verdict=SUPPORTED),  # n = 2
    lambda o: o["findings"][0]["bn"].update(ci_low=None),
    lambda o: o["findings"][0]["bn"].update(n=4),
    lambda o: o["findings"][0]["comparison"].update(ci_low=5.0),
    lambda o: o["findings"][0]["metric"].update(better="smaller"),
    lambda o: o["findings"][0]["standard"]["values"].__setitem__(0, "x"),
    lambda o: o["findings"][0].update(caveats="none"),
])
def test_malformed_findings_raise(tmp_path: Path, breakage) -> None:
    obj = json.loads(write_findings(tmp_path / "findings.json", _findings()).read_text())
    broken = copy.deepcopy(obj)
    breakage(broken)
    with pytest.raises(ValueError):
        validate_findings(broken)
    validate_findings(obj)
    (tmp_path / "bad.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError):
        read_findings(tmp_path / "bad.json")


def test_markdown_table_and_caveats() -> None:
    md = findings_markdown(_findings())
    lines = md.splitlines()
    assert lines[0].startswith("| claim | metric | standard mean [95% CI] | BN mean [95% CI]")
    assert len([x for x in lines if x.startswith("| ")]) == 4
    assert "BN \\| speeds up" in md  # a pipe in a claim does not split the row
    assert "**supported**" in md and "**inconclusive**" in md and "lower is better" in md
    assert "- BN makes the loss smoother (lower lambda_max): one batch per probe" in md
    assert "two seeds: n = 2 < 3 seeds per arm: no verdict" in md


def test_fmt_ci_significant_figures() -> None:
    assert fmt_ci(94.0812, 93.9, 94.26) == "94.08 [93.90, 94.26]"
    assert fmt_ci(0.012345, 0.0101, 0.0146) == "0.0123 [0.0101, 0.0146]"
    assert fmt_ci(1234.5, 1000.2, 1468.8) == "1234 [1000, 1469]"
    assert fmt_ci(2.71828, None, None) == "2.72"


def test_mean_ci_matches_a_hand_computation() -> None:
    from cifarlab.stats import mean_ci

    # values 0.93, 0.94, 0.95: mean 0.94, sample std 0.01, t_0.975,2 = 4.302653 -> half width 0.0248414
    mean, std, low, high, n = mean_ci([0.93, 0.94, 0.95, None, float("nan")])
    assert n == 3 and mean == pytest.approx(0.94) and std == pytest.approx(0.01)
    assert (low, high) == (pytest.approx(0.94 - 0.0248414, abs=1e-6), pytest.approx(0.94 + 0.0248414, abs=1e-6))
    one = mean_ci([0.5])
    assert one[0] == 0.5 and one[4] == 1 and all(math.isnan(v) for v in one[1:4])
    assert mean_ci([])[4] == 0
