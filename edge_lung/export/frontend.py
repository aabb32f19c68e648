"""The Kaldi fbank front end as standard ONNX ops, and the end-to-end graph (raw audio in, decision out).

`frontend_model(cfg)` builds, from the same `FeatureConfig` that `edge_lung.features.window_features`
reads, an ONNX graph `audio float32[batch, window_samples] -> features float32[batch, T, M]` that computes
what numpy does, in the same precision at each step:

    float64 DFT of the DC-free, pre-emphasised, windowed, zero-padded frames (one of two forms, below)
    -> Cast to float32, squares, re^2 + im^2 -> mel matrix (MatMul) -> log floor (Max, Log)
    -> AST normalisation (Sub, Div) -> with `mel_norm="window"`, each bin standardised over the window's
       frames in float64 with the std floored at BIN_STD_FLOOR (`features.standardize_bins`)

Only the FFT bins that some mel filter weighs are computed (20-2000 Hz at 16 kHz: 64 of 257). The DFT is
float64 MatMuls with precomputed bases, in one of two forms (`fft_plan` picks by multiply-adds):

- `direct`: frames (a Gather of gcd(shift, L)-sample blocks) times one basis float64[L, 2 K] in which DC
  removal, pre-emphasis (x[-1] := x[0] in each frame), the window and the zero-padding are folded
  (`dft_basis`). Cheapest for a narrow band (the icbhi-robust front end).
- `fft`: a two-stage split N = na * nb (`FftPlan`): the signal, reshaped to rows of na samples and
  transposed, gives each phase's frames as blocks of rows (no per-sample index); stage 1, per phase, a
  MatMul with the window, the DC term and the bins' twiddles folded in; stage 2 one MatMul over the
  phases; stage 1 computes half the k_b, stage 2 the other half from them (real input). A full-band front
  end needs ~33 k float64 multiply-adds per frame instead of ~200 k.

Why float64 (measured on real ICBHI windows, loud, -60 dB and resampled through 4 kHz; 2-core Xeon VM,
onnxruntime 1.32, one thread; benchmarks/results/e2e-graph/2026-12-08-*.md): float32 rounding in a DFT
is relative to the whole frame's energy, so the quiet bins beside loud ones miss the 1e-4 feature limit:
one float32 MatMul measured 2.0e-4 (8 s / 128 bins), 5.3e-4 (icbhi-robust) and 3.7e-3 (128 bins,
mel_norm window, whose per-bin standardisation stretches a nearly constant bin up to 20x); float64 holds
1.2e-7 (global) and 2.6e-6 (window). Speed per 8 s window on a lightly loaded machine: numpy 3.2-3.4 ms;
the replaced float64 `DFT` op 16.8 ms; one float64 MatMul 1.9 ms at 20-2000 Hz but 9-11 ms full band
(onnxruntime's float64 GEMM is ~4x slower than its float32); the two-stage split ~4 ms full band, as fast
as numpy with the classifier after it (benchmarks/bench_e2e.py --frontends). The runtime runs the graph
with onnxruntime's memory arena (`runtime.e2e.open_e2e_session`): its float64 intermediates (~26 MB per
window) would otherwise be allocated anew for every window.

The window and mel matrix come from `features.fbank_constants` and the frame indices from the same
`FeatureConfig`, so a changed setting changes both front ends. Cyclic padding of short audio is not in the
graph: the input is one whole window (export/README.md).

`end_to_end_model(classifier, cfg)` joins the front end to an exported classifier graph
(`features -> logits`, FP32 or INT8) and adds a Softmax: outputs `probabilities`, `logits` and
the `features` the classifier saw, so a port can check every stage against `test_vectors.npz`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_lung.config import FeatureConfig
from edge_lung.features import BIN_STD_FLOOR, fbank_constants

AUDIO_NAME = "audio"
FEATURES_NAME = "features"
PROBS_NAME = "probabilities"
MIN_OPSET = 13  # Unsqueeze and ReduceSum take their axes as an input from opset 13
E2E_NAME = "model.e2e.onnx"
METHODS = ("auto", "fft", "direct", "direct-f32")
"""How the graph computes the DFT: `auto` (what export ships: `fft` where `fft_plan` finds a split, else
`direct`), two float64 MatMul stages, one float64 MatMul, or one float32 MatMul (misses parity; kept for
benchmarks/bench_e2e.py, which shows why; see the module docstring)."""
_P = "frontend/"  # prefix of every front-end node and tensor name
_FLOAT, _DOUBLE = 1, 11  # onnx.TensorProto.FLOAT / DOUBLE


class _Graph:
    """Collects nodes and initializers with prefixed names; `op` returns the output tensor name."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.values: dict[str, np.ndarray] = {}

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        value = np.asarray(value)
        if _P + name in self.values:  # shared constants (axes, frame starts) are added once
            assert np.array_equal(self.values[_P + name], value), name
        else:
            self.values[_P + name] = value
            self.inits.append(numpy_helper.from_array(value, _P + name))
        return _P + name

    def op(self, op_type: str, inputs: list[str], name: str, out: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        out = out or _P + name
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=_P + name, **attrs))
        return out

    def slice(self, x: str, start: int, end: int, axis: int, name: str) -> str:
        """x[start:end] along `axis`."""
        return self.op("Slice", [x, self.const(f"i{start}", np.array([start], np.int64)),
                                 self.const(f"i{end}", np.array([end], np.int64)),
                                 self.const(f"axis_{axis}", np.array([axis], np.int64))], name)

    def mean(self, x: str, axis: int, name: str) -> str:
        """ReduceMean over one axis, keepdims=1 (its axes became an input in opset 18)."""
        if self.opset >= 18:
            return self.op("ReduceMean", [x, self.const(name + "_axes", np.array([axis], np.int64))], name, keepdims=1)
        return self.op("ReduceMean", [x], name, axes=[axis], keepdims=1)


