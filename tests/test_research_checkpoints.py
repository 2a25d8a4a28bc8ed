"""The research line's shared checkpoints (../shared/research/checkpoints/) through listcopy:
inferred config, logits, attention scores and patterns from ``run_with_cache``, residuals, and the
accuracy, loss and seq_acc the line's own code computes (fixtures made by running it:
tests/fixtures/research/checkpoints.json and ckpt_*.safetensors)."""

import json
import os
from pathlib import Path

import pytest
import torch

from listcopy.checkpoint import load
from listcopy.metrics import evaluate
from listcopy.task import dataset
from tests.conftest import FIXTURES, run_cli

RESEARCH = Path(os.environ.get("RESEARCH_DIR", FIXTURES.parents[2] / "shared" / "research"))
CHECKPOINTS = RESEARCH / "checkpoints"
PAPER = "3layer_100dig_64d.pt"
FOLLOW_UP = "L3_H1_D64_V100_len3_260121-143443_acc0.9962.pt"
META = json.loads((FIXTURES / "research" / "checkpoints.json").read_text())["checkpoints"]

pytestmark = pytest.mark.skipif(not CHECKPOINTS.is_dir(),
                                reason=f"the research line's checkpoints are not at {CHECKPOINTS}")


def close(mine, ref, scale_rtol=2e-6):
    """Equal up to float32 rounding on any CPU (used for the logits, the one tensor where entries
    near 0 sum large terms): every entry within 1e-5 plus ``scale_rtol`` of the tensor's largest
    entry. An entry's rounding error scales with the terms summed into it, not with
    the entry: a logit near 0 that cancels terms of 300 differs by about 1e-4 between two CPUs'
    matrix-product kernels (this fixture was made on an AMD core; an Intel core's products differ),
    while a wrong weight or mask moves entries by far more than that."""
    return (mine - ref).abs().max() <= 1e-5 + scale_rtol * ref.abs().max()


@pytest.mark.parametrize("name, list_len", [(PAPER, 2), (FOLLOW_UP, 3)])
def test_inferred_config_and_every_cached_activation_equal_the_lines(name, list_len):
    from safetensors.torch import load_file

    model, config = load(CHECKPOINTS / name)
    line = META[name]["infer_model_config"]
    assert (config.model.n_layers, config.model.n_heads, config.model.d_model) == (
        line["n_layers"], line["n_heads"], line["d_model"])
    assert (config.task.list_len, config.task.vocab, config.task.n_digits) == (
        line["list_len"], line["d_vocab"], META[name]["n_digits"])
    assert (config.task.mask_id, config.task.sep) == (META[name]["MASK"], META[name]["SEP"])
    assert config.task.mask_token and config.model.layer0_mask
    assert config.model.freeze_wv and config.model.freeze_wo and not config.model.use_bias
    assert config.task.list_len == list_len
    fx = load_file(FIXTURES / "research" / META[name]["fixture"])
    logits, cache = model.run_with_cache(fx["tokens"].long())
    assert close(logits, fx["logits"])
    for layer in range(config.model.n_layers):
        scores, ref = cache["attn_scores", layer], fx[f"attn_scores{layer}"]
        assert torch.equal(scores.isinf(), ref.isinf()), layer  # the same entries masked
        assert torch.allclose(scores.nan_to_num(0, 0, 0), ref.nan_to_num(0, 0, 0), atol=1e-5)
        assert torch.allclose(cache["pattern", layer], fx[f"pattern{layer}"], atol=1e-6), layer
        assert torch.allclose(cache["resid_post", layer], fx[f"resid_post{layer}"], atol=1e-5)
    outputs = slice(list_len + 1, 2 * list_len + 1)
    assert (cache["pattern", 0][:, :, outputs] == 0).all()  # the layer-0 rows, zeroed
    assert torch.equal(cache["blocks.0.hook_attn_out"][:, outputs],
                       torch.zeros_like(cache["blocks.0.hook_attn_out"][:, outputs]))


