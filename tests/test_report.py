"""`cifarlab report`: one self-contained HTML page (figures as data: URIs, no external assets) and a Markdown
twin with every table and figure of the sweeps and runs under a folder; rendered by headless Chromium if present."""

from __future__ import annotations

import argparse
import base64
import re
import subprocess
from pathlib import Path

import pytest

from cifarlab.commands.experiments import add_report_parser, cmd_report
from cifarlab.config import load_config
from cifarlab.engine.trainer import train
from cifarlab.errors import CifarlabError
from cifarlab.experiments.sweep import parse_spec, run_sweep
from cifarlab.report.build import build_report, report_counts
from test_sweep import TINY_BASE, tiny_data

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None)


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Path:
    """A folder with one sweep (2 variants x 2 seeds, one epoch) and one stand-alone run."""
    root = tmp_path_factory.mktemp("lab")
    data = tiny_data(200, 100)
    base = {**TINY_BASE, "train": {"batch_size": 50, "eval_batch_size": 100, "epochs": 1}}
    spec = parse_spec({"name": "acts", "description": "tiny sweep", "reference": "none", "base": base,
                       "axes": {"model.options.activation": ["relu", "bogus"]}, "seeds": [0, 1]})
    run_sweep(spec, root / "sweeps", data=data)
    cfg = load_config(overrides=["model.options.widths=[8, 16, 16]", "data.val_size=100", "train.epochs=2",
                                 "train.batch_size=50"])
    train(cfg, root / "single", data=data, progress=False)
    return root


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cifarlab")
    add_report_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["report", *argv])


def test_report_is_self_contained_and_complete(lab, tmp_path, capsys):
    out = tmp_path / "rep.html"
    assert cmd_report(_args(str(lab), "--out", str(out))) == 0
    assert "rep.html" in capsys.readouterr().out
    text = out.read_text()
    # No external assets: every src is a data: URI, every href an in-page anchor.
    srcs = re.findall(r'\ssrc="([^"]*)"', text)
    hrefs = re.findall(r'\shref="([^"]*)"', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert all(h.startswith("#") for h in hrefs)
    assert "<link" not in text and "<script" not in text and "url(" not in text
    counts = report_counts(text)
    # sweep: convergence, test accuracy, LR, confusion of the best variant; single run: curves, LR, confusion
    assert counts["figures"] == counts["data_images"] == 7
    # sweep: shared settings, results, failed runs (no per-variant settings: the bogus variant's runs fail at the
    # start and leave no run directory, so one config remains); single run: settings, summary
    assert counts["tables"] == 5
    for src in srcs:
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for needle in ("Sweep sweeps/acts", "Run single", "activation=relu", "activation=bogus", "Figure 7.",
                   "Table 5.", "min..max over seeds", "sample std", "tiny sweep", "1 run (seed 0)"):
        assert needle in text, needle

    md = (tmp_path / "rep.assets" / "rep.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 7 and all((tmp_path / "rep.assets" / link).is_file() for link in links)
    assert md.count("### Table") == 5 and "| variant | runs ok / n |" in md


def test_report_default_location_and_errors(lab, tmp_path):
    html_path, md_path = build_report(lab / "single")  # a run directory on its own
    assert html_path == lab / "single" / "report.html" and md_path.is_file()
    assert report_counts(html_path.read_text())["figures"] == 3
    with pytest.raises(CifarlabError, match="no sweeps"):
        build_report(tmp_path)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (see scripts/check_report_renders.sh)")
def test_report_renders_in_headless_chromium(lab, tmp_path):
    html_path, _ = build_report(lab, tmp_path / "r.html")
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    f"--screenshot={shot}", "--window-size=1280,2400", html_path.as_uri()],
                   check=True, capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