def fft_bins(cfg: FeatureConfig) -> tuple[int, int]:
    """[first, last + 1) of the rfft bins that some mel filter weights; the others never reach the features."""
    _, mel = fbank_constants(cfg)
    used = np.flatnonzero(mel.any(axis=1))
    return (int(used[0]), int(used[-1]) + 1) if used.size else (0, 1)


@dataclass(frozen=True)
class FftPlan:
    """The two-stage DFT of `_fft_power`: sample n = na * n_b + n_a of a frame, bin k = k_b + nb * k_a.

    `na` divides both the frame shift and `fft_size`, so the frames of one phase n_a are strided rows of the
    signal; `rows` (a multiple of `block`, which divides `hop_rows` = shift / na) cover the frame; `ka` is the
    range of k_a that the used bins need.
    """

    na: int
    nb: int
    hop_rows: int
    block: int
    rows: int
    ka: tuple[int, int]

    @property
    def half(self) -> int:
        """Stage-1 columns k_b = 0 .. nb // 2: Y[n_a, nb - k_b] is e^(-2 pi i n_a / na) conj(Y[n_a, k_b]) (real y),
        so stage 2 gets the other half's bins from the same columns."""
        return self.nb // 2 + 1

    def macs(self) -> int:
        """Multiply-adds per frame of the two float64 stages (stage 1 with its block of frame terms)."""
        return 2 * self.na * (self.rows + self.block) * self.half + 8 * (self.ka[1] - self.ka[0]) * self.na * self.half


