"""What a training run shows on the terminal: a rich progress bar (loss, lr, samples/s), one line per
epoch with the validation figures, and the selected epoch's report at the end. Silent when disabled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_lung.metrics import format_scores


class Reporter:
    """A rich progress bar (loss, lr, samples/s) and per-epoch lines; silent when disabled."""

    def __init__(self, enabled: bool, console: Any = None) -> None:
        self.enabled = enabled
        self.console = console
        self.progress = None
        self.task = None
        self._epoch = 0

    def start(self, run_dir: Path, run_config: dict[str, Any], steps: int, first: int, last: int) -> None:
        """Print the run's headline and start the bar over epochs `first`..`last` of `steps` steps each."""
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = self.console or Console()
        p = run_config["parameters"]
        self.console.print(
            f"[bold]Training[/] {run_config['backbone']} + {run_config['adapter']} adapter, "
            f"{run_config['train']['optimizer']} lr {run_config['lr']:.2g}, {run_config['train_cycles']} train / "
            f"{run_config['val_cycles']} val cycles, trainable {p['trainable']:,} of {p['total']:,} "
            f"({p['trainable_percent']:.2f}%) -> {run_dir}"
        )
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}/" + str(last)), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}  {task.fields[sps]:.1f} samples/s"),
            TimeElapsedColumn(), console=self.console, transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=steps * (last - first + 1), epoch=first, loss=0.0, lr=0.0,
                                           sps=0.0)
        self._epoch = first

    def step(self, loss: float, lr: float, sps: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, loss=loss, lr=lr, sps=sps, epoch=self._epoch)

    def epoch(self, entry: dict[str, Any]) -> None:
        """One line per finished epoch: loss, validation Sp/Se/Score, and whether it was selected."""
        if self.progress is None:
            return
        v = entry["val"]
        mark = "  [green]* selected[/]" if entry.get("selected") else ""
        self.progress.console.print(
            f"epoch {entry['epoch']:3d}  loss {entry['train_loss']:.4f}  val Sp {v['specificity']:5.1f} "
            f"Se {v['sensitivity']:5.1f} Score {v['score']:5.1f}  ({entry['samples_per_s']:.1f} samples/s){mark}"
        )
        self._epoch = entry["epoch"] + 1

    def finish(self, run_dir: Path, run_config: dict[str, Any]) -> None:
        """Stop the bar and print the selected epoch's validation report."""
        if self.progress is None:
            return
        self.progress.stop()

        best = run_config["best"]
        self.console.print(f"[bold]Done[/] in {run_config.get('train_seconds', 0):.0f} s. Selected epoch "
                           f"{best['epoch']} on the validation split:")
        self.console.print(format_scores(best["val"], tuple(run_config["labels"])), highlight=False)
        self.console.print(f"Run directory: {run_dir}  (next: edge-lung evaluate {run_dir} --split test)")
