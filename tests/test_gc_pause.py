import gc

import pytest
import torch

from listcopy import training
from listcopy.config import Config
from listcopy.engine import Ensemble
from listcopy.gc_pause import gc_paused
from listcopy.model import InitialState, ListCopyCore
from listcopy.task import dataset


@pytest.fixture
def collector():
    """The collector enabled for the test and put back as it was."""
    was = gc.isenabled()
    gc.enable()
    yield
    (gc.enable if was else gc.disable)()


def test_paused_inside_and_restored_after_even_on_error(collector):
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError), gc_paused():
        raise ValueError("boom")
    assert gc.isenabled()


def test_a_disabled_collector_stays_disabled(collector):
    gc.disable()
    with gc_paused():
        pass
    assert not gc.isenabled()


def test_members_are_drawn_and_weights_taken_back_with_the_collector_paused(collector,
                                                                           monkeypatch):
    seen = []
    prepare = training._prepare

    def spy(*args):
        seen.append(gc.isenabled())
        return prepare(*args)

    monkeypatch.setattr(training, "_prepare", spy)
    configs = [Config().override([f"train.seed={s}"]) for s in range(3)]
    data = dataset(configs[0])
    members = training.prepare_members(configs, [None] * 3, False,
                                       InitialState(ListCopyCore(configs[0])), data)
    assert seen == [False] * 3 and gc.isenabled()
    ens = Ensemble(configs[0], [m.run.state for m in members], "cpu")
    clone = torch.Tensor.clone
    during = []
    monkeypatch.setattr(torch.Tensor, "clone",
                        lambda self, *a, **k: during.append(gc.isenabled()) or clone(self, *a, **k))
    states = ens.state_dicts([0, 2])
    monkeypatch.undo()
    assert during and not any(during) and gc.isenabled()
    for state, member in zip(states, (members[0], members[2])):
        assert all(torch.equal(state[k], member.run.state[k]) for k in state)
