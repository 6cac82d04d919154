"""Python's garbage collector runs on the GUI thread only.

Left automatic, a collection runs in whichever thread happens to allocate; when it frees Qt objects left in reference
cycles (old widgets), their C++ destructors run on that thread: a picture-checking thread once deadlocked inside one
(Qt's destructor waiting for the interpreter lock the collector held). pyqtgraph's GarbageCollector turns automatic
collection off and collects from a timer on the GUI thread instead, as Qt requires (a library class, extended here by
one rule): while a run trains, only the young generations are collected, because a full collection walks every object
of PyTorch, Qt and timm and froze the window for 100-300 ms; the full ones resume when the run ends. Training threads
also keep their long-lived objects out of full collections (gui.steps.train.worker, gc.freeze).
"""

from __future__ import annotations

import gc

_collector = None


def install() -> None:
    """Collect garbage from a 1 s timer on the calling (GUI) thread, from now on; once per process."""
    global _collector
    if _collector is None:
        from pyqtgraph.util.garbage_collector import GarbageCollector

        class Collector(GarbageCollector):
            training = False

            def check(self) -> None:
                if not self.training:
                    super().check()
                    return
                young, middle, _ = gc.get_count()
                if young > self.threshold[0]:
                    gc.collect(0)
                    if middle > self.threshold[1]:
                        gc.collect(1)

        _collector = Collector(interval=1.0)


def training(active: bool) -> None:
    """A run trains (True) or has ended (False): full collections wait until it ends."""
    if _collector is not None:
        _collector.training = active