def fft_plans(cfg: FeatureConfig) -> list[FftPlan]:
    """Every two-stage split of `cfg`'s DFT: na divides the shift and fft_size, a block (>= 2 rows, so that a
    frame's two terms fit one) divides the shift's rows."""
    lo, hi = fft_bins(cfg)
    n, shift = cfg.fft_size, cfg.frame_shift
    plans = []
    for na in range(2, math.gcd(n, shift) + 1):
        if n % na or shift % na:
            continue
        hop, nb = shift // na, n // na
        for block in (b for b in range(2, hop + 1) if hop % b == 0):
            rows = -(-math.ceil(cfg.frame_length / na) // block) * block
            plans.append(FftPlan(na, nb, hop, block, rows, (lo // nb, (hi - 1) // nb + 1)))
    return plans


def fft_plan(cfg: FeatureConfig, method: str = "auto") -> FftPlan | None:
    """The split with the fewest multiply-adds; with `auto`, None unless it needs under a third of one MatMul's
    (L x 2 K per frame): the stages also move data (a transpose, a Gather of blocks) that one MatMul does not.
    Measured before stage 2 mirrored half the bins (8 s windows, 64 bins, one thread, ms per window, split /
    one MatMul): 20-2000 Hz 2.9 / 1.8, 20-4000 Hz 3.6 / 3.3, 20-6000 Hz 4.1 / 4.9; full band (128 bins)
    about 4.5 / 11; the mirror took the split's multiply-adds down 40% and its time ~5%."""
    plans = sorted(fft_plans(cfg), key=FftPlan.macs)
    if not plans or method not in ("auto", "fft"):
        return None
    lo, hi = fft_bins(cfg)
    return plans[0] if method == "fft" or 3 * plans[0].macs() < cfg.frame_length * 2 * (hi - lo) else None


def dft_basis(cfg: FeatureConfig) -> np.ndarray:
    """float64[frame_length, 2 K]: a raw frame times this gives [Re | Im] of the rfft bins `fft_bins(cfg)` of
    the frame after DC removal, pre-emphasis, window and zero-padding, exactly the linear map of
    `features.frame_chunks` + `np.fft.rfft` (the sign of Im differs; only squares are used)."""
    window, _ = fbank_constants(cfg)
    length, p = cfg.frame_length, cfg.preemphasis
    lo, hi = fft_bins(cfg)
    a = np.eye(length)
    if cfg.remove_dc_offset:
        a -= 1.0 / length  # x - mean(x)
    emph = np.eye(length) - p * np.eye(length, k=-1)  # y[i] = x[i] - p x[i-1] ...
    emph[0, 0] = 1.0 - p  # ... with x[-1] := x[0] (Kaldi)
    a = window[:, None] * (emph @ a)  # frame -> windowed frame (column vectors)
    angle = 2.0 * np.pi * np.outer(np.arange(length), np.arange(lo, hi)) / cfg.fft_size  # zero-padding: rows >= L drop
    return a.T @ np.concatenate([np.cos(angle), np.sin(angle)], axis=1)


def _frames(g: _Graph, audio: str, cfg: FeatureConfig) -> str:
    """audio float32[B, S] -> raw frames float32[B, T, L] (Kaldi snip_edges): a Gather of blocks of
    gcd(shift, L) samples, not of single samples (onnxruntime copies a block per index)."""
    n, length, shift = cfg.num_frames, cfg.frame_length, cfg.frame_shift
    block = math.gcd(shift, length)
    used = (n - 1) * shift + length
    shape = g.const("frame_block_shape", np.array([0, used // block, block], np.int64))
    x = g.op("Reshape", [g.slice(audio, 0, used, 1, "used_audio"), shape], "audio_blocks")
    idx = (np.arange(n)[:, None] * (shift // block) + np.arange(length // block)[None, :]).astype(np.int64)
    blocks = g.op("Gather", [x, g.const("frame_block_index", idx)], "frame_blocks", axis=1)  # [B, T, L / b, b]
    return g.op("Reshape", [blocks, g.const("frame_shape", np.array([0, n, length], np.int64))], "frames")


def _direct_power(g: _Graph, audio: str, cfg: FeatureConfig, dtype: str) -> tuple[str, np.ndarray]:
    """audio -> (squares of [Re | Im] float32[B, T, 2 K], the mel rows for them): one MatMul with `dft_basis`."""
    _, mel = fbank_constants(cfg)
    lo, hi = fft_bins(cfg)
    frames, basis = _frames(g, audio, cfg), dft_basis(cfg)
    if dtype == "float32":
        spec = g.op("MatMul", [frames, g.const("dft_basis", basis.astype(np.float32))], "spectrum_f32")
    else:
        frames = g.op("Cast", [frames], "frames_f64", to=_DOUBLE)  # float32 -> float64 is exact
        spec = g.op("Cast", [g.op("MatMul", [frames, g.const("dft_basis", basis)], "spectrum")], "spectrum_f32",
                    to=_FLOAT)  # float32 squares, as features.log_mel
    return g.op("Mul", [spec, spec], "re_im_squared"), np.concatenate([mel[lo:hi], mel[lo:hi]])


def _signal_terms(g: _Graph, audio: str, cfg: FeatureConfig) -> tuple[str, list[str]]:
    """audio -> (pre-emphasised signal float64[B, S], per-frame terms float64[B, T] for the extra stage-1 rows).

    Per frame Kaldi computes y[i] = (x[i] - m) - p (x[i-1] - m), y[0] = (1 - p)(x[0] - m): the frame of the
    pre-emphasised signal e[n] = x[n] - p x[n-1], minus (1 - p) m, with y[0] off by p (x[s-1] - x[s]), as
    features.frame_chunks computes it. The terms are the frame sums (for m; from block sums and a cumulative
    sum, as there) and, where the window is not 0 at y[0] (hamming), x[s-1] - x[s].
    """
    n, length, shift, p = cfg.num_frames, cfg.frame_length, cfg.frame_shift, cfg.preemphasis
    starts = np.arange(n, dtype=np.int64) * shift
    a = g.op("Cast", [audio], "audio_f64", to=_DOUBLE)
    terms = []
    if cfg.remove_dc_offset:
        block = math.gcd(shift, length)
        used = (n - 1) * shift + length
        shape = g.const("dc_block_shape", np.array([0, used // block, block], np.int64))
        blocks = g.op("Reshape", [g.slice(a, 0, used, 1, "dc_audio"), shape], "dc_blocks")
        sums = g.op("ReduceSum", [blocks, g.const("axis_2", np.array([2], np.int64))], "block_sums", keepdims=0)
        cs = g.op("CumSum", [g.op("Pad", [sums, g.const("cs_pads", np.array([0, 1, 0, 0], np.int64))], "block_sums_0"),
                             g.const("axis_1_scalar", np.array(1, np.int64))], "cumsum")  # cs[i] = sum of blocks < i
        ends = g.op("Gather", [cs, g.const("end_blocks", (starts + length) // block)], "cs_end", axis=1)
        terms.append(g.op("Sub", [ends, g.op("Gather", [cs, g.const("start_blocks", starts // block)], "cs_start",
                                             axis=1)], "frame_sums"))
    if not p:
        return a, terms
    prev = g.op("Concat", [g.slice(a, 0, 1, 1, "first_sample"), g.slice(a, 0, cfg.window_samples - 1, 1, "head")],
                "previous", axis=1)  # x[n-1], x[-1] := x[0]
    e = g.op("Sub", [a, g.op("Mul", [prev, g.const("preemphasis", np.array(p, np.float64))], "scaled_previous")],
             "preemphasised")
    if _first_step(cfg):
        terms.append(g.op("Gather", [g.op("Sub", [prev, a], "step"), g.const("frame_starts", starts)], "first_step",
                          axis=1))
    return e, terms


def _first_step(cfg: FeatureConfig) -> bool:
    """Whether y[0]'s correction p (x[s-1] - x[s]) reaches the spectrum: hanning and povey windows are 0 there."""
    return bool(cfg.preemphasis) and fbank_constants(cfg)[0][0] != 0.0


def _fft_stage_matrices(cfg: FeatureConfig, plan: FftPlan) -> tuple[np.ndarray, np.ndarray]:
    """Stage 1 float64[2, na, rows + block, half] (Re, Im) and stage 2 float64[4 KA, 2 na] of `plan`.

    Stage 1, per phase n_a: Y[n_a, k_b] = sum over n_b of y[n] e^(-2 pi i n k_b / N), n = na n_b + n_a, with
    the window folded in (0 from n = L on: the zero-padding); its last `block` rows weigh the frame's terms
    (`_signal_terms`: frame sum -> -(1 - p) / L times the window's own sum; first step -> p w[0], phase 0).
    Stage 2, rows [Re direct, Re mirrored, Im direct, Im mirrored] (k_a each): X[k_b + nb k_a] = sum over
    n_a of Y[n_a, k_b] e^(-2 pi i n_a k_a / na), and X[nb (k_a + 1) - k_b] = the same of conj(Y[n_a, k_b])
    e^(-2 pi i n_a (k_a + 1) / na) (`FftPlan.half`).
    """
    window, _ = fbank_constants(cfg)
    na, length, p = plan.na, cfg.frame_length, cfg.preemphasis
    n = na * np.arange(plan.rows)[None, :] + np.arange(na)[:, None]  # [na, rows]
    w = np.where(n < length, window[np.minimum(n, length - 1)], 0.0)
    ang = 2 * np.pi * n[:, :, None] * np.arange(plan.half)[None, None, :] / cfg.fft_size
    stage1 = np.zeros((2, na, plan.rows + plan.block, plan.half))
    stage1[0, :, : plan.rows] = w[:, :, None] * np.cos(ang)
    stage1[1, :, : plan.rows] = -w[:, :, None] * np.sin(ang)
    if cfg.remove_dc_offset:
        stage1[:, :, plan.rows] = -(1.0 - p) / length * stage1[:, :, : plan.rows].sum(axis=2)
    if _first_step(cfg):
        stage1[0, 0, plan.rows + int(cfg.remove_dc_offset)] = p * window[0]
    th = 2 * np.pi * np.outer(np.arange(*plan.ka), np.arange(na)) / na
    c, s = np.cos(th), np.sin(th)
    th = th + 2 * np.pi * np.arange(na)[None, :] / na  # k_a + 1
    cm, sm = np.cos(th), np.sin(th)
    return stage1, np.block([[c, s], [cm, -sm], [-s, c], [-sm, -cm]])


def _fft_bins_of(plan: FftPlan) -> np.ndarray:
    """int[2 KA, half]: the rfft bin each (direct / mirrored, k_a) row and k_b column of stage 2 gives, -1 where
    a mirrored one repeats a direct one (k_b = 0, k_b = nb / 2)."""
    ka = np.arange(*plan.ka)[:, None]
    kb = np.arange(plan.half)[None, :]
    mirrored = np.where((kb > 0) & (2 * kb < plan.nb), plan.nb * (ka + 1) - kb, -1)
    return np.concatenate([kb + plan.nb * ka, mirrored])


def _fft_power(g: _Graph, audio: str, cfg: FeatureConfig, plan: FftPlan) -> tuple[str, np.ndarray]:
    """audio -> (squares of [Re, Im] float32[B, T, 2 KA nb], their mel rows), by `plan`'s stages in float64.

    The signal as rows of na samples, transposed, is [B, na, rows] by phase; a frame is q = rows / hop_rows
    consecutive blocks of hop_rows rows of each phase, and one more block holding its terms: one Gather of
    blocks, no per-sample index.
    """
    _, mel = fbank_constants(cfg)
    lo, hi = fft_bins(cfg)
    n, na, nb, b = cfg.num_frames, plan.na, plan.half, plan.block  # nb: stage-1 columns
    ka, step = plan.ka[1] - plan.ka[0], plan.hop_rows // b
    e, terms = _signal_terms(g, audio, cfg)
    rows_total = (n - 1) * plan.hop_rows + plan.rows  # signal rows of na samples that the frames read
    extra = rows_total * na - cfg.window_samples  # > 0: read only where the window is 0
    if extra > 0:
        e = g.op("Pad", [e, g.const("tail_pads", np.array([0, 0, 0, extra], np.int64))], "padded_signal")
    elif extra < 0:
        e = g.slice(e, 0, rows_total * na, 1, "read_signal")
    x = g.op("Reshape", [e, g.const("row_shape", np.array([0, rows_total, na], np.int64))], "signal_rows")
    x = g.op("Transpose", [x], "signal_phases", perm=[0, 2, 1])  # [B, na, rows_total]
    x = g.op("Reshape", [x, g.const("block_shape", np.array([0, na, rows_total // b, b], np.int64))], "signal_blocks")
    idx = np.arange(n)[:, None] * step + np.arange(plan.rows // b)[None, :]
    if terms:  # [B, T] each -> one block per frame [B, na, T, b] after the signal's
        t = g.op("Concat", [g.op("Unsqueeze", [t, g.const("axis_2", np.array([2], np.int64))], f"{t[len(_P):]}_col")
                            for t in terms], "frame_terms", axis=2)
        t = g.op("Pad", [t, g.const("term_pads", np.array([0, 0, 0, 0, 0, b - len(terms)], np.int64))], "term_block")
        t = g.op("Expand", [g.op("Unsqueeze", [t, g.const("axis_1", np.array([1], np.int64))], "term_block_4d"),
                            g.const("phases", np.array([1, na, 1, 1], np.int64))], "term_blocks")
        x = g.op("Concat", [x, t], "signal_and_terms", axis=2)
        idx = np.concatenate([idx, rows_total // b + np.arange(n)[:, None]], axis=1)
    frames = g.op("Gather", [x, g.const("block_index", idx.astype(np.int64))], "frame_blocks", axis=2)
    frames = g.op("Reshape", [frames, g.const("frames_shape", np.array([0, 1, na, n, idx.shape[1] * b], np.int64))],
                  "phase_frames")  # [B, 1, na, T, K]: broadcast against stage 1's [2, na, K, nb]
    stage1, stage2 = _fft_stage_matrices(cfg, plan)
    y = g.op("MatMul", [frames, g.const("stage1", stage1[:, :, : idx.shape[1] * b])], "stage1_out")
    y = g.op("Reshape", [y, g.const("stage2_in_shape", np.array([0, 2 * na, n * nb], np.int64))], "stage2_in")
    spec = g.op("Cast", [g.op("MatMul", [g.const("stage2", stage2), y], "spectrum")], "spectrum_f32", to=_FLOAT)
    sq = g.op("Reshape", [g.op("Mul", [spec, spec], "re_im_squared"),
                          g.const("parts_shape", np.array([0, 2, 2 * ka * n * nb], np.int64))], "re_im_parts")
    # re^2 + im^2 in float32 (one rounding, as features.log_mel): a [1, 2] MatMul is one pass, ReduceSum is slower
    power = g.op("MatMul", [g.const("re_plus_im", np.ones((1, 2), np.float32)), sq], "power")
    power = g.op("Reshape", [power, g.const("power_shape", np.array([0, 2 * ka, n, nb], np.int64))], "power_4d")
    power = g.op("Transpose", [power], "power_by_frame", perm=[0, 2, 1, 3])
    power = g.op("Reshape", [power, g.const("bins_shape", np.array([0, n, 2 * ka * nb], np.int64))], "power_bins")
    k = _fft_bins_of(plan).reshape(-1)
    return power, np.where(((k >= lo) & (k < hi))[:, None], mel[np.clip(k, 0, mel.shape[0] - 1)], 0.0)


def _log_mel(g: _Graph, power: str, mel_rows: np.ndarray, cfg: FeatureConfig, out: str | None) -> str:
    """Power float32[B, T, K'] and its mel rows -> AST-normalised log-mel float32[B, T, M] (named `out` if given)."""
    mel_power = g.op("MatMul", [power, g.const("mel_matrix", mel_rows.astype(np.float32))], "mel_power")
    floored = g.op("Max", [mel_power, g.const("log_floor", np.array(cfg.log_floor, np.float32))], "floored")
    logmel = g.op("Log", [floored], "log_mel")
    centred = g.op("Sub", [logmel, g.const("norm_mean", np.array(cfg.norm_mean, np.float32))], "centred")
    return g.op("Div", [centred, g.const("norm_scale", np.array(2.0 * cfg.norm_std, np.float32))], "normalised",
                out=out)


def _standardize_bins(g: _Graph, x: str) -> str:
    """float32[B, T, M] -> each bin to mean 0 / std 0.5 over T, std floored, in float64 (`standardize_bins`)."""
    x64 = g.op("Cast", [x], "normalised_f64", to=_DOUBLE)
    dev = g.op("Sub", [x64, g.mean(x64, 1, "bin_mean")], "bin_deviation")
    std = g.op("Sqrt", [g.mean(g.op("Mul", [dev, dev], "bin_deviation_sq"), 1, "bin_variance")], "bin_std")
    floored = g.op("Max", [std, g.const("bin_std_floor", np.array(BIN_STD_FLOOR, np.float64))], "bin_std_floored")
    scale = g.op("Mul", [floored, g.const("two", np.array(2.0, np.float64))], "bin_scale")
    return g.op("Div", [dev, scale], "standardised_f64")


def frontend_graph(cfg: FeatureConfig, opset: int, out: str = FEATURES_NAME,
                   method: str = "auto") -> tuple[list, list]:
    """(nodes, initializers) of the front end: tensor `audio` [B, window_samples] -> `out` [B, T, M].

    Every name but the input and `out` starts with `frontend/`. `method`: see `METHODS`.
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset: the front end is built for opset >= {MIN_OPSET}, got {opset}")
    if cfg.front_end != "fbank":
        raise ValueError(f"front_end: the ONNX front end computes 'fbank' features, got {cfg.front_end!r}")
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    g = _Graph(opset)
    plan = fft_plan(cfg, method)
    if method == "fft" and plan is None:
        raise ValueError(f"method 'fft': fft_size {cfg.fft_size} and frame shift {cfg.frame_shift} have no split")
    power, mel_rows = _fft_power(g, AUDIO_NAME, cfg, plan) if plan else \
        _direct_power(g, AUDIO_NAME, cfg, "float32" if method == "direct-f32" else "float64")
    window_norm = cfg.mel_norm == "window"
    x = _log_mel(g, power, mel_rows, cfg, None if window_norm else out)
    if window_norm:
        g.op("Cast", [_standardize_bins(g, x)], "standardised", out=out, to=_FLOAT)
    return g.nodes, g.inits


def _io(cfg: FeatureConfig) -> tuple[Any, Any]:
    from onnx import TensorProto, helper

    audio = helper.make_tensor_value_info(AUDIO_NAME, TensorProto.FLOAT, ["batch", cfg.window_samples])
    feats = helper.make_tensor_value_info(FEATURES_NAME, TensorProto.FLOAT, ["batch", cfg.num_frames, cfg.num_mel_bins])
    return audio, feats


def frontend_model(cfg: FeatureConfig, opset: int = 17, method: str = "auto") -> Any:
    """The front end alone as an ONNX ModelProto (audio -> features), checked."""
    import onnx
    from onnx import helper

    nodes, inits = frontend_graph(cfg, opset, method=method)
    audio, feats = _io(cfg)
    graph = helper.make_graph(nodes, "edge_lung_frontend", [audio], [feats], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def end_to_end_model(classifier: Any, cfg: FeatureConfig, method: str = "auto") -> Any:
    """ModelProto audio[B, S] -> probabilities[B, C], logits[B, C], features[B, T, M] from a classifier
    ModelProto (one input `features`, first output the logits); its metadata and opsets are kept."""
    import onnx
    from onnx import helper

    g = classifier.graph
    if [i.name for i in g.input] != [FEATURES_NAME]:
        raise ValueError(f"classifier graph: expected one input {FEATURES_NAME!r}, got {[i.name for i in g.input]}")
    opset = next((o.version for o in classifier.opset_import if o.domain in ("", "ai.onnx")), 0)
    nodes, inits = frontend_graph(cfg, opset, method=method)
    taken = {n for node in g.node for n in node.output} | {i.name for i in g.initializer}
    clash = sorted(taken & ({o for node in nodes for o in node.output} | {i.name for i in inits}))
    if clash:
        raise ValueError(f"classifier graph: tensor names clash with the front end's: {clash[:5]}")
    logits = g.output[0]
    audio, feats = _io(cfg)
    probs = onnx.ValueInfoProto(name=PROBS_NAME)
    probs.type.CopyFrom(logits.type)
    softmax = helper.make_node("Softmax", [logits.name], [PROBS_NAME], name="head/softmax", axis=-1)
    graph = helper.make_graph(nodes + list(g.node) + [softmax], "edge_lung_e2e", [audio], [probs, logits, feats],
                              initializer=inits + list(g.initializer), value_info=list(g.value_info))
    model = helper.make_model(graph, opset_imports=list(classifier.opset_import), ir_version=classifier.ir_version,
                              producer_name="edge-lung")
    model.functions.extend(classifier.functions)
    model.metadata_props.extend(classifier.metadata_props)
    onnx.checker.check_model(model, full_check=True)
    return model
