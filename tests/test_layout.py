"""The README's layout table matches the tree: each `edge_lung/...` row names exactly that folder's modules."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layout_rows(readme: str) -> dict[str, set[str]]:
    """{folder: names in backticks} of the table rows whose path is a folder of edge_lung (the API aside)."""
    rows = {}
    for line in readme.splitlines():
        m = re.match(r"\| `(edge_lung/[a-z_/]*)` \| (.*) \|$", line)
        if m:
            text = m.group(2).split("`from edge_lung import")[0]
            rows[m.group(1)] = set(re.findall(r"`([a-z_0-9]+)`", text))
    return rows


def modules_of(folder: Path) -> set[str]:
    """Module files and sub-folders (packages, data folders) of `folder`, without dunder files and caches."""
    return {p.stem for p in folder.iterdir()
            if not p.name.startswith(("__", ".")) and (p.suffix == ".py" or p.is_dir())}


def test_layout_table_names_every_module_and_no_other():
    rows = layout_rows((ROOT / "README.md").read_text())
    packages = {str(p.parent.relative_to(ROOT)) + "/" for p in (ROOT / "edge_lung").rglob("__init__.py")}
    assert set(rows) == packages, f"rows for {sorted(set(rows) ^ packages)} missing or stale"
    wrong = {folder: {"missing": sorted(modules_of(ROOT / folder) - names),
                      "stale": sorted(names - modules_of(ROOT / folder))}
             for folder, names in rows.items() if names != modules_of(ROOT / folder)}
    assert not wrong, f"README layout table out of date: {wrong}"


def test_layout_check_catches_a_stale_name(tmp_path):
    assert layout_rows("| `edge_lung/x/` | `a`, `b` |") == {"edge_lung/x/": {"a", "b"}}
    (tmp_path / "a.py").write_text("")
    assert modules_of(tmp_path) == {"a"}  # `b` named in the table, absent from the folder: a mismatch
