"""Learning-rate schedules against the research line's own run and torch's LambdaLR."""

import math

import pytest
import torch

from listcopy.config import Config, ConfigError
from listcopy.schedule import lr_factor, lr_of_step, lr_table


def line_recipe(**train):
    return Config().replace(train={"lr_schedule": "warmup_cosine", "warmup_steps": 100,
                                   "max_steps": 1000, **train}).train


@pytest.mark.parametrize("fixture", ["train_schedule_1000", "train_schedule_clip005_1000"])
def test_every_step_uses_the_lr_the_lines_train_py_used(fixtures, fixture):
    """train.py --use-lr-scheduler --warmup-steps 100 --max-steps 1000: the lr of each of its
    1000 steps, recorded from its LambdaLR (step 1 trains with 0.0)."""
    from safetensors.torch import load_file

    recorded = load_file(fixtures / "research" / f"{fixture}.safetensors")["lr"].tolist()
    mine = [lr_of_step(s, line_recipe()) for s in range(1000)]
    assert mine == recorded  # the same Python float arithmetic: equal, not close
    assert mine[0] == 0.0 and mine[1] == 1e-5 and mine[100] == 1e-3


def test_warmup_cosine_is_torchs_lambdalr_stepped_after_each_step():
    """An independent reference: torch's LambdaLR with the line's lambda, stepped after each
    optimiser step (so the k-th step uses the lambda at k - 1)."""
    train = line_recipe(lr=3e-3, warmup_steps=7, max_steps=50)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=train.lr)

    def line_lambda(k):
        if k < 7:
            return float(k) / float(max(1, 7))
        progress = float(k - 7) / float(max(1, 50 - 7))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, line_lambda)
    for step in range(60):  # past max_steps too (a resumed run with more steps)
        assert lr_of_step(step, train) == opt.param_groups[0]["lr"], step
        opt.step()
        sched.step()


def test_constant_is_the_seeds_lr_and_no_warmup_is_pure_cosine():
    constant = Config().train
    assert all(lr_of_step(s, constant) == constant.lr for s in (0, 1, 10**6))
    cosine = line_recipe(warmup_steps=0, max_steps=10)
    assert lr_factor(0, cosine) == 1.0 and lr_factor(5, cosine) == pytest.approx(0.5)
    assert lr_factor(10, cosine) == pytest.approx(0.0, abs=1e-15)


def test_the_table_holds_each_members_rates_from_any_step():
    a, b = line_recipe(), line_recipe(lr=0.01, max_steps=500)
    c = Config().train
    table = lr_table([a, b, c, a], 95, 10)
    assert table.dtype == torch.float64 and table.shape == (4, 10)
    for row, t in zip(table.tolist(), [a, b, c, a]):
        assert row == [lr_of_step(s, t) for s in range(95, 105)]


@pytest.mark.parametrize("override, problem", [
    ("train.lr_schedule=cosine", "one of constant, warmup_cosine"),
    ("train.warmup_steps=-1", "an integer >= 0"),
    ("train.warmup_steps=1.5", "an integer"),
    ("train.max_grad_norm=-0.1", ">= 0"),
    ("train.patience=-2", "an integer >= 0"),
    ("train.patience_threshold=1.5", "in [0, 1]"),
    ("train.fresh_data=1", "true or false"),
])
def test_bad_recipe_values_are_refused_with_one_line(override, problem):
    with pytest.raises(ConfigError) as err:
        Config().override([override])
    key = override.split("=")[0]
    assert str(err.value).startswith(f"{key} = ") and problem in str(err.value)
    assert "\n" not in str(err.value)


def test_fresh_data_cannot_be_combined_with_reshuffle():
    with pytest.raises(ConfigError, match="train.fresh_data = True: must be false when"):
        Config().override(["train.fresh_data=true", "train.reshuffle=true"])


def test_the_recipe_is_off_by_default():
    t = Config().train
    assert (t.lr_schedule, t.max_grad_norm, t.patience, t.fresh_data) == ("constant", 0.0, 0, False)
