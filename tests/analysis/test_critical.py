"""Critical-edge search: the edges come from the model's own mask; each edge's change, the
classification and the all-non-critical accuracy against the hand-written forward."""

import pytest

from listcopy.analysis.critical import critical_edges, model_edges

from .reference import allowed, forward, metrics, no_hooks
from .test_pattern_edits import line_rule


def test_model_edges_are_the_mask(trained):
    model, config, data = trained
    want = [(layer, q, k) for layer in range(3) for q, k in allowed(2).nonzero().tolist()]
    assert model_edges(model, config, data) == want


@pytest.mark.parametrize("renorm", [True, False])
def test_critical_edges_against_the_hand_written_forward(trained2, renorm):
    model, config, data = trained2
    tol = 0.01
    r = critical_edges(model, config, data, tolerance=tol, renorm=renorm)
    d = r.to_dict()
    base = metrics(forward(model, data.val_inputs), data.val_targets, 2)["acc"]
    rows = {(l, q, k): delta for l, q, k, delta in d["critical"] + d["non_critical"]}
    assert len(rows) == 2 * int(allowed(2).sum())
    for (l, q, k), delta in rows.items():
        acc = metrics(forward(model, data.val_inputs, pattern_edit=line_rule({(l, q, k): 0.0}, renorm)),
                      data.val_targets, 2)["acc"]
        assert delta == pytest.approx(acc - base, abs=1e-6)
    assert all(delta < -tol for *_, delta in d["critical"])
    assert all(delta >= -tol for *_, delta in d["non_critical"])
    assert d["critical"]  # a half-trained model needs its SEP edges
    rest = {tuple(e[:3]): 0.0 for e in d["non_critical"]}
    acc = metrics(forward(model, data.val_inputs, pattern_edit=line_rule(rest, renorm)),
                  data.val_targets, 2)["acc"]
    assert d["acc_without_non_critical"] == pytest.approx(acc, abs=1e-6)
    assert d["example"]["example_index"] == 0 and len(d["example"]["attention"]) == 2
    assert no_hooks(model)


def test_a_bad_tolerance_is_refused(trained2):
    from listcopy.config import ConfigError

    model, config, data = trained2
    with pytest.raises(ConfigError, match="tolerance"):
        critical_edges(model, config, data, tolerance=-1)
