"""Start-up time: from launching Transfer Studio to a painted window whose event loop answers.

    python bench/bench_startup.py [--runs 5]                      the app from this source folder (offscreen)
    python bench/bench_startup.py --platform xcb                  the same in a real X server (run under Xvfb)
    python bench/bench_startup.py --command dist/Transfer\\ Studio/transfer-studio   any launcher, e.g. the bundle,
                                                                  under X: until its window is mapped and painted

Each run is a new process with an empty home (first start: the welcome page, no settings, no draft), timed from just
before the process is started:

- ``painted``: the main window's first paint event has been handled;
- ``responsive``: after that paint, an event posted to the event loop has been processed (the window answers input).

The first run pays for a cold disk cache after a build or a reboot; the median of the others is the everyday start.
With --command the time is measured from outside: until ``xdotool`` sees a visible window named "Transfer Studio"
and a screenshot of it is no longer a single colour.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

DRIVER = r"""
import os, sys, time, json
t0 = float(os.environ["TS_BENCH_T0"])
sys.path.insert(0, os.environ["TS_BENCH_REPO"])
from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication
marks = {}

class Watch(QObject):
    def eventFilter(self, obj, event):
        if "painted" not in marks and event.type() == QEvent.Type.Paint and obj is window:
            marks["painted"] = time.time() - t0
            QTimer.singleShot(0, answered)
        return False

def answered():
    marks["responsive"] = time.time() - t0
    print(json.dumps(marks), flush=True)
    window.close()
    QApplication.instance().quit()

from gui.app import open_main_window
marks["imported"] = time.time() - t0
window = None
app = QApplication.instance() or QApplication(sys.argv[:1])
watch = Watch()
app.installEventFilter(watch)
window = open_main_window(sys.argv[:1])
marks["shown"] = time.time() - t0
QTimer.singleShot(60_000, app.quit)
app.exec()
"""


def fresh_env(home: Path, platform: str | None) -> dict:
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"),
           "XDG_DATA_HOME": str(home / "data"), "XDG_CACHE_HOME": str(home / "cache")}
    if platform:
        env["QT_QPA_PLATFORM"] = platform
    return env


def run_python(platform: str | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="ts-startup-") as home:
        env = fresh_env(Path(home), platform)
        env.update(TS_BENCH_REPO=str(REPO))
        env["TS_BENCH_T0"] = repr(time.time())
        done = subprocess.run([sys.executable, "-c", DRIVER], capture_output=True, text=True, env=env, timeout=120)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"the window did not start: {done.stderr[-2000:]}")
    return json.loads(lines[-1])


def run_command(command: list[str]) -> dict:
    if not os.environ.get("DISPLAY") or not shutil.which("xdotool") or not shutil.which("import"):
        raise SystemExit("--command needs an X display (run under xvfb-run), xdotool and ImageMagick's import.")
    with tempfile.TemporaryDirectory(prefix="ts-startup-") as home:
        env = fresh_env(Path(home), None)
        t0 = time.time()
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        marks = {}
        try:
            deadline = t0 + 180
            window = ""
            while time.time() < deadline and not window:
                found = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", "Transfer Studio"],
                                       capture_output=True, text=True)
                window = found.stdout.split()[0] if found.stdout.split() else ""
                if not window:
                    time.sleep(0.05)
            if not window:
                raise SystemExit("no window named Transfer Studio appeared within 180 s")
            marks["mapped"] = time.time() - t0
            while time.time() < deadline:
                shot = subprocess.run(["import", "-window", window, "-format", "%k", "info:"], capture_output=True,
                                      text=True)
                if shot.stdout.strip().isdigit() and int(shot.stdout.strip()) > 1:  # more than one colour: painted
                    marks["painted"] = time.time() - t0
                    break
                time.sleep(0.05)
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
    return marks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--platform", default="offscreen", help="Qt platform for the source app: offscreen or xcb")
    parser.add_argument("--command", nargs="+", help="time this launcher instead (under X)")
    args = parser.parse_args()
    results = []
    for i in range(args.runs):
        marks = run_command(args.command) if args.command else run_python(args.platform)
        results.append(marks)
        print(f"run {i + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in marks.items()), flush=True)
    keys = [k for k in ("painted", "responsive") if all(k in r for r in results)]
    rest = results[1:] or results
    what = " ".join(args.command) if args.command else f"python main.py (QT_QPA_PLATFORM={args.platform})"
    print(f"{what}: " + "; ".join(
        f"{k}: first run {results[0][k]:.2f} s, median of the others {statistics.median(r[k] for r in rest):.2f} s "
        f"(min {min(r[k] for r in rest):.2f}, max {max(r[k] for r in rest):.2f})" for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
