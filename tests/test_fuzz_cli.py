"""Fuzz-style: garbage and type-wrong values for every config key of every command (bounded, seeded) must give
exit 2 and one error line, never a traceback; values that happen to be valid must be accepted (exit 0)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from cifarlab import cli
from cifarlab.analysis.bn_study.settings import StudySettings
from cifarlab.config import RunConfig, to_dict

GARBAGE = ["[1, 2", "{", "}", "1e999", "-1", "nan", "[]", "{a: 1}", "!!python/object/apply:os.system [ls]",
           "\x00", "off", "'", "9" * 40, "-0.0", "~", "[[[]]]", "ünï", "1:2", "&a", "*a"]


def dotted(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "options":
            out.update(dotted(v, f"{prefix}{k}."))
        elif k != "options":
            out[f"{prefix}{k}"] = v
    return out


def wrong_type(default: Any) -> str:
    """A value of another type than the key's (as YAML text)."""
    if isinstance(default, bool):
        return "maybe"
    if isinstance(default, (int, float)):
        return "abc"
    if isinstance(default, (list, tuple)):
        return "5x"
    return "[1, 2]"  # str or None keys: a list is never a valid string/null


def assert_clean(code: int, err: str, allow_ok: bool) -> None:
    assert "Traceback" not in err, err
    if code == 0 and allow_ok:
        return
    assert code == 2, (code, err)
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1, err


RUN_KEYS = dotted(to_dict(RunConfig()))


@pytest.mark.parametrize("key", sorted(RUN_KEYS))
def test_train_config_keys_refuse_garbage(key: str, capsys: pytest.CaptureFixture) -> None:
    rng = random.Random(key)
    values = [wrong_type(RUN_KEYS[key]), *rng.sample(GARBAGE, 2)]
    for i, value in enumerate(values):
        code = cli.main(["config", f"{key}={value}"])
        assert_clean(code, capsys.readouterr().err, allow_ok=i > 0)  # the type-wrong one must be refused


STUDY_KEYS = dotted(to_dict(StudySettings()))


@pytest.mark.parametrize("key", sorted(STUDY_KEYS))
def test_bn_study_settings_refuse_type_wrong_values(key: str, tmp_path: Path, capsys) -> None:
    # Only values that cannot be valid: a valid one would start the study.
    for value in (wrong_type(STUDY_KEYS[key]), "[1, 2", "{"):
        code = cli.main(["bn-study", "--out", str(tmp_path), f"{key}={value}"])
        assert_clean(code, capsys.readouterr().err, allow_ok=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [
    ["eval", "no/such/run"], ["eval", "/etc/passwd"], ["eval", "."], ["eval", "x", "--weights", "worst"],
    ["explain", "no/such/run"], ["explain", "x", "--images", "abc"], ["explain", "x", "--grid", "4"],
    ["explain", "x", "--method", "magic"], ["explain", "x", "--zmax", "-1"], ["explain"],
    ["sweep", "no_such_preset"], ["sweep", "/etc/passwd"], ["sweep", "activations", "--scale", "huge"],
    ["report", "no/such/dir"], ["report", "/etc"],
    ["bench", "--steps", "0"], ["bench", "--models", "nope", "--steps", "1"], ["bench", "--rounds", "x"],
    ["train", "--preset", "\x00"], ["train", "-c", "/etc/shadow-none"], ["models", "--summary", "@@"],
    ["bn-study", "--seeds", "a,b"], ["bn-study", "--parts", "everything"], ["bn-study", "--scale", "huge"],
])
def test_other_commands_refuse_garbage(argv: list[str], capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's own refusal (usage + one error line), exit 2
        code = exc.code
    assert_clean(int(code), capsys.readouterr().err, allow_ok=False)
