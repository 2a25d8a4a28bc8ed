import torch

from listcopy.analysis.lens import logit_lens
from listcopy.analysis.common import val_metrics

from . import reference as ref


def test_logit_lens_decodes_each_stage_as_by_hand(trained):
    model, config, data = trained
    res = logit_lens(model, config, data, example=5)
    x = data.val_inputs[5:6]
    with torch.no_grad():
        logits, cache = model.run_with_cache(x)
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_resid_post" for l in range(3)]
    assert res.stages == tuple(names) and res.stage_labels == ("embed", "L0", "L1", "L2")
    for s, name in enumerate(names):
        probs = (cache[name][0] @ model.W_U + model.b_U).softmax(-1)
        assert torch.equal(res.top_token[s], probs.argmax(-1))
        assert torch.allclose(res.top_prob[s], probs.max(-1).values, atol=1e-5)
        target = data.val_targets[5]
        assert torch.allclose(res.target_prob[s], probs[torch.arange(5), target], atol=1e-5)
    assert torch.equal(res.top_token[-1], logits[0].argmax(-1))  # the last stage is the model's output
    for l in range(3):
        assert torch.allclose(res.attention[l], cache["pattern", l][0], atol=1e-6)
    # the embedding stage is W_E[token] + W_pos
    emb = model.W_E[x[0]] + model.W_pos
    assert torch.equal(res.top_token[0], (emb @ model.W_U).argmax(-1))
    assert abs(res.val_acc[-1] - val_metrics(model, data).acc) < 1e-6
    assert ref.no_hooks(model)


def test_logit_lens_with_layernorm_ends_at_the_models_output(odd):
    model, config, data = odd
    res = logit_lens(model, config, data, example=0, batch_size=7)
    with torch.no_grad():
        logits = model(data.val_inputs[:1])
    assert torch.allclose(res.top_prob[-1], logits[0].softmax(-1).max(-1).values, atol=1e-5)
    assert abs(res.val_acc[-1] - val_metrics(model, data).acc) < 1e-6
    d = res.to_dict()
    assert len(d["top_token"]) == 3 and len(d["top_token"][0]) == 7
