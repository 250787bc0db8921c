"""Statistics and verdicts over seeds for the BN study: every printed statement carries its uncertainty.

Rule: **no verdict without a CI that excludes zero.** A claim of the paper ("BN lowers the loss's lambda_max")
is ``supported`` only when the 95 % Student-t CI of BN - standard (paired by seed) lies entirely on the side
the claim predicts, ``contradicted`` when it lies entirely on the other side, ``inconclusive`` otherwise and
always below ``MIN_PAIRS``. Results go to a versioned, validated ``findings.json`` and a Markdown table.

Student-t quantiles come from ``cifarlab.stats`` (no scipy).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from cifarlab.io import atomic_write_text
from cifarlab.stats import betainc, t_cdf, t_quantile

SCHEMA = "cifarlab.bn_study.findings/1"
SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE)
DIRECTIONS = ("lower", "higher")  # the sign of BN - standard that the paper's claim predicts
# Minimum seeds per arm (pairs when paired) for any verdict. With n = 2 the SD of the differences rests on one
# degree of freedom (t_0.975,1 = 12.7): its coverage depends wholly on normality that two points cannot show,
# and one odd seed is indistinguishable from the effect. n = 3 is the least with >= 2 df, where an outlying
# seed is at least visible against the other two. The study runs >= 5; 3 is the floor, not the target.
MIN_PAIRS = 3
CONFIDENCE = 0.95

Direction = Literal["lower", "higher"]
Values = Mapping[Any, float] | Sequence[float]


# ---------------------------------------------------------------- one arm
@dataclass
class ArmStats:
    """One arm over seeds; std and CI are None for n < 2 (no spread from one run)."""

    n: int
    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None
    values: list[float] = field(default_factory=list)


def _finite(values: Sequence[float], what: str) -> list[float]:
    out = [float(v) for v in values]
    if not out:
        raise ValueError(f"{what}: no values")
    if not all(math.isfinite(v) for v in out):
        # A diverged seed must be reported as such, not averaged into a NaN or silently dropped.
        raise ValueError(f"{what}: non-finite values {out}")
    return out


def _mean_std(v: list[float]) -> tuple[float, float | None]:
    m = math.fsum(v) / len(v)
    return m, (math.sqrt(math.fsum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else None)


def summarize_arm(values: Sequence[float]) -> ArmStats:
    """n, mean, sample SD and 95 % Student-t CI of the mean over seeds."""
    v = _finite(values, "summarize_arm")
    mean, std = _mean_std(v)
    if std is None:
        return ArmStats(len(v), mean, None, None, None, v)
    half = t_quantile(0.5 + CONFIDENCE / 2, len(v) - 1) * std / math.sqrt(len(v))
    return ArmStats(len(v), mean, std, mean - half, mean + half, v)


# ---------------------------------------------------------------- BN vs standard
@dataclass
class Comparison:
    """BN - standard: paired by seed when both arms have the same seeds, else Welch (``pairing`` says which)."""

    pairing: Literal["paired", "welch"]
    n_pairs: int  # pairs when paired; min(n_bn, n_std) when Welch (what MIN_PAIRS is checked against)
    n_bn: int
    n_std: int
    mean_diff: float
    ci_low: float | None
    ci_high: float | None
    df: float | None
    relative_effect: float | None  # mean_diff / |mean standard|
    effect_size: float | None  # Cohen's d_z (paired) or d with pooled SD (Welch); None when the SD is 0
    effect_size_kind: str


def _as_mapping(values: Values) -> dict[Any, float]:
    # A plain sequence is taken as listed in seed order (value i belongs to the i-th seed of the study).
    return {str(k): float(v) for k, v in (values.items() if isinstance(values, Mapping) else enumerate(values))}


def _relative(diff: float, std_mean: float) -> float | None:
    return diff / abs(std_mean) if std_mean != 0 else None


def _paired(bn: dict[Any, float], std: dict[Any, float]) -> Comparison:
    d = [bn[k] - std[k] for k in bn]
    mean, sd = _mean_std(d)
    std_mean = math.fsum(std.values()) / len(std)
    low = high = None
    if sd is not None:
        half = t_quantile(0.5 + CONFIDENCE / 2, len(d) - 1) * sd / math.sqrt(len(d))
        low, high = mean - half, mean + half
    dz = mean / sd if sd else None
    return Comparison("paired", len(d), len(bn), len(std), mean, low, high, len(d) - 1 if sd is not None else None,
                      _relative(mean, std_mean), dz, "cohen_d_z")


def _welch(bn: list[float], std: list[float]) -> Comparison:
    (mb, sb), (ms, ss) = _mean_std(bn), _mean_std(std)
    diff, low, high, df, d = mb - ms, None, None, None, None
    if sb is not None and ss is not None:
        vb, vs = sb**2 / len(bn), ss**2 / len(std)
        se = math.sqrt(vb + vs)
        if se > 0:
            df = (vb + vs) ** 2 / (vb**2 / (len(bn) - 1) + vs**2 / (len(std) - 1))
            half = t_quantile(0.5 + CONFIDENCE / 2, df) * se
        else:
            df, half = float(len(bn) + len(std) - 2), 0.0
        low, high = diff - half, diff + half
        pooled = math.sqrt(((len(bn) - 1) * sb**2 + (len(std) - 1) * ss**2) / (len(bn) + len(std) - 2))
        d = diff / pooled if pooled else None
    return Comparison("welch", min(len(bn), len(std)), len(bn), len(std), diff, low, high, df, _relative(diff, ms),
                      d, "cohen_d_pooled")


def paired_comparison(bn_values: Values, std_values: Values) -> Comparison:
    """BN - standard over seeds: paired t when both arms have exactly the same seeds, else Welch's t.

    Mappings are seed -> value; a plain sequence is read as ordered by the study's seed list (so two sequences of
    equal length pair position by position). Seed keys are compared as strings (JSON round trips).
    """
    bn, std = _as_mapping(bn_values), _as_mapping(std_values)
    _finite(list(bn.values()), "BN arm")
    _finite(list(std.values()), "standard arm")
    if bn.keys() == std.keys():
        return _paired(bn, std)
    return _welch(list(bn.values()), list(std.values()))


def verdict(comparison: Comparison, expected_direction: Direction) -> str:
    """supported / contradicted / inconclusive: no verdict without a 95 % CI that excludes zero (and n >= 3)."""
    if expected_direction not in DIRECTIONS:
        raise ValueError(f"expected_direction must be one of {DIRECTIONS}, got {expected_direction!r}")
    return _decide(comparison.n_pairs, comparison.ci_low, comparison.ci_high, expected_direction)


def _decide(n_pairs: int, low: float | None, high: float | None, expected: str) -> str:
    # Shared by verdict() and validate_findings(), so a file cannot carry a verdict its own CI does not allow.
    if n_pairs < MIN_PAIRS or low is None or high is None:
        return INCONCLUSIVE
    if high < 0:
        side = "lower"
    elif low > 0:
        side = "higher"
    else:
        return INCONCLUSIVE
    return SUPPORTED if side == expected else CONTRADICTED


# ---------------------------------------------------------------- findings
@dataclass
class Metric:
    name: str
    unit: str  # "" for dimensionless
    better: Literal["lower", "higher"]  # "lower is better" / "higher is better" (for the reader, not the verdict)


@dataclass
class Finding:
    """One claim of the paper tested over seeds; ``expected_direction`` is the sign of BN - standard it predicts."""

    claim: str
    metric: Metric
    expected_direction: Direction
    standard: ArmStats
    bn: ArmStats
    comparison: Comparison
    verdict: str
    caveats: list[str] = field(default_factory=list)

    @property
    def effect_size(self) -> float | None:
        return self.comparison.effect_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"effect_size": self.effect_size}


def make_finding(claim: str, metric: Metric, bn_values: Values, std_values: Values, expected_direction: Direction,
                 caveats: Sequence[str] = ()) -> Finding:
    """Stats of both arms, the comparison, the verdict, and the caveats the numbers themselves imply."""
    bn, std = _as_mapping(bn_values), _as_mapping(std_values)
    comp = paired_comparison(bn, std)
    notes = list(caveats)
    if comp.pairing == "welch":
        notes.append(f"seeds differ between arms (BN {sorted(bn)}, standard {sorted(std)}): unpaired Welch t")
    if comp.n_pairs < MIN_PAIRS:
        notes.append(f"n = {comp.n_pairs} < {MIN_PAIRS} seeds per arm: no verdict")
    return Finding(claim, metric, expected_direction, summarize_arm(list(std.values())),
                   summarize_arm(list(bn.values())), comp, verdict(comp, expected_direction), notes)


# ---------------------------------------------------------------- findings.json
def write_findings(path: str | Path, findings: Sequence[Finding | dict[str, Any]]) -> Path:
    """Write ``{"schema": SCHEMA, "findings": [...]}`` (validated before it is written, atomically)."""
    obj = {"schema": SCHEMA, "confidence": CONFIDENCE, "min_pairs": MIN_PAIRS,
           "findings": [f.to_dict() if isinstance(f, Finding) else f for f in findings]}
    validate_findings(obj)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")
    return path


def read_findings(path: str | Path) -> dict[str, Any]:
    obj = json.loads(Path(path).read_text())
    validate_findings(obj)
    return obj


def _num(x: Any, where: str, optional: bool = False) -> float | None:
    if x is None and optional:
        return None
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        raise ValueError(f"{where}: expected a finite number{' or null' if optional else ''}, got {x!r}")
    return float(x)


def _dict(obj: Any, keys: Sequence[str], where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected an object, got {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise ValueError(f"{where}: missing keys {missing}")
    return obj


def _check_ci(low: Any, high: Any, where: str) -> tuple[float | None, float | None]:
    lo, hi = _num(low, f"{where}.ci_low", True), _num(high, f"{where}.ci_high", True)
    if (lo is None) != (hi is None) or (lo is not None and lo > hi):
        raise ValueError(f"{where}: malformed CI [{low}, {high}]")
    return lo, hi


def _check_arm(arm: Any, where: str) -> None:
    a = _dict(arm, ["n", "mean", "std", "ci_low", "ci_high", "values"], where)
    if isinstance(a["n"], bool) or not isinstance(a["n"], int) or a["n"] < 1:
        raise ValueError(f"{where}.n: expected a positive integer, got {a['n']!r}")
    if not isinstance(a["values"], list) or len(a["values"]) != a["n"]:
        raise ValueError(f"{where}.values: expected a list of n = {a['n']} numbers")
    for i, v in enumerate(a["values"]):
        _num(v, f"{where}.values[{i}]")
    mean, _ = _num(a["mean"], f"{where}.mean"), _num(a["std"], f"{where}.std", True)
    lo, hi = _check_ci(a["ci_low"], a["ci_high"], where)
    if lo is not None and not lo <= mean <= hi:
        raise ValueError(f"{where}: mean {mean} outside its CI [{lo}, {hi}]")


def _check_finding(f: Any, where: str) -> None:
    f = _dict(f, ["claim", "metric", "expected_direction", "standard", "bn", "comparison", "verdict", "caveats",
                  "effect_size"], where)
    if not isinstance(f["claim"], str) or not f["claim"].strip():
        raise ValueError(f"{where}.claim: expected a non-empty string")
    m = _dict(f["metric"], ["name", "unit", "better"], f"{where}.metric")
    if not isinstance(m["name"], str) or not isinstance(m["unit"], str) or m["better"] not in DIRECTIONS:
        raise ValueError(f"{where}.metric: name/unit must be strings and better one of {DIRECTIONS}")
    if f["expected_direction"] not in DIRECTIONS:
        raise ValueError(f"{where}.expected_direction: one of {DIRECTIONS}, got {f['expected_direction']!r}")
    _check_arm(f["standard"], f"{where}.standard")
    _check_arm(f["bn"], f"{where}.bn")
    c = _dict(f["comparison"], ["pairing", "n_pairs", "mean_diff", "ci_low", "ci_high", "relative_effect",
                                "effect_size"], f"{where}.comparison")
    if c["pairing"] not in ("paired", "welch") or isinstance(c["n_pairs"], bool) or not isinstance(c["n_pairs"], int):
        raise ValueError(f"{where}.comparison: bad pairing {c['pairing']!r} or n_pairs {c['n_pairs']!r}")
    _num(c["mean_diff"], f"{where}.comparison.mean_diff")
    _num(c["relative_effect"], f"{where}.comparison.relative_effect", True)
    _num(c["effect_size"], f"{where}.comparison.effect_size", True)
    lo, hi = _check_ci(c["ci_low"], c["ci_high"], f"{where}.comparison")
    if f["verdict"] != _decide(c["n_pairs"], lo, hi, f["expected_direction"]):
        raise ValueError(f"{where}.verdict: {f['verdict']!r} is not what its CI [{lo}, {hi}] with n = "
                         f"{c['n_pairs']} allows (no verdict without a CI that excludes zero)")
    if not isinstance(f["caveats"], list) or not all(isinstance(x, str) for x in f["caveats"]):
        raise ValueError(f"{where}.caveats: expected a list of strings")


def validate_findings(obj: Any) -> None:
    """Raise ValueError unless ``obj`` is a well-formed findings document of this SCHEMA."""
    top = _dict(obj, ["schema", "findings"], "findings.json")
    if top["schema"] != SCHEMA:
        raise ValueError(f"findings.json: schema {top['schema']!r}, expected {SCHEMA!r}")
    if not isinstance(top["findings"], list):
        raise ValueError("findings.json: 'findings' must be a list")
    for i, f in enumerate(top["findings"]):
        _check_finding(f, f"findings[{i}]")


# ---------------------------------------------------------------- Markdown
def _decimals(half_width: float) -> int:
    # Two significant figures of the CI half-width fix the decimals of mean and bounds alike.
    return max(0, 1 - math.floor(math.log10(half_width)))


def fmt_ci(mean: float, low: float | None, high: float | None) -> str:
    """``mean [low, high]`` with decimals set by the CI's precision; 3 significant figures without a CI."""
    if low is None or high is None or high <= low:
        return f"{mean:.3g}" + ("" if low is None else f" [{low:.3g}, {high:.3g}]")
    dec = _decimals((high - low) / 2)
    if dec > 6 or max(abs(mean), abs(low), abs(high)) >= 1e6:
        return f"{mean:.3g} [{low:.3g}, {high:.3g}]"
    return f"{mean:.{dec}f} [{low:.{dec}f}, {high:.{dec}f}]"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(f: dict[str, Any]) -> str:
    m, c, s, b = f["metric"], f["comparison"], f["standard"], f["bn"]
    metric = f"{m['name']}" + (f" ({m['unit']})" if m["unit"] else "") + f", {m['better']} is better"
    diff = fmt_ci(c["mean_diff"], c["ci_low"], c["ci_high"])
    if c["relative_effect"] is not None:
        diff += f" ({100 * c['relative_effect']:+.0f} %)"
    n = f"{c['n_pairs']}" if c["pairing"] == "paired" else f"{b['n']} BN / {s['n']} std (Welch)"
    cells = [f["claim"], metric, fmt_ci(s["mean"], s["ci_low"], s["ci_high"]),
             fmt_ci(b["mean"], b["ci_low"], b["ci_high"]), diff, n, f"**{f['verdict']}**"]
    return "| " + " | ".join(_cell(x) for x in cells) + " |"


