"""model_card.md: what an exported model is, its input, its measured figures and its limits.

Built from the manifest (what the device reads) and the parity record (what export measured),
so the card never states a figure the files do not hold.
"""

from __future__ import annotations

from edge_lung.export.parity import speed_advice
from edge_lung.runtime.artifact.model_dir import MANIFEST_NAME, PARITY_NAME


def model_card(manifest: dict, record: dict) -> str:
    """model_card.md text: what the model is, its input, its figures and its limits."""
    lines = _header(manifest) + _provenance(manifest) + _figures(manifest, record) + _quality(manifest) + _LIMITS
    return "\n".join(lines)


def _header(manifest: dict) -> list[str]:
    return [
        f"# edge-lung respiratory-sound classifier ({manifest['quantization']})",
        "",
        "Classifies one respiratory cycle, cyclic-padded to a fixed window, into "
        + ", ".join(f"`{x}`" for x in manifest["labels"])
        + " (ICBHI 2017 classes). Research software, not a medical device: it does not diagnose.",
        "",
        "## Files",
        f"- `{manifest['model_file']}`: ONNX, {manifest['size_bytes'] / 1e6:.1f} MB, SHA-256 `{manifest['sha256']}`",
        f"- `{MANIFEST_NAME}`: the same metadata as the ONNX file, plus the hash; `{PARITY_NAME}`: measured parity",
        *_e2e_files(manifest),
        "",
        "## Input and output",
        *_input(manifest),
        f"- output `{manifest['output']['name']}`: float32 {manifest['output']['shape']}, logits (softmax for "
        "probabilities)",
        *_margin(manifest),
        "- every setting is in the ONNX metadata (`edge_lung.*` keys); "
        "`edge_lung.runtime.artifact.model_dir.OnnxClassifier` reads them",
        *_cost(manifest),
    ]


def _input(manifest: dict) -> list[str]:
    feats, name, shape = manifest["features"], manifest["input"]["name"], manifest["input"]["shape"]
    if feats.get("front_end", "fbank") == "respiratory":
        return [f"- input `{name}`: float32 {shape}, {feats['num_mel_bins']} adventitious-sound descriptors per "
                "window (`edge_lung/respiratory.py`: wheeze tonality, crackle transients; gain-free, below 2 kHz)",
                f"- audio: mono, {feats['sample_rate']} Hz, {feats['window_s']} s windows (a training cycle is "
                "measured as recorded, not cyclic-padded)"]
    return [f"- input `{name}`: float32 {shape}, normalised log-mel features",
            f"- audio: mono, {feats['sample_rate']} Hz, {feats['window_s']} s windows, `{feats['padding']}` padding, "
            f"{feats['num_mel_bins']} Kaldi fbank bins ({feats['frame_length_ms']} ms / {feats['frame_shift_ms']} ms), "
            f"normalised (x - {feats['norm_mean']}) / (2 * {feats['norm_std']}), feature version "
            f"`{feats['feature_version']}`"]


def _margin(manifest: dict) -> list[str]:
    margin = (manifest.get("run") or {}).get("normal_margin")
    if not margin:
        return []
    return [f"- decides with a normal margin of {margin:g} (added to the `normal` logit inside the graph; chosen on "
            "the training stethoscopes held out one at a time, `edge_lung/train/margin.py`): it calls a cycle "
            "abnormal only when clearly sure"]


def _cost(manifest: dict) -> list[str]:
    """The multiply-accumulates per window counted at export (`edge_lung.export.cost`), when recorded."""
    cost = (manifest.get("run") or {}).get("cost")
    if not cost:
        return []
    return [f"- cost: {cost['macs'] / 1e9:.3f} GMAC per window, {cost['params'] / 1e6:.2f} M parameters "
            f"({cost['counted_by']}, {cost['graph']}); `edge-lung bench` turns it into GMAC/s on a board"]


def _quality(manifest: dict) -> list[str]:
    """The signal-quality gate's thresholds (`edge_lung.quality`), when the model carries them."""
    q = manifest.get("quality")
    if not q:
        return []
    return [
        "",
        "## Signal quality",
        "The runtime gives a window no class when it cannot hear the chest (`edge_lung/runtime/artifact/quality.py`): "
        f"`no_signal` under {q['floor_db']} dBFS RMS or flat hiss (spectral flatness >= {q['noise_flatness']} with "
        f"an envelope spread under {q['envelope_db']} dB), `clipping` when {q['clipped_share']:.0%} of the input "
        f"samples are at or above {q['clip_level']} of full scale, `too_loud` over {q['loud_db']} dBFS, `too_quiet` "
        f"under {q['quiet_db']} dBFS, `noise` at flatness >= {q['noise_flatness']} in {q['band_low_hz']:.0f}-"
        f"{q['band_high_hz']:.0f} Hz, and `invalid` for NaN/inf samples (never classified).",
    ]


