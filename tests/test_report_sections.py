"""`cifarlab report` sections, checked on values: a run's settings, the comparison of stand-alone runs (mean, std
and 95 % CI against an independent computation), interrupted runs, single-run wording, number formatting and
alignment, the files the command writes, and the page as headless Chromium draws it."""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import statistics
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cifarlab.config import load_config
from cifarlab.engine.trainer import train
from cifarlab.experiments.sweep import parse_spec, run_sweep
from cifarlab.plotting import FigureOut
from cifarlab.report.build import build_report
from test_sweep import TINY_BASE, tiny_data

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_report_renders.sh"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Test accuracies written into the runs' summaries (the tiny runs all score alike): config A has three seeds.
TEST_ACC_A = [0.61, 0.64, 0.66]
VAL_ACC_A = [0.60, 0.62, 0.65]
T_975_DF2 = 4.302652729749462  # Student t, 97.5 % quantile, 2 degrees of freedom (tables / scipy.stats.t.ppf)


def _train(root: Path, name: str, data, *overrides: str) -> Path:
    cfg = load_config(overrides=["model.options.widths=[8, 16, 16]", "data.val_size=100", "train.batch_size=50",
                                 "train.eval_batch_size=100", *overrides])
    train(cfg, root / name, data=data, progress=False)
    return root / name


def _patch(run: Path, **values: float) -> None:
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, **values}))


def _png(shade: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (320, 160), (shade, 120, 200)).save(buf, format="PNG")
    return buf.getvalue()


def stub_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain PNGs instead of matplotlib figures (a second or more each; test_report.py draws the real ones). The run's
    convergence stub carries the sweep caption the report must replace for a single run."""
    import cifarlab.engine.trainer as trainer
    import cifarlab.experiments.figures as figures

    monkeypatch.setattr(trainer, "plot_lr", lambda *_a, **_k: None)  # each run's lr.png: the report draws none

    sweep_caption = "Line: mean over seeds; shaded band: min..max over seeds (up to 1 seed per variant)."
    monkeypatch.setattr(figures, "sweep_figures", lambda _d: [FigureOut("convergence", "Convergence",
                                                                        sweep_caption, _png(40))])
    monkeypatch.setattr(figures, "run_figures", lambda _d: [FigureOut("convergence", "Convergence", sweep_caption,
                                                                      _png(90))])


def build_lab(root: Path) -> Path:
    """A sweep (2 variants, 1 seed), stand-alone runs under runs/ (config A: 3 seeds, config B: 1 seed) and an
    interrupted run (2 epochs planned, stopped after epoch 1: no summary.json)."""
    data = tiny_data(200, 100)
    base = {**TINY_BASE, "train": {"batch_size": 50, "eval_batch_size": 100, "epochs": 1}}
    spec = parse_spec({"name": "acts", "description": "tiny sweep", "reference": "none", "base": base,
                       "axes": {"model.options.activation": ["relu", "elu"]}, "seeds": [0]})
    run_sweep(spec, root / "sweeps", data=data, progress=False)
    runs = root / "runs"
    for seed, (test, val) in enumerate(zip(TEST_ACC_A, VAL_ACC_A)):
        _patch(_train(runs, f"a_s{seed}", data, "train.epochs=1", f"train.seed={seed}"), test_acc=test,
               final_val_acc=val)
    _patch(_train(runs, "b_s0", data, "train.epochs=1", "optim.lr=0.1"), test_acc=0.70, final_val_acc=0.69)
    stopped = _train(runs, "stopped", data, "train.epochs=2", "data.subset=60")
    (stopped / "summary.json").unlink()
    lines = (stopped / "epochs.csv").read_text().splitlines()
    (stopped / "epochs.csv").write_text("\n".join(lines[:2]) + "\n")  # header + epoch 1
    return root


@pytest.fixture(scope="module")
def figures_stubbed():
    with pytest.MonkeyPatch.context() as mp:
        stub_figures(mp)
        yield


@pytest.fixture(scope="module")
def lab(tmp_path_factory, figures_stubbed) -> Path:
    return build_lab(tmp_path_factory.mktemp("lab"))


@pytest.fixture(scope="module")
def page(lab, tmp_path_factory) -> tuple[Path, str]:
    html_path, _ = build_report(lab, tmp_path_factory.mktemp("out") / "r.html")
    return html_path, html_path.read_text()


class Tables(HTMLParser):
    """Every <table> as {title: [[(cell text, class attribute), ...] per row]} (title: the <h3> before it)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str]]]] = {}
        self.h3 = self.title = ""
        self.cell: list[str] | None = None
        self.in_h3 = False

    def handle_starttag(self, tag, attrs):
        if tag == "h3":
            self.in_h3, self.h3 = True, ""
        elif tag == "table":
            self.title = self.h3
            self.tables[self.title] = []
        elif tag == "tr":
            self.tables[self.title].append([])
        elif tag in ("td", "th"):
            self.cell, self.cls = [], dict(attrs).get("class", "")

    def handle_endtag(self, tag):
        if tag == "h3":
            self.in_h3 = False
        elif tag in ("td", "th") and self.cell is not None:
            self.tables[self.title][-1].append(("".join(self.cell), self.cls))
            self.cell = None

    def handle_data(self, data):
        if self.in_h3:
            self.h3 += data
        if self.cell is not None:
            self.cell.append(data)


