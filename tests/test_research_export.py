"""Exports of research-variant models load into the research line's own code (TransformerLens 2.18
``HookedTransformer`` with its mask hooks, strict) and give its logits: the line's side was run by
tests/fixtures/research_export/check_export_research.py; here listcopy's side is held to it."""

import json

import pytest
import torch

from listcopy.checkpoint import load
from tests.conftest import FIXTURES, run_cli
from tests.test_research_checkpoints import CHECKPOINTS, META, PAPER

EXPORTS = FIXTURES / "research_export"
NAMES = ("L2_H1_D16_V20_len3-ln-bias-wv-wo", "L2_H2_D16_V20")


@pytest.mark.parametrize("name", NAMES)
def test_the_lines_loader_took_listcopys_export_and_gave_the_same_logits(name):
    from safetensors.torch import load_file

    check = json.loads((EXPORTS / "check.json").read_text())[name]
    assert check["strict_load"] == "ok" and check["max_abs_diff_from_listcopy"] <= 1e-5
    model, config = load(EXPORTS / f"{name}.pt")  # the name and the tensors say it all
    assert config.name == name
    line = check["infer_model_config"]  # what the line's infer_model_config read from the file
    assert (line["use_ln"], line["use_bias"], line["use_wv"], line["use_wo"]) == (
        config.model.ln, config.model.use_bias, not config.model.freeze_wv,
        not config.model.freeze_wo)
    tokens = load_file(EXPORTS / "listcopy_logits.safetensors")[f"{name}.tokens"].long()
    line_logits = load_file(EXPORTS / "line_logits.safetensors")[f"{name}.logits"]
    with torch.no_grad():
        assert torch.allclose(model(tokens), line_logits, atol=1e-5)


@pytest.mark.skipif(not CHECKPOINTS.is_dir(), reason="no research checkpoints")
def test_export_of_the_papers_checkpoint_has_its_keys_shapes_and_values(tmp_path):
    out = tmp_path / "again.pt"
    result = run_cli("export", str(CHECKPOINTS / PAPER), "--out", str(out))
    assert result.returncode == 0, result.stderr
    exported = torch.load(out, weights_only=True)
    original = torch.load(CHECKPOINTS / PAPER, map_location="cpu", weights_only=True)
    listed = [(e["key"], tuple(e["shape"]), e["dtype"]) for e in META[PAPER]["state_dict"]]
    assert [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in exported.items()] == listed
    assert all(torch.equal(exported[k], original[k]) for k in original)
    assert json.loads((EXPORTS / "check.json").read_text())[
        "listcopy_export_3layer_100dig_64d"]["max_abs_diff_from_the_original_file"] == 0.0
