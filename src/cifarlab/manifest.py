"""``manifest.json``: what a producer folder (a sweep, an explain folder, a study, a run) shows in ``cifarlab
report``: a section title, paragraphs, tables and figures with captions. The report reads manifests and knows
no producer's file names; a producer writes its manifest with ``write_manifest`` whenever its outputs change.

Items are plain dicts (build them with ``text``, ``table`` and ``figure``): figures are PNG files given by their
path relative to the folder (a missing file is skipped), tables are inline (header + rows of strings).
``extends=".."`` adds the items to the section of the parent folder (e.g. RUN/explain/ to the run's section);
``covers`` lists subfolders this folder summarises (e.g. a sweep's runs): they get no section of their own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifarlab.errors import CifarlabError
from cifarlab.io import atomic_write_json

MANIFEST = "manifest.json"
KINDS = ("text", "table", "figure")
FORMAT = "cifarlab-manifest-1"


@dataclass
class Manifest:
    folder: Path
    title: str
    items: list[dict[str, Any]] = field(default_factory=list)
    extends: str | None = None
    covers: list[str] = field(default_factory=list)


def text(paragraph: str) -> dict[str, Any]:
    return {"kind": "text", "text": paragraph}


def table(title: str, caption: str, header: Sequence[str], rows: Sequence[Sequence[Any]],
          numeric: bool = True) -> dict[str, Any]:
    """``numeric``: cells are numbers (right-aligned, never wrapped); False: text cells (left-aligned)."""
    return {"kind": "table", "title": title, "caption": caption, "header": [str(h) for h in header],
            "rows": [[str(c) for c in r] for r in rows], "numeric": numeric}


def figure(path: str | Path, title: str, caption: str) -> dict[str, Any]:
    """A PNG file, ``path`` relative to the manifest's folder."""
    return {"kind": "figure", "path": Path(path).as_posix(), "title": title, "caption": caption}


def write_manifest(folder: str | Path, title: str, items: Sequence[dict[str, Any]], extends: str | None = None,
                   covers: Sequence[str] = ()) -> Path:
    """Write ``folder/manifest.json`` (atomic); return its path."""
    for item in items:
        if item.get("kind") not in KINDS:
            raise ValueError(f"manifest item of unknown kind {item.get('kind')!r}; kinds: {', '.join(KINDS)}")
    path = Path(folder) / MANIFEST
    atomic_write_json(path, {"format": FORMAT, "title": title, "extends": extends, "covers": list(covers),
                             "items": list(items)})
    return path


def read_manifest(folder: str | Path) -> Manifest | None:
    """The manifest of ``folder``; None when it has none (or its manifest.json is another tool's). A damaged
    manifest raises ``CifarlabError``."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            return None
        items = [i for i in raw["items"] if i["kind"] in KINDS]
        return Manifest(Path(folder), str(raw["title"]), items, raw.get("extends"), list(raw.get("covers", [])))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CifarlabError(f"'{path}' is not a cifarlab manifest ({exc})") from None


def find_manifests(root: str | Path) -> list[Manifest]:
    """Every manifest under ``root`` (root included), in path order."""
    return [m for p in sorted(Path(root).rglob(MANIFEST)) if (m := read_manifest(p.parent)) is not None]


__all__ = ["MANIFEST", "Manifest", "figure", "find_manifests", "read_manifest", "table", "text", "write_manifest"]
