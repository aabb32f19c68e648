"""`edge-lung explain RUN FILE`: attention rollout of an AST run over the patch grid, per window, as PNG.

Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", 2020): per
layer, the heads' attention averaged, the residual added as 0.5 A + 0.5 I and rows renormalised;
the layers multiplied from the input up. The row of the two summary tokens the AST pools
(CLS and distillation, averaged as the model pools them) over the patch tokens, reshaped to the
(frequency, time) patch grid, is where the decision's information came from. The windows are
the runtime's own (`WindowStream`, as `classify` and `stream` cut them), judged by the same
signal-quality gate first: a window that gate holds back (silence, NaN, a constant level) gets no
class there, so it gets no rollout here (issue 26). Needs the training
stack (torch); for any exported model, `edge-lung report` draws occlusion saliency instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_lung.config import FeatureConfig
from edge_lung.runtime.artifact.quality import QualityConfig
from edge_lung.runtime.live.stream import assess_window


def rollout(attentions: list) -> np.ndarray:
    """Per-layer attention tensors [B, H, N, N] -> rollout float32[B, N, N] (heads averaged, residual added)."""
    import torch

    joint = None
    for layer in attentions:
        a = layer.float().mean(dim=1)
        a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], device=a.device)
        a = a / a.sum(dim=-1, keepdim=True)
        joint = a if joint is None else a @ joint
    if joint is None:
        raise ValueError("rollout: expected at least one layer of attention, got none")
    return joint.cpu().numpy().astype(np.float32)


def patch_relevance(model, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32[B, T, M] -> (relevance float32[B, freq patches, time patches], probabilities float32[B, C]).

    `model`: an `ASTForAudioClassification` in eager attention (weights are returned only there)."""
    import torch

    from edge_lung.train.model import patch_grid

    with torch.no_grad():
        out = model(input_values=torch.from_numpy(features), output_attentions=True)
    if not out.attentions:
        raise ValueError("explain: the model returned no attention weights (expected eager attention)")
    joint = rollout(list(out.attentions))
    freq, time = patch_grid(model.config)
    summary = joint[:, :2, 2:].mean(axis=1)  # CLS and distillation rows, as the AST pools them
    if summary.shape[1] != freq * time:
        raise ValueError(f"explain: expected {freq} x {time} patches, the attention has {summary.shape[1]} tokens")
    probs = torch.softmax(out.logits.float(), dim=-1).numpy()
    return summary.reshape(-1, freq, time), probs


def recording_windows(path: str | Path, features: FeatureConfig, hop_s: float, min_audio_s: float) -> list:
    """The runtime's windows over a file (`WindowStream`, fed as `classify` feeds it)."""
    from edge_lung.audio import load_audio
    from edge_lung.runtime.live.stream import StreamConfig, WindowStream

    audio, rate = load_audio(path)
    stream = WindowStream(features, StreamConfig(hop_s=hop_s, min_audio_s=min_audio_s), rate)
    windows = []
    for pos in range(0, audio.shape[0], rate):
        windows += stream.accept_waveform(audio[pos : pos + rate])
    return windows + stream.finish()


def gated_windows(path: str | Path, windows: list, quality: QualityConfig | None = None) -> list:
    """The windows the runtime's quality gate passes (defaults: the thresholds export writes); ValueError naming
    the file and the verdicts when none does, or when there is no window at all."""
    if not windows:
        raise ValueError(f"{path}: too short for a window")
    quality = quality or QualityConfig()
    verdicts = [assess_window(w, quality).verdict for w in windows]
    passed = [w for w, v in zip(windows, verdicts, strict=True) if v == "ok"]
    if not passed:
        counts = ", ".join(f"{verdicts.count(v)} {v}" for v in sorted(set(verdicts)))
        raise ValueError(f"{path}: no window passes the signal-quality gate ({counts}); nothing to explain")
    return passed


def explain_recording(
    run_dir: str | Path, audio_path: str | Path, out_png: str | Path, hop_s: float = 1.0, min_audio_s: float = 2.0,
    max_windows: int = 12,
) -> Path:
    """Attention rollout of every window of `audio_path` (first `max_windows`) drawn over its log-mel, one row
    per window, to `out_png`."""
    from edge_lung.features import window_features
    from edge_lung.train.model import load_run, model_kind

    out_png = Path(out_png)
    if not 1 <= max_windows <= 1000:
        raise ValueError(f"--max-windows: expected a count in [1, 1000], got {max_windows}")
    if out_png.suffix.lower() != ".png" or not out_png.parent.is_dir():
        raise ValueError(f"--out {out_png}: expected a .png path in an existing folder")
    wrapped, cfg = load_run(run_dir)
    if model_kind(wrapped) != "transformer":
        raise ValueError(f"{run_dir}: explain draws the attention rollout of an AST, and this run's backbone "
                         f"{cfg.get('backbone')!r} is a CNN (no attention); "
                         "`edge-lung report MODEL_DIR FILE --out DIR` draws occlusion saliency for any exported model")
    model = wrapped.model
    model.set_attn_implementation("eager")
    features = FeatureConfig.from_dict(cfg["features"])
    every = recording_windows(audio_path, features, hop_s, min_audio_s)
    windows = gated_windows(audio_path, every)
    title = Path(audio_path).name + (f" ({len(every) - len(windows)} windows held back by the signal-quality gate)"
                                     if len(windows) < len(every) else "")
    windows = windows[:max_windows]
    feats = np.stack([window_features(w.audio, features) for w in windows])
    parts = [patch_relevance(model, feats[i : i + 4]) for i in range(0, len(feats), 4)]
    relevance, probs = (np.concatenate(x) for x in zip(*parts, strict=True))
    _draw(feats, relevance, probs, windows, cfg["labels"], features, out_png, title)
    return out_png


def _draw(feats, relevance, probs, windows, labels, features: FeatureConfig, path: Path, title: str) -> None:
    from edge_lung.runtime.explain.report_plots import new_figure

    fig = new_figure(10, 1.9 * len(windows) + 0.6)
    axes = fig.subplots(len(windows), 1, squeeze=False)[:, 0]
    width = features.num_frames * features.frame_shift_ms / 1000
    for ax, mel, rel, p, w in zip(axes, feats, relevance, probs, windows, strict=True):
        ax.imshow(mel.T, origin="lower", aspect="auto", extent=(0, width, 0, mel.shape[1]), cmap="gray")
        ax.imshow(rel, origin="lower", aspect="auto", extent=(0, width, 0, mel.shape[1]), cmap="inferno", alpha=0.6)
        best = int(np.argmax(p))
        ax.set_title(f"window {w.index}: {w.start_s:.1f}-{w.end_s:.1f} s{' (padded)' if w.padded else ''}, "
                     f"{labels[best]} {p[best]:.2f}", fontsize=8)
        ax.set_ylabel("mel bin", fontsize=7)
    axes[-1].set_xlabel("time in window (s); colour: attention rollout of the pooled tokens over the patches")
    fig.suptitle(f"{title}: attention rollout", fontsize=9)
    fig.savefig(path, dpi=80)