def findings_markdown(findings: Sequence[Finding] | Mapping[str, Any]) -> str:
    """Table (claim | metric | standard | BN | BN - standard | n | verdict), 95 % CIs, then the caveats."""
    items = findings["findings"] if isinstance(findings, Mapping) else [f.to_dict() for f in findings]
    lines = [f"| claim | metric | standard mean [{CONFIDENCE:.0%} CI] | BN mean [{CONFIDENCE:.0%} CI] | "
             f"BN \u2212 standard [{CONFIDENCE:.0%} CI] | n | verdict |", "|---|---|---|---|---|---|---|"]
    lines += [_row(f) for f in items]
    caveats = [(f["claim"], c) for f in items for c in f["caveats"]]
    lines += ["", f"Verdicts need a {CONFIDENCE:.0%} CI of BN \u2212 standard that excludes zero and n \u2265 "
              f"{MIN_PAIRS} seeds; otherwise *inconclusive*."]
    if caveats:
        lines += ["", "Caveats:", *(f"- {claim}: {c}" for claim, c in caveats)]
    return "\n".join(lines) + "\n"


__all__ = [
    "CONFIDENCE", "CONTRADICTED", "INCONCLUSIVE", "MIN_PAIRS", "SCHEMA", "SUPPORTED", "ArmStats", "Comparison",
    "Finding", "Metric", "betainc", "findings_markdown", "fmt_ci", "make_finding", "paired_comparison",
    "read_findings", "summarize_arm", "t_cdf", "t_quantile", "validate_findings", "verdict", "write_findings",
]