def _section(text: str, title: str) -> str:
    start = text.index(f"<h2>{title}</h2>")
    end = text.find("<h2>", start + 1)
    return text[start:end if end > 0 else None]


def _tables(html_text: str) -> dict[str, list[list[tuple[str, str]]]]:
    parser = Tables()
    parser.feed(html_text)
    return {re.sub(r"^Table \d+\. ", "", k): v for k, v in parser.tables.items()}


def _auto_precision() -> str:
    import torch

    from cifarlab.engine.build import resolve_amp

    amp = resolve_amp("auto", torch.device("cpu"))  # these runs ask for auto: bf16 or fp32, as this CPU does
    return ("fp32" if amp == "off" else f"{amp} autocast") + " (train.amp=auto)"


AUTO_PRECISION = _auto_precision()


def _kv(table: list[list[tuple[str, str]]]) -> dict[str, str]:
    return {row[0][0]: row[1][0] for row in table[1:]}


def test_run_settings_table_and_single_run_wording(page):
    _, text = page
    sec = _section(text, "Run runs/a_s1")
    settings = _kv(_tables(sec)["Settings"])
    assert settings["optimizer"] == "sgd, lr 0.05, weight decay 0.0005"
    assert settings["epochs planned"] == "1" and settings["seed"] == "1" and settings["batch size"] == "50"
    assert settings["images train / val / test"] == "100 / 100 / 100"
    assert settings["model"] == "quick_cnn" and settings["model options"] == "widths=[8, 16, 16]"
    assert settings["preset"] == "none" and settings["precision"] == AUTO_PRECISION and settings["device"] == "cpu"
    assert settings["training subset"] == "all" and settings["schedule"] == "cosine"
    assert "1 run (seed 1)" in sec and "over seeds" not in sec and "seed per variant" not in sec
    assert "1 run, so no band" in sec  # the convergence figure's caption, rewritten for one run
    summary = _kv(_tables(sec)["Summary"])
    assert summary["epochs run / planned"] == "1 / 1" and summary["test loss / acc"].endswith("/ 64.00 %")


def test_comparison_table_one_row_per_config_with_mean_and_ci(page):
    _, text = page
    sec = _section(text, "Runs in runs")
    table = _tables(sec)["Stand-alone runs compared"]
    header = [c for c, _ in table[0]]
    rows = {r[0][0]: dict(zip(header, (c for c, _ in r))) for r in table[1:]}
    assert set(rows) == {"optim.lr=0.05", "optim.lr=0.1"}  # the interrupted run is in no row
    a, b = rows["optim.lr=0.05"], rows["optim.lr=0.1"]
    assert (a["runs"], a["seeds"], a["epochs"], b["runs"], b["seeds"]) == ("3", "0, 1, 2", "1", "1", "0")
    mean, std = statistics.fmean(TEST_ACC_A), statistics.stdev(TEST_ACC_A)
    half = T_975_DF2 * std / math.sqrt(3)
    assert a["test acc (%)"] == f"{100 * mean:.2f} ± {100 * std:.2f}" == "63.67 ± 2.52"
    assert a["test acc 95 % CI (%)"] == f"[{100 * (mean - half):.2f}, {100 * (mean + half):.2f}]"
    assert a["val acc (%)"] == f"{100 * statistics.fmean(VAL_ACC_A):.2f} ± {100 * statistics.stdev(VAL_ACC_A):.2f}"
    assert b["test acc (%)"] == "70.00" and b["test acc 95 % CI (%)"] == "-"
    # config B has one seed: the page must not present its lead as a finding
    assert "Best config by mean final validation accuracy: optim.lr=0.1" in sec
    assert "anecdotal" in sec and "inconclusive" in sec


