"""Every figure kind drawn on tiny hand-made inputs and looked at by program (tests/figcheck.py): no two texts
overlap, none leaves the figure, epoch and trial axes have whole-number ticks, accuracies read in %."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import figdata as fd
from cifarlab.plotting import new_figure
from figcheck import assert_integer_ticks, assert_percent, assert_readable, text_problems


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    return fd.sweep_variants(tmp_path_factory.mktemp("sweep"), epochs=2)


# -- the checker itself can fail ----------------------------------------------------------------------------------


def test_checker_flags_overlapping_and_clipped_text():
    fig = new_figure(4, 3, layout=None)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title("a title")
    ax.text(0.5, 1.02, "a second title on top of it", transform=ax.transAxes, ha="center")
    fig.suptitle("x" * 200)
    ax.set_xlabel("label")
    fig.legend(["a"], loc=(0.4, 0.0))  # on the x label
    problems = "\n".join(text_problems(fig))
    assert "leaves the figure" in problems
    assert "overlaps" in problems
    with pytest.raises(AssertionError):
        assert_readable(fig)


def test_checker_fails_on_the_old_attribution_layout():
    from cifarlab.analysis.explain.attribution import attribution_figure

    fig = attribution_figure(*fd.attribution_inputs(16), "ig", None, "pred")
    size = fig.get_size_inches()
    fig.set_size_inches(1.9 * 8, 4.3 * 2)  # the old size and layout: the second block's titles sat on the
    fig.set_layout_engine("tight")         # first block's maps
    assert any("lies on the plot area" in p for p in text_problems(fig))
    fig.set_size_inches(size)
    fig.set_layout_engine("constrained")
    assert_readable(fig)


def test_checker_flags_fractional_epochs_and_fraction_accuracy():
    fig = new_figure(4, 3)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([1], [0.6], marker="o")  # one epoch, accuracy as 0..1: the old sweep convergence panel
    with pytest.raises(AssertionError, match="fractional"):
        assert_integer_ticks(ax)
    with pytest.raises(AssertionError):
        assert_percent(ax)


# -- sweep figures --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("epochs", [1, 2])
def test_convergence(tmp_path, epochs):
    from cifarlab.experiments import figures

    fig = figures.convergence_plot(fd.sweep_variants(tmp_path, epochs=epochs))
    assert_readable(fig)
    for ax in fig.axes:
        assert_integer_ticks(ax)
    for ax in (fig.axes[1], fig.axes[3]):
        assert_percent(ax)
    assert "n = 1 seed" in fig.axes[0].get_legend().get_texts()[0].get_text()


def test_test_accuracy_bars(variants):
    from matplotlib.container import ErrorbarContainer

    from cifarlab.experiments import figures

    fig = figures.test_accuracy_plot(variants)
    assert_readable(fig)
    ax = fig.axes[0]
    assert_percent(ax, "x")
    assert ax.get_xlim()[0] == 0  # the whole scale: no exaggerated differences
    bars = sum(isinstance(c, ErrorbarContainer) for c in ax.containers)
    assert bars == sum(v.stats["test_acc"][2] > 1 for v in variants) == 2  # none for the n = 1 variant
    assert any("n = 1" in t.get_text() for t in ax.get_yticklabels())
    assert ax.get_title()


def test_sweep_lr_and_confusion(variants):
    from cifarlab.experiments import figures

    assert_readable(figures.lr_plot(variants))
    out = figures.confusion_figure(variants[0].runs, "baseline", "")
    assert out is not None and out.png[:4] == b"\x89PNG"


# -- tune, LR schedule ----------------------------------------------------------------------------------------------


def test_tune_figures():
    from cifarlab.experiments.tune_outputs import history_plot, importances_plot, slices_plot

    rows = fd.tune_rows()
    history = history_plot(rows, "val_acc", True)
    assert_readable(history)
    assert_integer_ticks(history.axes[0])
    assert_percent(history.axes[0])
    slices = slices_plot(rows, fd.tune_space(), "val_acc")
    assert_readable(slices)
    assert_percent(slices.axes[0])
    assert_readable(importances_plot({"lr": 0.7, "batch_size": 0.3}))
    assert "%" not in history_plot(rows, "val_loss", False).axes[0].get_ylabel()


def test_run_lr_plot_has_whole_epoch_ticks(variants):
    from cifarlab.engine.schedules import lr_plot

    fig = lr_plot(variants[0].runs[0].steps(), "run")
    assert_readable(fig)
    assert_integer_ticks(fig.axes[0])
    assert fig.axes[0].get_xlabel() == "epoch"


# -- explain ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    from cifarlab.models import create

    torch.manual_seed(0)
    return create("quick_cnn", widths=[8, 16, 16]).eval()


def test_attributions_16_images():
    from cifarlab.analysis.explain.attribution import attribution_figure

    assert_readable(attribution_figure(*fd.attribution_inputs(16), "gradcam", "features.4", "pred"))


def test_filter_figures(model):
    from cifarlab.analysis.explain.filters import conv_layers, deep_filters_figure, first_layer_figure

    convs = conv_layers(model)
    first = first_layer_figure(*convs[0])
    assert_readable(first)
    assert "'" not in first.axes[0].get_title()  # no bare module name such as "first layer '0'"
    deep = deep_filters_figure(convs[1:])
    assert_readable(deep)
    ticks = [t.get_text() for t in deep.axes[0].get_xticklabels()]
    assert all("->" in t for t in ticks) and deep.axes[0].get_xlabel()
    assert any(ax.get_label() == "<colorbar>" for ax in deep.axes)


def test_mistakes_and_confusion():
    from cifarlab.analysis.explain.mistakes import Predictions, confusion_figure, confusion_matrix, mistakes_figure

    images, _, labels, preds, _ = fd.attribution_inputs(16)
    p = Predictions(torch.nn.functional.one_hot(preds, 10).float() * 3, labels)
    fig = mistakes_figure(images, torch.arange(6), p)
    assert_readable(fig)
    assert "#" not in fig._suptitle.get_text()
    conf = confusion_figure(confusion_matrix(preds, labels), "run: test accuracy 60.00 % on 16 images")
    assert_readable(conf)
    assert_percent(conf.axes[-1], "x")


def test_surface_3d():
    from cifarlab.analysis.explain.explain import surface3d_figure
    from cifarlab.analysis.explain.surface import display_range

    a, b, z = fd.bowl(11)
    z[5, 7] = np.nan
    vmin, vmax = display_range([z], None)
    fig = surface3d_figure("run: 2-D loss surface", a, b, z, vmin, vmax)
    assert_readable(fig)
    assert fig._suptitle.get_fontsize() >= 12


def test_surface_refine_leaves_a_hole_where_the_loss_is_missing():
    from cifarlab.analysis.explain.surface import refine

    a, b, z = fd.bowl(11)
    z[5, 5] = np.nan
    fine = refine(a, b, z, 41)[2]
    assert fine.shape == (41, 41)
    assert np.isnan(fine[20, 20])  # a hole, not a spike drawn at the clip value
    assert np.isfinite(fine[0]).all() and np.nanmax(fine) <= np.nanmax(z)


# -- bn-study ---------------------------------------------------------------------------------------------------------


def test_bn_study_curves_and_ics():
    from cifarlab.analysis.bn_study.plots import curves_figure, ics_figure
    from cifarlab.analysis.bn_study.settings import StudySettings

    runs = fd.bn_runs()
    fig = curves_figure(runs, "train: sgd, batch 128, width x1, no augmentation", window=10)
    assert_readable(fig)
    assert_integer_ticks(fig.axes[2])
    assert_percent(fig.axes[1])
    assert_percent(fig.axes[2])
    s = StudySettings()
    rows = [{"model": r["spec"]["model"], "seed": r["spec"]["seed"], **row, "rel": row["l2"] / row["grad_norm"]}
            for r in runs for row in r["ics"]]
    assert_readable(ics_figure(rows, s))
