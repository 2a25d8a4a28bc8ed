"""What the paper "Order by Scale" (Farrell, Leask, Al Moubayed, NeurIPS 2025 workshop) fixes:
its two models' settings (Table 3) and the numbers it reports (sections 3-4, appendix A-B), so
that ``listcopy paper`` can put each measured number beside the paper's.

``MODELS`` are listcopy overrides; ``RESEARCH_VARIANT`` holds the overrides that select the
paper's model variant (MASK token at the outputs' input positions, the layer-0 mask): empty until
listcopy has that variant (issue 14), so until then the page says it shows the seed's variant.
"""

from __future__ import annotations

RESEARCH_VARIANT: tuple[str, ...] = ()

# Table 3: one head, d_model 64, no LayerNorm, no bias, frozen identity W_V / W_O, AdamW lr 1e-3,
# weight decay 0.01, batch 128; 100 digits, lists of 2, 80% of the 10,000 lists train. The line's
# train.py stops at 99.9% validation accuracy or 100,000 steps.
_COMMON = ("task.n_digits=100", "task.list_len=2", "model.n_heads=1", "model.d_model=64",
           "model.ln=false", "model.use_bias=false", "model.freeze_wv=true",
           "model.freeze_wo=true", "train.lr=1e-3", "train.weight_decay=0.01",
           "train.batch_size=128", "train.max_steps=100000", "train.early_stop_acc=0.999")

MODELS: dict[str, tuple[str, ...]] = {
    "2layer": (*_COMMON, "model.n_layers=2"),
    "3layer": (*_COMMON, "model.n_layers=3"),
}

# The numbers the paper reports, by the key listcopy measures them under.
PAPER_NUMBERS: dict[str, dict[str, tuple[float, str]]] = {
    "2layer": {
        "acc": (0.922, "validation accuracy (section 4)"),
        "moderation_o2_wrong": (0.62, "o2 wrong with the moderation edge o2<-o1 ablated (4.1)"),
        "moderation_eq_d1": (0.54, "of those errors, o2 predicted d1 (4.1)"),
        "alpha_o2_before": (0.84, "o2 accuracy from l_o1 + delta l (4.2)"),
        "alpha_o2_after": (0.99, "the same with alpha_{s->d1} = 0, alpha_{s->d2} = 1 (4.2)"),
        "mean_attention_acc": (0.45, "accuracy with the mean attention pattern (appendix B)"),
        "svc_accuracy": (0.99, "positional SVC accuracy, 'over 99%' (4.3)"),
    },
    "3layer": {
        "acc": (1.0, "validation accuracy (section 4)"),
    },
}

# Table 4 (appendix A): 2 layers, 1 head; mean validation accuracy over three runs.
# (d_model, LN, bias, learned W_V, learned W_O) -> accuracy
TABLE4: dict[tuple[int, bool, bool, bool, bool], float] = {
    (64, False, False, True, True): 0.6207, (64, False, True, True, True): 0.4983,
    (64, True, False, True, True): 0.7709, (64, True, True, True, True): 0.7744,
    (64, False, False, True, False): 0.7513, (64, False, True, True, False): 0.7552,
    (64, True, False, True, False): 0.9089, (64, True, True, True, False): 0.9202,
    (64, False, False, False, True): 0.7481, (64, False, True, False, True): 0.7560,
    (64, True, False, False, True): 0.9162, (64, True, True, False, True): 0.7636,
    (64, False, False, False, False): 0.9180, (64, False, True, False, False): 0.7487,
    (64, True, False, False, False): 0.9215, (64, True, True, False, False): 0.8935,
    (128, False, False, False, False): 0.9192, (32, False, False, False, False): 0.6074,
    (8, False, False, False, False): 0.3148,
}
