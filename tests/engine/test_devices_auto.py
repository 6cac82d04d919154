"""The automatic batch size."""

from engine.config import RunConfig, TrainConfig
from engine.train.runtime import auto_batch_size


def test_automatic_batch_size_is_the_default_and_fits_the_device_and_the_data():
    assert RunConfig().train.batch_size == 0 and RunConfig(train=TrainConfig(batch_size=0)).validate()
    assert auto_batch_size("cpu", 10_000) == 16
    assert auto_batch_size("cuda", 10_000) == 64
    assert auto_batch_size("cuda", 100) == 25  # a quarter of a small dataset: several steps per epoch
    assert auto_batch_size("cpu", 6) == 4
