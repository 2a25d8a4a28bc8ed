"""The clean model's errors (``analyze --only errors``) against a list-by-list loop."""

from __future__ import annotations

import pytest
import torch

from listcopy.analysis.errors import ENDINGS, ending, error_split, output_errors


def naive(preds, targets, digits):
    """Per list and position, by hand: right / another digit of the list / not in the list."""
    n, L = preds.shape
    right, in_list, not_in, same_set = [0] * L, [0] * L, [0] * L, 0
    for i in range(n):
        p, t, d = preds[i].tolist(), targets[i].tolist(), digits[i].tolist()
        same_set += sorted(p) == sorted(t)
        for j in range(L):
            if p[j] == t[j]:
                right[j] += 1
            elif p[j] in d:
                in_list[j] += 1
            else:
                not_in[j] += 1
    return {"set_acc": same_set / n, "right": tuple(r / n for r in right),
            "in_list": tuple(x / n for x in in_list), "not_in_list": tuple(x / n for x in not_in)}


def test_error_split_is_the_loops():
    g = torch.Generator().manual_seed(0)
    digits = torch.randint(0, 4, (500, 3), generator=g)  # few digits: every case is common
    targets = digits.clone()
    shuffled = digits[:, torch.randperm(3, generator=g)]
    preds = torch.where(torch.rand(500, 3, generator=g) < 0.5, shuffled,
                        torch.randint(0, 5, (500, 3), generator=g))
    got, want = error_split(preds, targets, digits), naive(preds, targets, digits)
    assert got["set_acc"] == pytest.approx(want["set_acc"])
    for key in ("right", "in_list", "not_in_list"):
        assert got[key] == pytest.approx(want[key]), key
    assert 0 < min(want["in_list"]) and 0 < min(want["not_in_list"]) and 0 < want["set_acc"] < 1
    for j in range(3):
        assert got["right"][j] + got["in_list"][j] + got["not_in_list"][j] == pytest.approx(1)


def test_a_swapped_order_model_errs_only_inside_the_list():
    """Outputs of every list reversed: never right where the digits differ, always in the list,
    and the right digits in some order on every list."""
    digits = torch.tensor([[1, 2], [3, 3], [0, 4]])
    split = error_split(digits.flip(-1), digits, digits)
    assert split["set_acc"] == 1.0
    assert split["right"] == pytest.approx((1 / 3, 1 / 3))
    assert split["in_list"] == pytest.approx((2 / 3, 2 / 3)) and split["not_in_list"] == (0.0, 0.0)


def test_output_errors_of_a_part_trained_model(trained2):
    model, config, data = trained2
    L = config.task.list_len
    with torch.no_grad():
        preds = model(data.val_inputs)[:, L + 1:].argmax(-1)
    targets = data.val_targets[:, L + 1:]
    want = naive(preds, targets, data.val_inputs[:, :L])
    got = output_errors(model, config, data).to_dict()
    assert got["set_acc"] == pytest.approx(want["set_acc"])
    assert got["metrics"]["per_position_acc"] == pytest.approx(list(want["right"]))
    for j in range(L):
        row = got["positions"][f"o{j + 1}"]
        assert row["in_list"] == pytest.approx(want["in_list"][j])
        assert row["not_in_list"] == pytest.approx(want["not_in_list"][j])
        assert row["wrong"] == pytest.approx(1 - want["right"][j])  # the ablate taxonomy's row


def _errors(acc, *positions):
    """``OutputErrors.to_dict()``'s shape: accuracy, and per position (right, in_list, not_in_list)."""
    return {"metrics": {"acc": acc},
            "positions": {f"o{j + 1}": {"right": r, "in_list": i, "not_in_list": n}
                          for j, (r, i, n) in enumerate(positions)}}


@pytest.mark.parametrize("errors,ends", [
    (_errors(0.92, (0.96, 0.03, 0.01), (0.88, 0.10, 0.02)), "solved"),
    (_errors(0.90, (0.93, 0.06, 0.01), (0.87, 0.12, 0.01)), "nearly solved"),  # 0.9 is not above
    (_errors(0.74, (0.77, 0.23, 0.0), (0.70, 0.30, 0.0)), "nearly solved"),
    (_errors(0.70, (0.70, 0.30, 0.0), (0.70, 0.30, 0.0)), "order lost"),  # nor is 0.7
    (_errors(0.17, (0.17, 0.16, 0.67), (0.16, 0.17, 0.67)), "too narrow"),
    (_errors(0.50, (0.95, 0.02, 0.03), (0.05, 0.91, 0.04)), "first output only"),
    (_errors(0.50, (0.84, 0.10, 0.06), (0.16, 0.80, 0.04)), "order lost"),  # o1 under 0.85
    (_errors(0.45, (0.44, 0.56, 0.0), (0.46, 0.54, 0.0)), "order lost"),
    (_errors(0.45, (0.45, 0.30, 0.25), (0.45, 0.30, 0.25)), "other"),  # a quarter not in the list
    (_errors(0.60, (0.60, 0.40, 0.0),), "order lost"),  # one output: never "first output only"
])
def test_ending_takes_the_first_rule_that_applies(errors, ends):
    assert ending(errors) == ends and ends in ENDINGS


def test_ending_of_real_errors(trained2):
    """On ``output_errors`` of a model, as the paper's --errors table calls it."""
    model, config, _ = trained2
    e = output_errors(model, config).to_dict()
    assert ending(e) in ENDINGS
    assert ending(e, solved=0.0) == "solved" and ending(e, solved=1.0, nearly=0.0) == "nearly solved"
