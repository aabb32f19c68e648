"""Training cost figures: one SAM step against one AdamW step, and training samples/s per size.

    .venv/bin/python benchmarks/bench_train.py                      # CPU: ratio + tiny/small/base
    .venv/bin/python benchmarks/bench_train.py --sizes tiny --repeats 5
    .venv/bin/python benchmarks/bench_train.py --gpu-epoch DB_DIR   # CUDA: one epoch of base + SAM + adapters

The SAM/AdamW ratio is measured on the same batch and the same model (median of `--repeats`
steps after a warm-up step); the aim is at most 2.1x (two forward/backward passes plus the
perturbation). Samples/s is training throughput (forward + backward + step) with each size's
default adapter ("none" from scratch) and with LungAdapter, batch `--batch`, on the features
the model really reads (798 x 128). Figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from edge_lung.config import LABELS, FeatureConfig
from edge_lung.train.loop import train_step
from edge_lung.train.model import LogitsModel, attach_adapter, count_parameters, load_backbone
from edge_lung.train.sam import SAM


def _model(size: str, adapter: str, device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    base = load_backbone(size, FeatureConfig(), len(LABELS))
    return LogitsModel(attach_adapter(base, adapter)).to(device).train()


def _batch(n: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = FeatureConfig()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, cfg.num_frames, cfg.num_mel_bins, generator=g)
    return x.to(device), (torch.arange(n) % len(LABELS)).to(device)


def _time_steps(net: torch.nn.Module, opt: torch.optim.Optimizer, x, y, repeats: int, device: str) -> float:
    loss_fn = torch.nn.CrossEntropyLoss()
    train_step(net, opt, x, y, loss_fn, grad_clip=1.0)  # warm-up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        train_step(net, opt, x, y, loss_fn, grad_clip=1.0)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sam_vs_adamw(size: str, adapter: str, batch: int, repeats: int, device: str) -> dict:
    """Median seconds per step for AdamW and SAM(AdamW) on the same batch and initial weights."""
    x, y = _batch(batch, device)
    out = {"size": size, "adapter": adapter, "batch": batch}
    for name in ("adamw", "sam"):
        net = _model(size, adapter, device)
        params = [p for p in net.parameters() if p.requires_grad]
        opt: torch.optim.Optimizer = torch.optim.AdamW(params, lr=1e-4)
        if name == "sam":
            opt = SAM(opt, rho=0.05)
        out[f"{name}_s"] = _time_steps(net, opt, x, y, repeats, device)
    out["ratio"] = out["sam_s"] / out["adamw_s"]
    return out


def throughput(size: str, adapter: str, batch: int, repeats: int, device: str) -> dict:
    """Training samples/s with AdamW (SAM costs `ratio` times more per step)."""
    net = _model(size, adapter, device)
    trainable, total = count_parameters(net)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    x, y = _batch(batch, device)
    sec = _time_steps(net, opt, x, y, repeats, device)
    return {"size": size, "adapter": adapter, "batch": batch, "step_s": sec, "samples_per_s": batch / sec,
            "trainable": trainable, "total": total}


def gpu_epoch(db_dir: str, out: str, batch: int) -> dict:
    """One epoch of base + LungAdapter + SAM on CUDA (bf16 autocast): samples/s and peak memory."""
    from edge_lung.train.config import TrainConfig
    from edge_lung.train.loop import train

    torch.cuda.reset_peak_memory_stats()
    cfg = TrainConfig(data=db_dir, out=out, backbone="base", adapter="lung", optimizer="sam", epochs=1,
                      batch_size=batch, device="cuda", progress=True)
    run = train(cfg)
    history = json.loads((run / "metrics.json").read_text())
    return {"samples_per_s": history[-1]["samples_per_s"], "epoch_s": history[-1]["seconds"],
            "peak_gpu_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
            "device": torch.cuda.get_device_name(), "batch": batch}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="tiny,small,base", help="comma-separated sizes for samples/s")
    ap.add_argument("--batch", type=int, default=4, help="batch for the timings")
    ap.add_argument("--repeats", type=int, default=3, help="timed steps per figure (median)")
    ap.add_argument("--ratio-size", default="tiny", help="model of the SAM/AdamW comparison")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--gpu-epoch", metavar="DB_DIR", help="also run one epoch of base+SAM+adapters on CUDA")
    ap.add_argument("--gpu-out", default="runs/bench-gpu-epoch", help="run directory for --gpu-epoch")
    ap.add_argument("--json", dest="json_path", help="write the figures as JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    results: dict = {"threads": torch.get_num_threads(), "device": args.device, "torch": torch.__version__}

    for adapter in ("none", "lung"):
        r = sam_vs_adamw(args.ratio_size, adapter, args.batch, args.repeats, args.device)
        results.setdefault("sam_vs_adamw", []).append(r)
        print(f"SAM vs AdamW, {r['size']} + {adapter}, batch {r['batch']}: AdamW {r['adamw_s'] * 1e3:.0f} ms/step, "
              f"SAM {r['sam_s'] * 1e3:.0f} ms/step, ratio {r['ratio']:.2f}x (aim <= 2.1x)", flush=True)

    for size in [s for s in args.sizes.split(",") if s]:
        for adapter in ("none", "lung"):
            r = throughput(size, adapter, args.batch, args.repeats, args.device)
            results.setdefault("throughput", []).append(r)
            print(f"{size:>5} + {adapter:<4} ({r['trainable']:,} of {r['total']:,} trainable): "
                  f"{r['samples_per_s']:.2f} samples/s with AdamW on {args.device} "
                  f"({results['threads']} threads, batch {r['batch']})", flush=True)

    if args.gpu_epoch:
        if not torch.cuda.is_available():
            raise SystemExit("--gpu-epoch: no CUDA device available to torch")
        r = gpu_epoch(args.gpu_epoch, args.gpu_out, max(args.batch, 16))
        results["gpu_epoch"] = r
        print(f"GPU epoch, base + LungAdapter + SAM (bf16) on {r['device']}: {r['samples_per_s']:.1f} samples/s, "
              f"peak GPU memory {r['peak_gpu_mem_gib']:.2f} GiB", flush=True)
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
