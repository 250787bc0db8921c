"""The public API (docs/api.md): names, laziness, the run name, and the example script and notebook run end to end
on tiny synthetic settings (so a broken example fails here, not in a user's hands)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import cifarlab
from synthetic import TINY, synthetic_cifar

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + str(ROOT), "OMP_NUM_THREADS": "1"}


def test_public_names_exist_and_are_documented():
    doc = (ROOT / "docs" / "api.md").read_text()
    for name in cifarlab.API:
        assert callable(getattr(cifarlab, name)), name
        assert f"`{name}(" in doc, f"docs/api.md does not document {name}"
    with pytest.raises(AttributeError):
        cifarlab.no_such_function  # noqa: B018


def test_import_cifarlab_is_torch_free():
    code = "import sys, cifarlab; assert 'train' in dir(cifarlab); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_python_run_is_named_like_the_cli(tmp_path):


    cfg = cifarlab.load_config("fast-cpu", overrides=[*TINY, "model.name=quick_cnn", "train.epochs=1",
                                                       "model.options={widths: [8, 16, 16]}", "train.tta=none",
                                                       "sched.warmup_epochs=0", "sched.min_lr=0",
                                                       f"out_dir={tmp_path}"])
    assert cfg.preset == "fast_cpu"
    summary = cifarlab.train(cfg, data=synthetic_cifar(300, 100), progress=False)
    assert Path(summary["run_dir"]).name.startswith("fast_cpu-")
    assert cifarlab.evaluate.__doc__ and summary["status"] == "completed"


def test_make_config_from_preset_file_and_config(tmp_path):
    cfg = cifarlab.make_config("quick_cnn", "optim.lr=0.01")
    assert (cfg.optim.lr, cfg.preset) == (0.01, "quick_cnn")
    assert cifarlab.make_config(cfg, "train.epochs=2").train.epochs == 2
    path = tmp_path / "my.yaml"
    path.write_text("optim: {name: adam, lr: 0.001}\n")
    assert cifarlab.make_config(path).optim.name == "adam"


def test_example_script_runs(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "train_and_compare.py"), "--tiny"], cwd=tmp_path,
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test acc" in proc.stdout and (tmp_path / "runs/example/report.html").is_file()
    assert {p.name for p in (tmp_path / "runs/example").iterdir()} >= {"lr0.05", "lr0.2"}


def test_example_notebook_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    old = {k: os.environ.get(k) for k in ("CIFARLAB_EXAMPLE_TINY", "PYTHONPATH", "OMP_NUM_THREADS")}
    os.environ.update(CIFARLAB_EXAMPLE_TINY="1", PYTHONPATH=ENV["PYTHONPATH"], OMP_NUM_THREADS="1")
    try:  # the kernel inherits this process's environment
        client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                         resources={"metadata": {"path": str(tmp_path)}})
        client.execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "test accuracy" in outputs and "report.html" in outputs
    assert (tmp_path / "runs/notebook/report.html").is_file()