def test_interrupted_run_is_listed_with_its_epoch(page):
    _, text = page
    rows = _tables(_section(text, "Runs in runs"))["Runs that did not finish"]
    assert [c for c, _ in rows[1]][:3] == ["stopped", "interrupted at epoch 1 of 2", "1"]
    sec = _section(text, "Run runs/stopped (interrupted at epoch 1 of 2)")
    settings = _kv(_tables(sec)["Settings"])
    assert settings["training subset"] == "60 images" and settings["precision"] == AUTO_PRECISION  # env.json
    assert "Summary" not in _tables(sec)


def test_sweep_section_shows_the_settings_that_differ(page):
    _, text = page
    tables = _tables(_section(text, "Sweep sweeps/acts"))
    per_variant = tables["Settings per variant"]
    assert [c for c, _ in per_variant[0]] == ["model.options.activation", "runs", "seeds"]
    assert [[c for c, _ in r] for r in per_variant[1:]] == [["relu", "1", "0"], ["elu", "1", "0"]]
    shared = _kv(tables["Settings shared by all runs"])
    assert shared["epochs planned"] == "1" and shared["model"] == "quick_cnn" and "model options" not in shared
    assert "Weight of the comparison" in text and "anecdotal" in _section(text, "Sweep sweeps/acts")
    results = tables["Results per variant"]
    epochs_col = [c for c, _ in results[0]].index("epochs")
    assert all(row[epochs_col][0] == "1" for row in results[1:])  # an integer column, not "1.0"


def test_integers_and_alignment(page):
    _, text = page
    for title, table in _tables(text).items():
        header, body = table[0], table[1:]
        for j, (name, cls) in enumerate(header):
            cells = [row[j] for row in body]
            assert all(c_cls == cls for _, c_cls in cells), (title, name)  # header aligned like its values
            if name in ("runs", "epochs", "seeds", "epochs done", "best val epoch", "epochs run / planned"):
                assert not any(re.search(r"\b\d+\.0\b", c) for c, _ in cells), (title, name)
    comp = _tables(_section(text, "Runs in runs"))["Stand-alone runs compared"]
    classes = {c: cls for c, cls in comp[0]}
    assert classes["config"] == "" and classes["test acc (%)"] == classes["runs"] == "n"  # text left, numbers right
    assert ".n{text-align:right" in text.replace("th.n,td.n", ".n")


def test_report_command_writes_only_the_page_and_its_ignored_folder(lab, tmp_path, monkeypatch, figures_stubbed):
    from cifarlab.cli import main

    monkeypatch.chdir(tmp_path)
    before = set(os.listdir(tmp_path))
    assert main(["report", str(lab), "--out", "report.html"]) == 0
    assert set(os.listdir(tmp_path)) - before == {"report.html", "report.assets"}
    assert (tmp_path / "report.assets" / "report.md").is_file() and (tmp_path / "report.assets" / "figures").is_dir()
    ignore = (Path(__file__).resolve().parents[1] / ".gitignore").read_text().split()
    assert "*.assets/" in ignore and "/report.html" in ignore
    md = (tmp_path / "report.assets" / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert links and all((tmp_path / "report.assets" / link).is_file() for link in links)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed: apt-get install -y chromium")
def test_page_renders_in_headless_chromium(page, tmp_path):
    import numpy as np
    from PIL import Image

    shot = tmp_path / "shot.png"
    out = subprocess.run(["bash", str(SCRIPT), str(page[0]), str(shot)], capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr
    assert "tables:" in out.stdout and shot.stat().st_size > 50_000
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape[1] >= 1000 and pixels.shape[0] >= 2000
    assert pixels.std() > 10  # not a blank page: text, table borders and figures
    assert (pixels < 128).mean() > 0.01  # some dark ink (text), not a uniform grey


def test_precision_says_what_auto_became():
    from cifarlab.report.runs import _precision

    assert _precision("off", "auto") == "fp32 (train.amp=auto)"  # auto on a CPU without bf16 in hardware
    assert _precision("bf16", "auto") == "bf16 autocast (train.amp=auto)"
    assert _precision("bf16", "bf16") == "bf16 autocast" and _precision("off", "off") == "fp32"
