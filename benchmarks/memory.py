"""Peak and resident memory of a 20-cell grid, cell by cell: does memory grow from cell to cell?

A grid of 10 seeds × 2 defenses (20 trained models, each attacked by FGSM) runs in this process; after each
model column (one seed: its two models and their attacks) the script reads the process's resident set
(``VmRSS``) and peak (``VmHWM``) from ``/proc/self/status``. The first column pays for imports, data and
allocator warm-up; a leak shows as RSS that keeps growing after it. The bound checked: RSS after the last
column ≤ RSS after the second column + 10 % (printed as a ratio, with the verdict). The demo's peak RSS is
read the same way with ``--grid demo`` (minutes on 2 cores). Linux only (``/proc``).

Usage: ``python -m benchmarks.memory [--grid tiny|demo] [--outputs DIR]``.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from defense.grid import load_grid
from defense.runner import run_grid

TINY20 = """
name: tiny
train: demo
seeds: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
grid:
  dataset: [gm_instruments]
  frontend: [stft_db_small]
  victim: [resnet56]
  defense: [none, fgsm_mix]
  attack: [fgsm]
attack_overrides:
  fgsm: {domain: representation, norm: l2}
evaluation:
  n_examples: 6
  eps_max: {representation: {l2: 3.0}}
  n_budgets: 3
  n_boot: 200
  batch_size: 8
  unbounded_steps: 5
  wavs: 0
overrides:
  dataset.classes: [flute, hi_hat]
  dataset.clips_per_class: 6
  dataset.clip_seconds: 0.25
  dataset.sample_rate: 8000
  dataset.split.test_fraction: 0.34
  frontend.n_fft: 128
  frontend.hop: 64
  train.epochs: 1
  train.batch_size: 8
"""


def memory_mb() -> tuple[float, float]:
    """``(resident, peak resident)`` of this process in MiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="tiny", help="tiny (20 cells, built in) or an experiment name")
    parser.add_argument("--outputs", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        outputs = args.outputs or Path(tmp)
        source = args.grid
        if args.grid == "tiny":
            source = Path(tmp) / "tiny.yaml"
            source.write_text(TINY20)
        grid = load_grid(source)
        per_column = len(grid.axes["defense"]) * (1 + len(grid.axes["attack"]))  # progress steps per column
        samples: list[tuple[float, float]] = []
        steps = {"n": 0}

        def progress(message: str, advance: bool = True) -> None:
            if advance:
                steps["n"] += 1
                if steps["n"] % per_column == 0:
                    samples.append(memory_mb())
                    print(f"column {len(samples):2d}: RSS {samples[-1][0]:8.1f} MiB, peak {samples[-1][1]:8.1f} MiB",
                          flush=True)

        run_grid(grid, outputs=outputs, progress=progress)
    rss = [s[0] for s in samples]
    print(f"cells: {len(samples) * len(grid.axes['defense'])}; peak RSS {max(s[1] for s in samples):.1f} MiB")
    if len(rss) >= 3:
        ratio = rss[-1] / rss[1]
        print(f"RSS last / second column: {ratio:.3f} (bound 1.10): {'ok' if ratio <= 1.10 else 'GROWS'}")


if __name__ == "__main__":
    main()
