"""Independent references for the SAE tests: the line's formula and a hand-written splice."""

import torch


def line_checkpoint(d: int, d_sae: int, seed: int, threshold: float = 0.2) -> dict:
    """A checkpoint in the research line's format (dictionary_learning BatchTopK), random weights."""
    g = torch.Generator().manual_seed(seed)
    state = {"encoder.weight": torch.randn(d_sae, d, generator=g) / d ** 0.5,
             "encoder.bias": 0.1 * torch.randn(d_sae, generator=g),
             "decoder.weight": torch.randn(d, d_sae, generator=g) / d_sae ** 0.5,
             "b_dec": 0.1 * torch.randn(d, generator=g),
             "k": torch.tensor(4), "threshold": torch.tensor(threshold)}
    return {"state_dict": state, "cfg": {"activation_dim": d, "dict_size": d_sae, "k": 4},
            "act_mean": 0.5 * torch.randn(d, generator=g)}


class LineFormula:
    """The line's inference, written out: z = relu((x - mean - b_dec) W_enc^T + b_enc) kept where
    z > threshold; x_hat = z W_dec^T + b_dec + mean."""

    def __init__(self, ckpt: dict):
        self.s, self.mean = ckpt["state_dict"], ckpt["act_mean"]

    def encode(self, x):
        z = torch.relu((x - self.mean - self.s["b_dec"]) @ self.s["encoder.weight"].T
                       + self.s["encoder.bias"])
        return z * (z > self.s["threshold"])

    def decode(self, z):
        return z @ self.s["decoder.weight"].T + self.s["b_dec"] + self.mean


@torch.no_grad()
def hand_outputs(model, inputs, hook_name, positions, sae):
    """The predicted outputs (N, L) with decode(encode(.)) spliced in by a hook written here."""

    def splice(act, hook):
        act = act.clone()
        for p in positions:
            act[:, p] = sae.decode(sae.encode(act[:, p]))
        return act

    logits = model.run_with_hooks(inputs, fwd_hooks=[(hook_name, splice)])
    assert not torch.allclose(logits, model(inputs))  # the splice changes something
    L = model.config.task.list_len
    return logits[:, L + 1:].argmax(-1)


def hand_patched(model, config, inputs, targets, hook_name, positions, sae):
    """Accuracy (overall, per output position) of ``hand_outputs``, counted by a loop."""
    preds = hand_outputs(model, inputs, hook_name, positions, sae)
    L = config.task.list_len
    hits = [[int(int(preds[n, i]) == int(targets[n, L + 1 + i])) for i in range(L)]
            for n in range(inputs.shape[0])]
    per = [sum(h[i] for h in hits) / len(hits) for i in range(L)]
    return sum(per) / L, per


@torch.no_grad()
def hand_reconstruction(sae, x):
    """mse, explained variance, L0 and dead latents written directly from their definitions."""
    z = sae.encode(x)
    x_hat = sae.decode(z)
    err = ((x - x_hat) ** 2).sum()
    return {"mse": float(err / x.numel()),
            "explained_variance": float(1 - err / ((x - x.mean(0)) ** 2).sum()),
            "l0": float((z != 0).sum(1).float().mean()),
            "dead": int((z == 0).all(0).sum())}
