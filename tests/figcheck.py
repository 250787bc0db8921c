"""A programmatic look at a Figure: is every text readable (no two overlap, none leaves the figure), are
epoch axes whole numbers and accuracy axes in %? Bounding boxes come from ``get_window_extent`` after a draw."""

from __future__ import annotations

import itertools
from typing import Any

TOLERANCE = 1.0  # pixels: boxes that merely touch are not an overlap


def drawn_ticklabels(ax: Any, axis: str) -> list[Any]:
    """Tick labels matplotlib draws: visible, non-empty, inside the view limits (the others keep stale places)."""
    lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
    labels = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    k = 0 if axis == "x" else 1
    slack = 1e-9 * max(abs(lo), abs(hi), 1.0)
    return [t for t in labels if t.get_visible() and t.get_text() and lo - slack <= t.get_position()[k] <= hi + slack]


def _is_3d(ax: Any) -> bool:
    return getattr(ax, "name", "") == "3d"


def text_artists(fig: Any) -> list[tuple[str, Any, Any]]:
    """(what, Text, its axes or None) of every title, axis label, tick label, suptitle, figure text and legend
    text."""
    texts: list[tuple[str, Any, Any]] = []
    if fig._suptitle is not None:
        texts.append(("suptitle", fig._suptitle, None))
    texts += [("figure text", t, None) for t in fig.texts if t is not fig._suptitle]
    for legend in fig.legends:
        texts += [("legend", t, None) for t in legend.get_texts()]
    for i, ax in enumerate(fig.axes):
        if not ax.get_visible():
            continue
        own = [(f"axes {i} title", t) for t in (ax.title, ax._left_title, ax._right_title)]
        own += [(f"axes {i} xlabel", ax.xaxis.label), (f"axes {i} ylabel", ax.yaxis.label)]
        if _is_3d(ax):
            own.append((f"axes {i} zlabel", ax.zaxis.label))
        else:
            own += [(f"axes {i} xtick", t) for t in drawn_ticklabels(ax, "x")]
            own += [(f"axes {i} ytick", t) for t in drawn_ticklabels(ax, "y")]
        if ax.get_legend() is not None:
            own += [(f"axes {i} legend", t) for t in ax.get_legend().get_texts()]
        texts += [(w, t, ax) for w, t in own]
    return [(w, t, ax) for w, t, ax in texts if t.get_visible() and t.get_text().strip()]


def _shrunk(box: Any) -> Any:
    return box.expanded(1, 1).padded(-TOLERANCE)


def text_problems(fig: Any) -> list[str]:
    """Texts that overlap each other, lie on another axes' plot area, or leave the figure, as readable lines
    (empty: all readable). A 3-D axes' box is mostly empty margin, so only its texts are checked, not its area."""
    _draw(fig)
    renderer = fig.canvas.get_renderer()
    boxes = [(w, t.get_text(), _shrunk(t.get_window_extent(renderer)), ax) for w, t, ax in text_artists(fig)]
    page = fig.bbox.padded(TOLERANCE)
    problems = [f"{w} {s!r} leaves the figure ({b.bounds})" for w, s, b, _ in boxes
                if not (page.x0 <= b.x0 and b.x1 <= page.x1 and page.y0 <= b.y0 and b.y1 <= page.y1)]
    for (w1, s1, b1, _), (w2, s2, b2, _) in itertools.combinations(boxes, 2):
        if b1.overlaps(b2):
            problems.append(f"{w1} {s1!r} overlaps {w2} {s2!r}")
    areas = [(i, ax.get_window_extent(renderer)) for i, ax in enumerate(fig.axes)
             if ax.get_visible() and not _is_3d(ax)]
    for w, s, b, owner in boxes:
        problems += [f"{w} {s!r} lies on the plot area of axes {i}" for i, area in areas
                     if fig.axes[i] is not owner and b.overlaps(area)]
    return problems


def _draw(fig: Any) -> None:
    if fig.stale:  # a draw runs the layout engine: once per change, not once per check
        fig.canvas.draw()


def assert_readable(fig: Any) -> None:
    problems = text_problems(fig)
    assert not problems, "unreadable figure:\n" + "\n".join(problems)


def assert_integer_ticks(ax: Any, axis: str = "x") -> None:
    """Every drawn tick of ``axis`` is a whole number (epochs, trials)."""
    _draw(ax.figure)
    lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
    ticks = [v for v in (ax.get_xticks() if axis == "x" else ax.get_yticks()) if lo <= v <= hi]
    assert ticks, f"no {axis} ticks drawn"
    assert all(float(v).is_integer() for v in ticks), f"fractional {axis} ticks {ticks}"


def assert_percent(ax: Any, axis: str = "y") -> None:
    """An accuracy axis reads in %: its label or its tick labels say %, or its values go past 1."""
    _draw(ax.figure)
    label = (ax.xaxis if axis == "x" else ax.yaxis).label.get_text()
    ticks = [t.get_text() for t in drawn_ticklabels(ax, axis)]
    lo, hi = ax.get_xlim() if axis == "x" else ax.get_ylim()
    assert "%" in label or any("%" in t for t in ticks) or max(lo, hi) > 1.5, (label, ticks)
