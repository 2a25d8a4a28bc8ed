"""The research line's own train.py, 1,000 steps of its 2-layer d_model 64 model with warmup +
cosine and clipping (tests/fixtures/research/train_schedule*_1000.safetensors): listcopy, from the
same seed, ends with the same weights within 1e-4, used the same lr at every step, and measured the
same validation accuracy at every evaluation. A clip of 1.0 never acts there (total norms 0.04 -
0.13); a clip of 0.05 acts on 582 of the 1,000 steps.

The line's model is the research variant (MASK token, layer-0 mask: issue 14); these tests need
its settings and are skipped until they exist.
"""

import dataclasses
import json

import pytest
import torch

from listcopy.config import Config, ModelConfig, TaskConfig

VARIANT = ({"mask_token"} <= {f.name for f in dataclasses.fields(TaskConfig)}
           and {"layer0_mask"} <= {f.name for f in dataclasses.fields(ModelConfig)})
needs_variant = pytest.mark.skipif(not VARIANT, reason="needs the research variant (issue 14)")


def line_config(clip: float) -> Config:
    """train.py --max-steps 1000 --use-lr-scheduler --warmup-steps 100 --max-grad-norm CLIP."""
    return Config().override([
        "task.mask_token=true", "model.layer0_mask=true", "model.n_layers=2", "model.d_model=64",
        "train.batch_size=2048", "train.max_steps=1000", "train.lr_schedule=warmup_cosine",
        "train.warmup_steps=100", f"train.max_grad_norm={clip}", "train.device=cpu"])


@needs_variant
@pytest.mark.slow
@pytest.mark.parametrize("name, clip", [("schedule", 1.0), ("schedule_clip005", 0.05)])
def test_1000_steps_of_the_lines_recipe_match_its_train_py(fixtures, name, clip):
    from safetensors.torch import load_file

    from listcopy.schedule import lr_of_step
    from listcopy.training import train

    fx = load_file(fixtures / "research" / f"train_{name}_1000.safetensors")
    recorded = json.loads((fixtures / "research" / "train.json").read_text())[name]
    config = line_config(clip)
    assert [lr_of_step(s, config.train) for s in range(1000)] == fx["lr"].tolist()
    if clip == 0.05:
        assert recorded["clipped_steps"] == 582 == int((fx["grad_norm"] > 0.05).sum())
    run = train(config, progress=False)
    assert run.step == 1000 and run.stop_reason == "max_steps"
    compared = 0
    for key, value in run.state.items():
        if f"step1000.{key}" in fx:
            assert torch.allclose(value, fx[f"step1000.{key}"].to(value.dtype), atol=1e-4), key
            compared += 1
    assert compared >= 7  # W_E, W_pos, W_Q/W_K of both layers, W_U at least
    assert [h["acc"] for h in run.history] == pytest.approx(fx["val_acc_every100"].tolist(),
                                                           abs=5e-4)
    assert [h["step"] for h in run.history] == [s for s, _ in recorded["evals"][0]]
