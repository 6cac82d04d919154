"""Training a model on the user's pictures.

``fit(config, on_event, stop) -> RunResult`` runs the experiment a RunConfig describes; ``resume(run_dir)`` continues
a stopped, failed or killed run from its checkpoint. Both report plain-data events (engine.events) and never raise
for a problem the user can fix. ``save_weights`` writes a model's weights as safetensors, ``resolve_device`` reads a
device setting for training, evaluation and prediction alike, and ``available_devices`` lists the choices.

Inside: trainer (the conductor), loop (epochs and steps), checkpoint (the run folder, checkpoints, resuming), runtime
(device, precision, threads), prefix and fastpath (training on a frozen prefix's outputs computed once), strategies
(which stages train, at which learning rates), optim (optimizer and schedule), activity (LayerActivity events).
"""

from engine.train.checkpoint import save_weights
from engine.train.runtime import auto_batch_size, available_devices, resolve_device
from engine.train.trainer import RunResult, Trainer, fit, result_json, resume

__all__ = ["RunResult", "Trainer", "auto_batch_size", "available_devices", "fit", "resolve_device", "result_json",
           "resume", "save_weights"]
