"""The demo project's accuracy over several seeds, so that the README states a range rather than one lucky run.

    python bench/bench_demo.py [--seeds 5]

Trains the demo exactly as the window's demo project does (engine.project.demo.demo_config), changing only the
training seed (the split stays the demo's), and prints the best and the last validation accuracy of each run and
their ranges.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.project import runs  # noqa: E402
from engine.project.demo import demo_config, ensure_demo_dataset  # noqa: E402
from engine.train.trainer import fit  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pictures = ensure_demo_dataset(tmp)
        best, last = [], []
        for seed in range(args.seeds):
            config = demo_config(pictures, Path(tmp) / "runs")
            config = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed))
            start = time.perf_counter()
            result = fit(config)
            metrics = runs.read_metrics(result.run_dir)
            best.append(result.best_val_acc)
            last.append(metrics[-1]["val_acc"])
            print(f"seed {seed}: {result.status}, best {best[-1]:.1%} (epoch {result.best_epoch}), "
                  f"last {last[-1]:.1%}, {time.perf_counter() - start:.0f} s", flush=True)
    for name, values in (("best", best), ("last", last)):
        print(f"{name}: {min(values):.1%} to {max(values):.1%}, mean {statistics.mean(values):.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
