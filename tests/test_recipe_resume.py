"""Resume stays bit-identical with each recipe option on: the schedule's position, clipping,
the fresh-list stream's state and the patience counters all come back from the checkpoint.

The first run is interrupted by construction: a tracker raises at the evaluation after a
checkpoint, before anything else is written (as a kill there would leave it)."""

import pytest
import torch

from listcopy.config import Config
from listcopy.training import train


class Interrupt(Exception):
    pass


class StopAt:
    """A tracker that interrupts training at the evaluation of ``step``."""

    def __init__(self, step):
        self.step = step

    def log(self, step, runs):
        if step == self.step:
            raise Interrupt(step)

    def finish(self, runs, summary=None):
        pass


BASE = ["task.n_digits=20", "train.batch_size=32", "train.eval_every=10",
        "train.checkpoint_every=20", "train.max_steps=150", "train.early_stop_acc=1.0"]
OPTIONS = {
    "schedule": ["train.lr_schedule=warmup_cosine", "train.warmup_steps=60"],
    "clipping": ["train.max_grad_norm=0.2"],
    "fresh": ["train.fresh_data=true"],
    "patience": ["train.patience=2", "train.patience_threshold=0.0", "train.lr=0.05"],
    "all": ["train.lr_schedule=warmup_cosine", "train.warmup_steps=60", "train.max_grad_norm=0.2",
            "train.fresh_data=true", "train.patience=2", "train.patience_threshold=0.0",
            "train.lr=0.01"],
}


@pytest.mark.parametrize("option", list(OPTIONS))
def test_resume_is_bit_identical_with_the_option_on(tmp_path, option):
    config = Config().override([*BASE, *OPTIONS[option]])
    straight = train(config, tmp_path / "a", progress=False)
    with pytest.raises(Interrupt):
        train(config, tmp_path / "b", progress=False, tracker=StopAt(90))  # saved at 80
    resumed = train(config, tmp_path / "b", resume=True, progress=False)
    assert (resumed.step, resumed.stop_reason) == (straight.step, straight.stop_reason)
    assert resumed.history == straight.history
    for k in straight.state:
        assert torch.equal(straight.state[k], resumed.state[k]), k
    if option == "patience":  # it stopped by patience after the checkpoint it resumed from
        assert straight.stop_reason == "patience" and straight.step > 80
