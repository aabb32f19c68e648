#!/usr/bin/env python3
"""The arm64 check's two Python halves (issue #15); benchmarks/arm64_check.sh runs both.

    python benchmarks/arm64_compare.py logits MODEL_DIR OUT.json FILE...   # on each machine (base install)
    python benchmarks/arm64_compare.py compare X86_DIR ARM64_DIR OUT_STEM  # on the host

`logits` writes every window's logits for the files, windowed by the runtime's own
`WindowStream` (what `classify` and `stream` see) and scored by `OnnxClassifier.logits`: the
decisions in the CLI's JSON lines carry probabilities rounded to 6 digits, the logits do not.

`compare` reads, for every model NAME, `NAME.classify.jsonl`, `NAME.stream.jsonl` (from the CLI)
and `NAME.logits.json` in both directories, and writes OUT_STEM.json and OUT_STEM.md: windows,
identical decisions (label and flag), agreement, the largest logit difference, and every
differing decision with its margin (how far the x86 run was from deciding otherwise).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def window_logits(model_dir: Path, files: list[Path]) -> dict:
    """{file name: [[end sample, final, logits...], ...]} through the runtime's windowing and ONNX session."""
    from edge_lung.audio import load_audio
    from edge_lung.features import window_features
    from edge_lung.runtime.artifact.model_dir import OnnxClassifier
    from edge_lung.runtime.live.stream import StreamConfig, StreamingClassifier

    classifier = StreamingClassifier(OnnxClassifier(model_dir, threads=1), StreamConfig())
    out = {}
    for path in files:
        wave, rate = load_audio(path)
        stream = classifier.create_stream(rate)
        block = rate  # 1 s blocks, as `classify` feeds a file
        windows = [w for pos in range(0, wave.shape[0], block) for w in stream.accept_waveform(wave[pos : pos + block])]
        windows += stream.finish()
        rows = []
        for w in windows:
            logits = classifier.model.logits(window_features(w.audio, classifier.features))[0]
            rows.append([int(w.end), bool(w.final), *map(float, logits)])
        out[path.name] = rows
    return {"labels": list(classifier.labels), "files": out}


def _decisions(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("type") == "window"]


def _margin(decision: dict) -> float | None:
    """Distance from the other decision: P(abnormal) to the threshold, or the top-2 probability gap;
    None for a window the quality gate left unclassified (its label is the verdict)."""
    if decision["p_abnormal"] is None:
        return None
    probs = sorted(decision["probabilities"].values(), reverse=True)
    return round(min(abs(decision["p_abnormal"] - decision["threshold"]), probs[0] - probs[1]), 6)


def compare_decisions(x86: list[dict], arm: list[dict], what: str) -> dict:
    """Window by window (same order, same file): label and flag must match."""

    def key(d: dict) -> tuple[str, int]:  # the files sit in different folders on the two machines
        return Path(d["source"]).name, d["end"]

    if [key(d) for d in x86] != [key(d) for d in arm]:
        raise SystemExit(f"{what}: the two machines made different windows")
    diffs = []
    for a, b in zip(x86, arm, strict=True):
        if (a["label"], a["flag"]) != (b["label"], b["flag"]):
            diffs.append(
                {
                    "what": what,
                    "source": Path(a["source"]).name,
                    "end_s": a["end_s"],
                    "x86": [a["label"], a["flag"]],
                    "arm64": [b["label"], b["flag"]],
                    "x86_margin": _margin(a),
                    "arm64_p_abnormal": b["p_abnormal"],
                    "x86_p_abnormal": a["p_abnormal"],
                }
            )
    n = len(x86)
    return {"windows": n, "identical": n - len(diffs), "agreement": (n - len(diffs)) / n if n else 1.0, "diffs": diffs}


def compare_logits(x86: dict, arm: dict) -> dict:
    worst, where = 0.0, None
    for name, rows in x86["files"].items():
        a, b = np.asarray(rows, dtype=np.float64), np.asarray(arm["files"][name], dtype=np.float64)
        if a.shape != b.shape or not np.array_equal(a[:, :2], b[:, :2]):
            raise SystemExit(f"{name}: the two machines made different windows")
        diff = np.abs(a[:, 2:] - b[:, 2:])
        if diff.max() > worst:
            worst, where = float(diff.max()), f"{name} window ending at sample {int(a[diff.max(axis=1).argmax(), 0])}"
    return {"max_logit_diff": worst, "where": where, "logit_range": _range(x86)}


def _range(run: dict) -> list[float]:
    every = np.concatenate([np.asarray(r, dtype=np.float64)[:, 2:].ravel() for r in run["files"].values()])
    return [round(float(every.min()), 4), round(float(every.max()), 4)]


def compare(x86_dir: Path, arm_dir: Path, out_stem: Path) -> dict:
    names = sorted(p.name.split(".")[0] for p in x86_dir.glob("*.logits.json"))
    report = {}
    for name in names:
        entry = {}
        for what in ("classify", "stream"):
            entry[what] = compare_decisions(
                _decisions(x86_dir / f"{name}.{what}.jsonl"),
                _decisions(arm_dir / f"{name}.{what}.jsonl"),
                f"{name} {what}",
            )
        entry["logits"] = compare_logits(
            *(json.loads((d / f"{name}.logits.json").read_text()) for d in (x86_dir, arm_dir))
        )
        report[name] = entry
    out_stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    out_stem.with_suffix(".md").write_text(markdown(report))
    return report


def markdown(report: dict) -> str:
    lines = [
        "| model | classify windows | identical | stream --replay windows | identical | max logit diff | logit range |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, e in report.items():
        c, s, lg = e["classify"], e["stream"], e["logits"]
        lines.append(
            f"| {name} | {c['windows']} | {c['identical']} ({100 * c['agreement']:.1f}%) | {s['windows']} | "
            f"{s['identical']} ({100 * s['agreement']:.1f}%) | {lg['max_logit_diff']:.2e} | {lg['logit_range']} |"
        )
    diffs = [d for e in report.values() for what in ("classify", "stream") for d in e[what]["diffs"]]
    lines.append("")
    lines.append("Differing decisions: " + ("none" if not diffs else ""))
    lines += [
        f"- {d['what']} {d['source']} @ {d['end_s']} s: x86 {d['x86']} (margin {d['x86_margin']}), arm64 {d['arm64']}"
        for d in diffs
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    lg = sub.add_parser("logits")
    lg.add_argument("model_dir", type=Path)
    lg.add_argument("out", type=Path)
    lg.add_argument("files", type=Path, nargs="+")
    cp = sub.add_parser("compare")
    cp.add_argument("x86_dir", type=Path)
    cp.add_argument("arm_dir", type=Path)
    cp.add_argument("out_stem", type=Path)
    args = parser.parse_args(argv)
    if args.cmd == "logits":
        args.out.write_text(json.dumps(window_logits(args.model_dir, args.files)) + "\n")
        return 0
    print(markdown(compare(args.x86_dir, args.arm_dir, args.out_stem)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
