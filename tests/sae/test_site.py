"""Sites: positions by label or index, hooks checked against the model, read and splice."""

import pytest
import torch

from listcopy import Config, ConfigError
from listcopy.model import build_model
from listcopy.sae.site import Site, check_site, parse_positions, read, splice_hook, write

TASK3 = Config().override(["task.n_digits=5", "task.list_len=3"]).task  # [d1 d2 d3 SEP o1 o2 o3]


def test_positions_by_label_and_index():
    assert parse_positions("SEP", TASK3) == (3,)
    assert parse_positions("sep", TASK3) == (3,)
    assert parse_positions("o2, d1", TASK3) == (0, 5)
    assert parse_positions("6,SEP,3", TASK3) == (3, 6)
    assert parse_positions(4, TASK3) == (4,)
    assert parse_positions([0, 2], TASK3) == (0, 2)


@pytest.mark.parametrize("bad", ["7", "-1", "d4", "o0", "x", ""])
def test_bad_positions_one_line(bad):
    with pytest.raises(ConfigError) as err:
        parse_positions(bad, TASK3)
    assert "\n" not in str(err.value)


@pytest.fixture
def two_heads():
    config = Config().override(["task.n_digits=5", "task.list_len=3", "model.n_layers=2",
                                "model.n_heads=2", "model.d_model=8"])
    return build_model(config, torch.Generator().manual_seed(0)).eval(), config


def test_check_site_widths(two_heads):
    model, config = two_heads
    assert check_site(model, Site("blocks.0.hook_resid_post", (3,))) == 8
    assert check_site(model, Site("blocks.1.attn.hook_q", (3,))) == 8   # (B, T, H=2, d=4) flattened
    assert check_site(model, Site("hook_embed", (0, 3))) == 8


@pytest.mark.parametrize("hook, words", [
    ("blocks.5.hook_resid_post", "does not exist"),
    ("blocks.0.attn.hook_pattern", "attention weights"),
    ("blocks.0.attn.hook_attn_scores", "attention weights"),
])
def test_bad_hooks_one_line(two_heads, hook, words):
    model, _ = two_heads
    with pytest.raises(ConfigError) as err:
        check_site(model, Site(hook, (3,)))
    assert words in str(err.value) and hook in str(err.value) and "\n" not in str(err.value)


def test_position_outside_sequence(two_heads):
    with pytest.raises(ConfigError, match="outside the sequence"):
        check_site(two_heads[0], Site("blocks.0.hook_resid_post", (7,)))


def test_read_write_by_hand():
    act = torch.arange(2 * 7 * 3, dtype=torch.float32).reshape(2, 7, 3)
    site = Site("x", (1, 3))
    rows = read(act, site)
    assert torch.equal(rows, torch.stack([act[0, 1], act[0, 3], act[1, 1], act[1, 3]]))
    out = write(act, site, -rows)
    expected = act.clone()
    for b in range(2):
        for p in (1, 3):
            expected[b, p] = -act[b, p]
    assert torch.equal(out, expected)
    assert torch.equal(act, torch.arange(42, dtype=torch.float32).reshape(2, 7, 3))  # untouched


def test_splice_changes_only_the_site(two_heads):
    """Zeroing the SEP residual after layer 0 by the hook equals doing it by hand."""
    model, config = two_heads
    tokens = torch.randint(0, 5, (4, config.task.seq_len), generator=torch.Generator().manual_seed(1))
    site = Site("blocks.0.hook_resid_post", (3,))

    def by_hand(act, hook):
        act = act.clone()
        act[:, 3] = 0.0
        return act

    want = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_post", by_hand)])
    got = model.run_with_hooks(tokens, fwd_hooks=[splice_hook(site, torch.zeros_like)])
    assert torch.equal(got, want)
    assert not torch.equal(got, model(tokens))
