"""Metrics against hand computations, and patched accuracy against a splice written here by hand."""

from types import SimpleNamespace

import pytest
import torch

from listcopy.metrics import evaluate
from listcopy.sae.io import load_sae
from listcopy.sae.metrics import output_accuracy, patched_accuracy, reconstruction_metrics
from listcopy.sae.site import Site

from .reference import hand_patched


class StubSAE:
    """encode: relu(x A); decode: z B. Small enough to do every number by hand."""

    def __init__(self, A, B):
        self.A, self.B = torch.tensor(A), torch.tensor(B)
        self.cfg = SimpleNamespace(d_in=self.A.shape[0], d_sae=self.A.shape[1])

    def encode(self, x):
        return torch.relu(x @ self.A)

    def decode(self, z):
        return z @ self.B


def test_reconstruction_metrics_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    # z = (x0, x1, 0): latent 2 never fires. x_hat = (x0, x1 / 2).
    sae = StubSAE([[1.0, 0.0, -1.0], [0.0, 1.0, -1.0]], [[1.0, 0.0], [0.0, 0.5], [7.0, 7.0]])
    m = reconstruction_metrics(sae, x, batch_size=2)  # two batches: sums must carry over
    # squared errors: row 0: 0; row 1: (2 - 1)^2 = 1; row 2: (1 - 0.5)^2 = 0.25 -> 1.25 over 6 entries
    assert m["mse"] == pytest.approx(1.25 / 6)
    # mean (4/3, 1): sum of squares about it = (1/9 + 16/9 + 25/9) + (1 + 1 + 0) = 60/9
    assert m["explained_variance"] == pytest.approx(1 - 1.25 / (60 / 9))
    assert m["l0"] == pytest.approx((1 + 1 + 2) / 3)
    assert (m["dead"], m["alive"], m["d_sae"], m["n_rows"]) == (1, 2, 3, 3)


def test_output_accuracy_per_position_by_hand(trained):
    model, config, data = trained
    got = output_accuracy(model, data.val_inputs, data.val_targets, batch_size=7)
    logits = model(data.val_inputs)
    L = config.task.list_len
    right = [[int(logits[n, L + 1 + i].argmax()) == int(data.val_targets[n, L + 1 + i])
              for i in range(L)] for n in range(data.val_inputs.shape[0])]
    per = [sum(r[i] for r in right) / len(right) for i in range(L)]
    assert got["per_position"] == pytest.approx({"o1": per[0], "o2": per[1]})
    assert got["acc"] == pytest.approx(sum(per) / L)
    assert got["seq_acc"] == pytest.approx(sum(all(r) for r in right) / len(right))
    ref = evaluate(model, data)
    assert got["acc"] == pytest.approx(ref["acc"]) and got["loss"] == pytest.approx(ref["loss"], rel=1e-5)


@pytest.mark.parametrize("positions", [(2,), (0, 2)])
def test_patched_accuracy_equals_a_hand_splice(trained, sae_dir, positions):
    model, config, data = trained
    sae = load_sae(sae_dir).sae
    inputs, targets = data.inputs[:300], data.targets[:300]
    want, per = hand_patched(model, config, inputs, targets, "blocks.0.hook_resid_post",
                              positions, sae)
    got = patched_accuracy(model, sae, Site("blocks.0.hook_resid_post", positions), inputs,
                           targets, batch_size=64)
    assert got["patched_acc"] == pytest.approx(want)
    assert [got["per_position"][k]["patched_acc"] for k in ("o1", "o2")] == pytest.approx(per)
    base = output_accuracy(model, inputs, targets)["acc"]
    assert got["baseline_acc"] == pytest.approx(base)
    assert got["drop"] == pytest.approx(base - want)


def test_a_perfect_reconstruction_changes_nothing(trained):
    model, config, data = trained
    identity = StubSAE(torch.eye(16).tolist(), torch.eye(16).tolist())
    identity.encode = lambda x: x  # keep negative values: decode(encode(x)) == x exactly
    got = patched_accuracy(model, identity, Site("blocks.1.hook_resid_post", (2, 3)),
                           data.val_inputs, data.val_targets)
    assert got["patched_acc"] == got["baseline_acc"] and got["drop"] == 0.0
