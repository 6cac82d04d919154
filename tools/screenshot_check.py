"""Render Help > Check this computer to PNG, as a person sees it (run under Xvfb, or offscreen).

    python tools/screenshot_check.py docs/check-computer.png
    python tools/screenshot_check.py docs/check-computer-problem.png --example-problem

--example-problem shows what the dialog says on a computer with an NVIDIA GPU and a PyTorch without CUDA (the most
common install mistake), by making this computer look like one: nvidia-smi's answer and torch.version.cuda replaced.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("png")
    parser.add_argument("--example-problem", action="store_true")
    args = parser.parse_args()

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from engine import check

    if args.example_problem:
        import torch

        check._nvidia_smi = lambda: {"gpus": ["NVIDIA GeForce RTX 4090"], "driver": "550.54", "cuda": "12.4"}
        torch.version.cuda = None
    app = QApplication(sys.argv[:1])
    from gui.check import CheckDialog

    dialog = CheckDialog()
    dialog.show()

    def grab() -> None:
        if dialog.report is None:
            QTimer.singleShot(200, grab)
            return
        QTimer.singleShot(300, lambda: (dialog.grab().save(args.png), app.quit()))

    grab()
    app.exec()
    dialog.jobs.shutdown()
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
