"""Patience and --keep decide as the research line's train.py does, on its recorded accuracies.

tests/fixtures/research/train_decisions.json ran train.py's own loop with its accuracy() replaced
by scripted values; here listcopy's training loop runs with the engine's evaluation replaced by
the same values, and must stop after the same evaluation and keep the same attempt.
"""

import json

import pytest
import torch

from listcopy.config import Config
from listcopy.engine import Ensemble
from listcopy.errors import BadInput
from listcopy.stopping import KeepRule, Patience
from listcopy.training import keep, train, train_ensemble

FLAGS = {"--max-steps": "train.max_steps", "--early-stopping-patience": "train.patience",
         "--early-stopping-threshold": "train.patience_threshold",
         "--early-stop-acc": "train.early_stop_acc"}


def decisions(fixtures):
    return json.loads((fixtures / "research" / "train_decisions.json").read_text())


def case_names(kind):
    from tests.conftest import FIXTURES

    cases = json.loads((FIXTURES / "research" / "train_decisions.json").read_text())["cases"]
    return [c["name"] for c in cases if c["name"].startswith(kind)]


def case(fixtures, name):
    return next(c for c in decisions(fixtures)["cases"] if c["name"] == name)


def config_of(args, defaults) -> Config:
    """train.py's arguments as listcopy settings (a cheap model: only the decisions matter)."""
    sets = {"train.patience_threshold": defaults["early_stopping_threshold"],
            "train.early_stop_acc": defaults["early_stop_acc"], "train.eval_every": 100}
    for flag, value in zip(args, args[1:]):
        if flag in FLAGS:
            sets[FLAGS[flag]] = value
    base = Config().replace(task={"n_digits": 5}, model={"n_layers": 1, "d_model": 8})
    return base.override([f"{k}={v}" for k, v in sets.items()])


@pytest.fixture
def scripted(monkeypatch):
    """Replace the engine's evaluation: member e's k-th evaluation returns scripts[e][k] (the
    last one repeated), as train_decisions.json replaced train.py's accuracy()."""
    scripts, calls = [], []

    def evaluate(self, inputs, targets, chunk=None, active=None):
        accs = []
        for e, script in enumerate(scripts):
            k = sum(1 for c in calls if c == e)
            if active is None or bool(active[e]):
                calls.append(e)
            accs.append(script[min(k, len(script) - 1)])
        acc = torch.tensor(accs, dtype=torch.float64)
        return {"loss": torch.full_like(acc, 0.5), "acc": acc, "seq_acc": acc}

    monkeypatch.setattr(Ensemble, "evaluate", evaluate)
    return scripts


@pytest.mark.parametrize("name", case_names("patience") + case_names("target"))
def test_patience_stops_after_the_same_evaluation_as_train_py(fixtures, scripted, name):
    c = case(fixtures, name)
    scripted.append(c["script"][0]["evals"])
    run = train(config_of(c["args"], decisions(fixtures)["defaults"]), progress=False)
    assert run.step == c["steps"][0]
    assert len(run.history) == c["stopped_after_eval"][0]
    if "Early stopping" in c["messages"][0]:
        reason = "early_stop" if "with accuracy" in c["messages"][0] else "patience"
        assert run.stop_reason == reason
    else:
        assert run.stop_reason == "max_steps"


@pytest.mark.parametrize("name", case_names("retry"))
def test_keep_chooses_the_attempt_train_py_saved(fixtures, scripted, tmp_path, name):
    """Attempts are seeds trained at once; the final accuracy of each is scripted."""
    c = case(fixtures, name)
    config = config_of(c["args"], decisions(fixtures)["defaults"])
    args = c["args"]
    min_acc = float(args[args.index("--min-acc") + 1])
    finals = [attempt["final"] for attempt in c["script"]]
    scripted.extend([f] for f in finals)
    configs = [config.override([f"train.seed={s}"]) for s in range(len(finals))]
    runs = train_ensemble(configs, [tmp_path / f"seed-{s}" for s in range(len(finals))],
                          progress=False)
    kept = keep(runs, KeepRule("first", min_acc), tmp_path)
    expected = c["saved"]["attempt"]
    if expected is None:  # train.py found nothing above 0.0 and failed to save
        assert kept is None and c["error"].startswith("AttributeError")
        return
    assert kept["seed"] == expected
    assert f"_acc{kept['acc']:.4f}.pt" in c["saved"]["file"]  # train.py names it by best_acc
    assert (tmp_path / "kept" / "model.safetensors").exists()
    assert json.loads((tmp_path / "kept" / "run.json").read_text())["config"]["train"]["seed"] == expected


def test_the_recorded_patience_runs_stop_where_train_py_stopped(fixtures):
    """train.json's two real patience runs: their evaluations folded through the rule."""
    runs = json.loads((fixtures / "research" / "train.json").read_text())
    for name, threshold in [("patience", 0.9), ("patience_counter_carried", 0.5)]:
        evals = runs[name]["evals"][0]
        state, stopped = Patience(), None
        for step, acc in evals:
            state = state.update(acc)
            if state.stops(acc, 3, threshold):
                stopped = step
                break
        assert stopped == runs[name]["stopped_at_step"] == evals[-1][0], name


def test_keep_rules_by_hand():
    best, first = KeepRule.parse("best"), KeepRule.parse("first:0.9")
    assert best.choose([0.5, 0.95, 0.97, 0.97]) == 2  # ties keep the earlier
    assert first.choose([0.5, 0.95, 0.97]) == 1  # the first at or above 0.9
    assert first.choose([0.5, 0.7, 0.6]) == 1  # none: the best
    assert first.choose([0.9, 0.95]) == 0  # inclusive
    assert best.choose([float("nan"), None, 0.2]) == 2  # failed members are never kept
    assert best.choose([0.0, 0.0]) is None
    assert str(first) == "first:0.9" and str(best) == "best"


@pytest.mark.parametrize("text", ["worst", "first", "first:", "first:x", "first:1.5",
                                  "first:-0.1", "best:0.9", "first:nan"])
def test_bad_keep_rules_are_one_line(text):
    with pytest.raises(BadInput) as err:
        KeepRule.parse(text)
    assert str(err.value).startswith(f"--keep {text!r}: must be best or first:X")
    assert "\n" not in str(err.value)
