"""The code's shape, checked: short functions, and the device side importable without torch."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import edge_lung

ROOT = Path(__file__).resolve().parents[1]
MAX_BODY_LINES = 60
"""Longest function body allowed in edge_lung/ and benchmarks/ (the signature, where typer declares
its options, does not count)."""

DEVICE_SIDE = (
    "config", "fileio", "machine", "audio", "features", "feature_stats", "metrics", "scoring", "plots", "data",
    "runtime", "bench",
)
TRAINING_STACK = ("torch", "transformers", "peft", "accelerate", "onnx")


def long_functions(root: Path, limit: int = MAX_BODY_LINES) -> list[str]:
    """'path:line name (N lines)' for every function whose body is longer than `limit` lines."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.body[0].lineno + 1
                if length > limit:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_long_function_check_finds_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_BODY_LINES + 1))
    (tmp_path / "m.py").write_text(f"def f(\n    a=1,\n    b=2,\n):\n{body}\n\ndef g():\n    return 1\n")
    global ROOT
    old, ROOT = ROOT, tmp_path
    try:
        assert long_functions(tmp_path) == [f"m.py:1 f ({MAX_BODY_LINES + 1} lines)"]
    finally:
        ROOT = old


def test_no_function_in_the_package_or_benchmarks_is_over_60_lines():
    offenders = long_functions(ROOT / "edge_lung") + long_functions(ROOT / "benchmarks")
    assert not offenders, "functions over 60 lines (split them into steps):\n" + "\n".join(offenders)


def device_side_modules() -> list[str]:
    """Every module of the device side, found by walking the package (no hand-kept list)."""
    names = []
    for info in pkgutil.walk_packages(edge_lung.__path__, "edge_lung."):
        top = info.name.split(".")[1]
        if top in DEVICE_SIDE:
            names.append(info.name)
    return names


def test_the_walk_finds_modules_in_every_device_side_package():
    names = device_side_modules()
    for package in ("data", "runtime", "bench"):
        assert any(n.startswith(f"edge_lung.{package}.") for n in names), package
    assert "edge_lung.runtime.live.stream" in names and "edge_lung.features" in names
    assert not any(n.startswith(("edge_lung.train", "edge_lung.export")) for n in names)


def test_device_side_imports_no_training_stack():
    """Import every device-side module in a fresh process: none of torch & co. may be loaded."""
    code = (
        "import importlib, sys\n"
        f"for name in {device_side_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {TRAINING_STACK!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "", f"device-side modules imported: {out.stdout.strip()}"