def _provenance(manifest: dict) -> list[str]:
    run = manifest["run"]
    lines = [
        "",
        "## Provenance",
        f"- run: `{run.get('run_dir')}`, data: `{run.get('data')}`",
        f"- exporter: {run.get('exporter')}; torch {run.get('torch')}, transformers {run.get('transformers')}, "
        f"onnxruntime {run.get('onnxruntime')}; exported {run.get('exported_at')}",
        *([f"- {run['adapted']} (`edge-lung adapt`; the run's config.json has the intervals)"]
          if run.get("adapted") else []),
    ]
    if "quantization" in run:
        q = run["quantization"]
        lines.append(
            f"- quantisation: {q['mode']}, preset `{q['preset']['name']}` (weights {q['preset']['weight_type']}, "
            f"per-channel {q['preset']['per_channel']}, reduce_range {q['preset']['reduce_range']}), "
            f"{q['excluded_nodes']} nodes kept in float"
        )
    return lines


def _figures(manifest: dict, record: dict) -> list[str]:
    best = manifest.get("metrics") or {}
    val = best.get("val", best)  # train.py records {"epoch": N, "val": report}
    lines = ["", "## Figures", ""]
    if val:
        lines.append(
            f"Run validation (PyTorch{', epoch ' + str(best['epoch']) if 'epoch' in best else ''}): "
            + ", ".join(f"{k} {val[k]:.2f}" for k in ("score", "sensitivity", "specificity") if k in val)
        )
    fp = record["fp32_vs_torch"]
    lines += [
        "",
        f"Parity on {record['num_cycles']} `{record['split']}` cycles:",
        "",
        "| check | value | limit / aim |",
        "| --- | --- | --- |",
        f"| FP32 ONNX vs PyTorch, max abs logit diff | {fp['max_abs_logit_diff']:.2e} | < {fp['limit']:.0e} |",
        f"| FP32 ONNX vs PyTorch, argmax agreement | {fp['argmax_agreement']:.2f}% | 100% |",
        f"| ICBHI Score, PyTorch / FP32 ONNX | {record['scores']['torch']['score']:.2f} / "
        f"{record['scores']['fp32']['score']:.2f} | |",
    ]
    if "int8_vs_fp32" in record:
        lines += _int8_rows(record["int8_vs_fp32"])
    if "e2e" in record:
        e = record["e2e"]
        lines += [
            f"| e2e graph (FP32) vs numpy front end, max abs feature diff | {e['features_max_abs_diff']:.2e} "
            f"| <= {e['features_limit']:.0e} |",
            f"| e2e graph (FP32) vs FP32 ONNX, max abs logit diff | {e['logits_max_abs_diff']:.2e} "
            f"| < {e['logits_limit']:.0e} |",
        ]
    q = record.get("int8_vs_fp32", {})
    if "speed" in q:
        lines += ["", f"**Which file is faster on this machine class:** {speed_advice(q['speed'], q['size_ratio'])}"]
    return lines


def _e2e_files(manifest: dict) -> list[str]:
    """The end-to-end graph and the test vectors, where the export wrote them (issue 16)."""
    if "e2e" not in manifest:
        return []
    e, v = manifest["e2e"], manifest.get("test_vectors", {})
    if "skipped" in e:
        return [f"- no `model.e2e.onnx` and no test vectors: {e['skipped']}"]
    return [
        f"- `{e['file']}`: raw audio in (`audio` float32 {e['input']['shape']} at {e['input']['sample_rate']} Hz, "
        f"cyclic-padded), probabilities out: the front end as ONNX ops; {e['size_bytes'] / 1e6:.1f} MB, "
        f"SHA-256 `{e['sha256']}`",
        f"- `{v.get('file')}`: {v.get('windows')} real windows with both graphs' outputs; "
        "`edge-lung verify MODEL_DIR` re-runs them",
    ]


def _int8_rows(q: dict) -> list[str]:
    speed = q.get("speed")
    timing = [] if speed is None else [
        f"| ms per window, INT8 / FP32 (model only, 1 thread, at export) | {speed['int8_ms_p50']:.2f} / "
        f"{speed['fp32_ms_p50']:.2f} ({speed['int8_over_fp32']:.2f}x) | faster file here: "
        f"{ {'int8': 'INT8', 'fp32': 'FP32', 'same': 'neither'}[speed['faster']]} |",
    ]
    return timing + [
        f"| INT8 vs FP32, argmax agreement | {q['argmax_agreement']:.2f}% | {q['aims']['argmax_agreement']['aim']} |",
        f"| ICBHI Score, INT8 / FP32 (diff) | {q['score_int8']:.2f} / {q['score_fp32']:.2f} "
        f"({q['score_diff']:+.2f}) | loss {q['aims']['score_loss']['aim']} |",
        f"| size INT8 / FP32 | {q['size_int8_bytes'] / 1e6:.1f} MB / {q['size_fp32_bytes'] / 1e6:.1f} MB "
        f"({100 * q['size_ratio']:.1f}%) | {q['aims']['size_ratio']['aim']} |",
    ]


_LIMITS = [
    "",
    "## Limits",
    "- Trained and validated on the data named above only; performance on other stethoscopes, body positions "
    "or populations is unknown until measured (`edge-lung evaluate MODEL_DIR --data DB --split test`).",
    "- The ICBHI Score counts exact classes; see the run's report for the relaxed 2-class figures.",
    "",
]
