"""Fresh training lists (train.fresh_data): never a validation list, seeded, resumable."""

import torch

from listcopy.config import Config
from listcopy.fresh import FreshLists, list_keys
from listcopy.task import all_lists, dataset
from listcopy.training import train


def val_set(config):
    data = dataset(config)
    return {tuple(r) for r in data.val_inputs[:, : config.task.list_len].tolist()}


def stream(config, seed=0):
    L = config.task.list_len
    return FreshLists(config.task, dataset(config).val_inputs[:, :L], torch.Generator().manual_seed(seed))


def test_no_validation_list_is_ever_drawn_and_every_training_list_is():
    """20,000 steps of 32 lists over a space of 400 (80 of them validation lists)."""
    config = Config().replace(task={"n_digits": 20})
    val, s = val_set(config), stream(config)
    seen = set()
    for _ in range(200):
        lists = s.draw(100 * 32)  # 100 steps of a batch of 32
        assert lists.shape == (3200, 2) and lists.dtype == torch.int64
        rows = {tuple(r) for r in lists.tolist()}
        assert not rows & val
        seen |= rows
    everything = {tuple(r) for r in all_lists(config.task).tolist()}
    assert seen == everything - val  # uniform over the training lists: all of them turn up


def test_a_space_too_large_to_enumerate_never_yields_a_validation_list():
    """100 digits, lists of 12 (10**24 lists: hashed keys): the validation set is part of a
    seeded sample; the stream avoids it, also when it is offered validation lists on purpose."""
    config = Config().replace(task={"n_digits": 100, "list_len": 12, "n_samples": 5000})
    assert config.task.sampled
    val, s = val_set(config), stream(config)
    val_rows = torch.tensor(sorted(val))
    assert s.is_validation(val_rows).all()  # every validation list is recognised
    for _ in range(20):
        rows = {tuple(r) for r in s.draw(2048).tolist()}
        assert not rows & val
    # a stream whose generator would hand out validation lists still rejects them
    lists = torch.cat([val_rows[:100], s.draw(100)])
    assert s.is_validation(lists).tolist() == [True] * 100 + [False] * 100


def test_keys_are_exact_where_the_space_fits_in_63_bits():
    lists = all_lists(Config().replace(task={"n_digits": 7, "list_len": 3}).task)
    assert torch.equal(list_keys(lists, 7), torch.arange(7**3))
    big = torch.randint(0, 100, (5000, 12), generator=torch.Generator().manual_seed(0))
    assert list_keys(big, 100).unique().numel() == big.unique(dim=0).shape[0]


def test_the_stream_is_seeded_and_its_state_resumes_it():
    config = Config().replace(task={"n_digits": 20})
    a, b = stream(config, 3), stream(config, 3)
    assert torch.equal(a.draw(500), b.draw(500))
    state = a.state()
    first = a.draw(300)
    c = stream(config, 99)
    c.load_state(state)
    assert torch.equal(c.draw(300), first)
    assert not torch.equal(stream(config, 4).draw(500), stream(config, 3).draw(500))


def fresh_config(steps, *extra):
    return Config().override(["task.n_digits=20", "model.n_layers=2", "train.batch_size=64",
                              f"train.max_steps={steps}", "train.eval_every=25",
                              "train.fresh_data=true", *extra])


def test_training_on_fresh_lists_never_sees_a_validation_list(monkeypatch):
    """A real run (two members): every list the engine trains on, collected where the stream
    hands it out."""
    drawn = []
    draw = FreshLists.draw

    def spy(self, n):
        lists = draw(self, n)
        drawn.append(lists)
        return lists

    monkeypatch.setattr(FreshLists, "draw", spy)
    from listcopy.training import train_ensemble

    configs = [fresh_config(400, f"train.seed={s}") for s in (0, 1)]
    runs = train_ensemble(configs, progress=False)
    assert all(r.step == 400 for r in runs)
    lists = torch.cat(drawn)
    assert lists.shape[0] == 2 * 400 * 64
    assert not {tuple(r) for r in lists.tolist()} & val_set(configs[0])
    assert runs[0].history[-1]["acc"] > 0.2  # it learns from them


def test_fresh_lists_change_training_and_the_default_is_untouched():
    a = train(fresh_config(50), progress=False)
    b = train(fresh_config(50, "train.fresh_data=false"), progress=False)
    assert not torch.equal(a.state["embed.W_E"], b.state["embed.W_E"])