@pytest.mark.parametrize("option", ["default", "no_dupes", "train_dupes_only"])
def test_paper_checkpoint_metrics_equal_the_lines(option):
    overrides = [] if option == "default" else [f"task.{option}=true"]
    model, config = load(CHECKPOINTS / PAPER, overrides)
    ref = META[PAPER]["eval"][option]
    got = evaluate(model, dataset(config))
    assert got["n_val"] == ref["n_val"]
    assert got["acc"] == pytest.approx(ref["accuracy_line"], abs=1e-6)
    assert got["seq_acc"] == pytest.approx(ref["seq_acc"], abs=1e-6)
    assert got["loss"] == pytest.approx(ref["loss"], abs=1e-5)


def eval_cli(name):
    result = run_cli("eval", str(CHECKPOINTS / name), "--json")
    assert result.returncode == 0, result.stderr
    notice = result.stderr.strip().splitlines()
    assert len(notice) == 1 and name in notice[0] and "vocab 102" in notice[0], notice
    return json.loads(result.stdout)


def test_eval_prints_the_lines_numbers_for_the_paper_checkpoint():
    got, ref = eval_cli(PAPER), META[PAPER]["eval"]["default"]
    assert got["acc"] == pytest.approx(ref["accuracy_line"], abs=1e-6)
    assert got["seq_acc"] == pytest.approx(ref["seq_acc"], abs=1e-6)
    assert got["loss"] == pytest.approx(ref["loss"], abs=1e-5)


@pytest.mark.slow
def test_eval_prints_the_lines_numbers_for_the_follow_up_checkpoint():
    """200,000 validation lists, and a file saved from cuda:0."""
    got, ref = eval_cli(FOLLOW_UP), META[FOLLOW_UP]["eval"]["default"]
    assert got["n_val"] == 200_000
    assert got["acc"] == pytest.approx(ref["accuracy_line"], abs=1e-6)
    assert got["seq_acc"] == pytest.approx(ref["seq_acc"], abs=1e-6)
    assert got["loss"] == pytest.approx(ref["loss"], abs=1e-5)


def test_info_shows_the_inferred_configuration():
    result = run_cli("info", str(CHECKPOINTS / FOLLOW_UP))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "L3_H1_D64_V100_len3"
    task = next(line for line in lines if line.strip().startswith("task:"))
    model = next(line for line in lines if line.strip().startswith("model:"))
    for part in ("n_digits 100", "list_len 3", "mask_token true", "no_dupes false"):
        assert part in task, task
    for part in ("n_layers 3", "n_heads 1", "d_model 64", "ln false", "use_bias false",
                 "freeze_wv true", "freeze_wo true", "layer0_mask true"):
        assert part in model, model
    notice = result.stderr.strip().splitlines()
    assert len(notice) == 1 and "3 layers, 1 head, d_model 64, list_len 3" in notice[0]


def test_edge_ablation_follows_the_layer0_mask_and_gives_the_lines_numbers():
    """The line's notebook, renorm off (the paper's figure): one pattern entry zeroed at a time.
    It also lists the outputs' layer-0 self edges, which its hook zeroes anyway (delta 0); listcopy
    offers only edges that carry something."""
    from listcopy.analysis.edges import edge_ablation

    interp = json.loads((FIXTURES / "research" / "interp.json").read_text())
    line = interp["models"]["3layer_100dig_64d"]["notebook"]["renorm_False"]["critical_edges"]
    model, config = load(CHECKPOINTS / PAPER)
    result = edge_ablation(model, config, tolerance=0.01)
    mine = {(e.layer, e.query, e.key): e.metrics.acc for e in result.edges}
    theirs = {tuple(r[:3]): r[3] for r in line["individual_layer_query_key_acc_delta"]}
    assert set(theirs) - set(mine) == {(0, 3, 3), (0, 4, 4)}
    assert theirs[(0, 3, 3)] == theirs[(0, 4, 4)] == line["original_accuracy"]
    assert set(mine) < set(theirs)
    for edge, acc in mine.items():
        assert acc == pytest.approx(theirs[edge], abs=1e-6), edge
    critical = sorted(list(e) for e in mine if tuple(e) not in
                      {(r.layer, r.query, r.key) for r in result.removable})
    assert critical == line["critical"]
