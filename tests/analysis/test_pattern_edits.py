"""Pattern edits as temporary hooks, against the hand-written forward with the research line's
rule applied row by row; the --edges syntax."""

import pytest
import torch

from listcopy.analysis.pattern_edits import (ablation_hooks, edited_patterns, format_edges,
                                             parse_edges, pattern_hooks)
from listcopy.config import ConfigError

from .reference import forward, no_hooks


def line_rule(edits, renorm, eps=1e-12):
    """The research line's make_pattern_hook, one (example, head, row) at a time."""
    def edit(layer, pattern):
        pattern = pattern.clone()
        B, H, T, _ = pattern.shape
        for b in range(B):
            for h in range(H):
                rows = set()
                for (l, q, k), v in edits.items():
                    if l == layer:
                        pattern[b, h, q, k] = v
                        rows.add(q)
                if renorm:
                    for q in rows:
                        pattern[b, h, q] = pattern[b, h, q] / max(float(pattern[b, h, q].sum()), eps)
        return pattern
    return edit


@pytest.mark.parametrize("renorm", [False, True])
def test_pattern_hooks_equal_the_line_rule(trained, renorm):
    model, config, data = trained
    tokens = data.val_inputs[:16]
    edits = {(0, 4, 3): 0.0, (0, 2, 0): 0.25, (1, 2, 1): 0.0, (2, 4, 2): 0.0, (2, 4, 3): 0.7}
    with torch.no_grad(), model.hooks(fwd_hooks=pattern_hooks(edits, renorm=renorm)):
        got = model(tokens)
    want = forward(model, tokens, pattern_edit=line_rule(edits, renorm))
    assert torch.allclose(got, want, atol=1e-5)
    assert no_hooks(model)


def test_a_row_with_every_weight_removed_stays_zero_when_renormalised(trained):
    model, config, data = trained
    edges = [(1, 4, 2), (1, 4, 3)]  # o2's whole layer-1 row
    seen = {}
    hooks = ablation_hooks(edges, renorm=True) + [
        ("blocks.1.attn.hook_pattern", lambda p, hook: seen.setdefault("p", p.clone()))]
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        model(data.val_inputs[:4])
    assert torch.equal(seen["p"][:, :, 4], torch.zeros_like(seen["p"][:, :, 4]))
    assert torch.allclose(seen["p"][:, :, 3].sum(-1), torch.ones(4, 1))  # other rows untouched


def test_one_head_only(odd):
    model, config, data = odd  # 2 heads
    seen = {}
    hooks = pattern_hooks({(0, 2, 0): 0.0}, head=1) + [
        ("blocks.0.attn.hook_pattern", lambda p, hook: seen.setdefault("p", p.clone()))]
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        model(data.val_inputs[:4])
    assert (seen["p"][:, 1, 2, 0] == 0).all() and (seen["p"][:, 0, 2, 0] > 0).all()


def test_edited_patterns_is_temporary(trained):
    model, config, data = trained
    tokens = data.val_inputs[:8]
    with torch.no_grad():
        clean = model(tokens)
        with edited_patterns(model, {(0, 2, 0): 0.0, (0, 2, 1): 1.0}):
            edited = model(tokens)
        after = model(tokens)
    assert not torch.allclose(clean, edited) and torch.equal(clean, after) and no_hooks(model)


def test_the_issue_edge_syntax():
    edges = parse_edges("0:4-3,0-0,1-0;1:0-0,1-0,2-0,2-1,4-3", 2, 5)
    assert edges == [(0, 4, 3), (0, 0, 0), (0, 1, 0), (1, 0, 0), (1, 1, 0), (1, 2, 0), (1, 2, 1),
                     (1, 4, 3)]
    assert format_edges(edges) == "0:4-3,0-0,1-0;1:0-0,1-0,2-0,2-1,4-3"
    assert parse_edges(" 1 : 2-1 , 2-1 ; ", 2, 5) == [(1, 2, 1)]


@pytest.mark.parametrize("text, words", [
    ("", "no edge given"), ("4-3", "expected LAYER:Q-K"), ("2:4-3", "layer '2' must be an integer in 0 .. 1"),
    ("0:4", "'4' is not QUERY-KEY"), ("0:4-5", "key '5' must be an integer in 0 .. 4"),
    ("0:x-1", "query 'x'"), ("0:-1-2", "query ''"),
])
def test_bad_edge_text_is_one_line(text, words):
    with pytest.raises(ConfigError, match=words) as err:
        parse_edges(text, 2, 5)
    assert "\n" not in str(err.value)
