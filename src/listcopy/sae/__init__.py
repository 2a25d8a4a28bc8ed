"""Sparse autoencoders on a listcopy model's activations (the SEP residual by default), on SAELens.

Needs the optional extra: ``pip install -e ".[sae]"`` (SAELens 6, which keeps TransformerLens at 3.x).
The pipeline, one module per stage:

    site        a hook and positions: read and splice activations there
    activations collect them over the task's lists; seeded batches for the trainer
    config      SAEConfig: site, architecture (batchtopk, topk, jumprelu, standard), training
    train       fit_sae: SAELens' SAE classes and trainer on our activations
    io          save / load SAELens directories; the research line's .pt checkpoints
    metrics     L0, dead/alive, MSE, explained variance, baseline and patched accuracy
    latents     latents and layer-0 attention per list, for the paper's questions
    directions  decoder rows against E_d + P_i      attention  graded or binary (alpha)
    pairs       swapped pairs (a, b) / (b, a)        steering   scale one latent: stay/swap/break
    analyze     all of them as one JSON-ready result
    run         train_sae / eval_sae / analyze_sae from paths (what the CLI and sweeps call)
    cli         ``listcopy sae train|eval|analyze``

    >>> from listcopy.sae import SAEConfig, train_sae, eval_sae
    >>> run = train_sae("runs/2layer_100dig_64d", SAEConfig(d_sae=100, k=4), out="runs/sae-demo")
    >>> eval_sae("runs/sae-demo", "runs/2layer_100dig_64d")["patched_acc"]

Nothing here imports SAELens until an SAE is built or loaded, nor torch until a name is used
(so ``listcopy --help`` stays fast).
"""

from ..lazy import lazy_attributes

_LAZY = {
    "ARCHS": "config", "SAEConfig": "config", "DEFAULT_HOOK": "site", "Site": "site",
    "train_sae": "run", "eval_sae": "run", "analyze_sae": "run", "SAERun": "run",
    "fit_sae": "train", "load_sae": "io", "save_sae": "io", "LoadedSAE": "io",
    "evaluate_sae": "metrics", "reconstruction_metrics": "metrics",
    "patched_accuracy": "metrics", "analyze": "analyze",
}

__all__ = list(_LAZY)


__getattr__ = lazy_attributes(__name__, _LAZY)
