import numpy as np
import pytest
import torch

from listcopy.analysis.probes import fit_probe, linear_probes, macro_auc, sep_residuals


def _linear_data(n, classes=10, d=8, noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    directions = rng.normal(size=(classes, d))
    X = directions[y] + noise * rng.normal(size=(n, d))  # the label, encoded linearly
    return X, y


@pytest.mark.parametrize("kind", ["logistic", "lda"])
def test_probe_reads_a_linear_code_and_not_a_shuffled_one(kind):
    X, y = _linear_data(3000)
    good = fit_probe(X[:2000], y[:2000], X[2000:], y[2000:], kind)
    assert good.auc > 0.99 and good.acc > 0.9
    shuffled = np.random.default_rng(1).permutation(y)
    bad = fit_probe(X[:2000], shuffled[:2000], X[2000:], shuffled[2000:], kind)
    assert abs(bad.auc - 0.5) < 0.05 and bad.acc < 0.2


def test_constant_activations_predict_the_prior():
    y = np.array([0, 1, 1, 2, 1, 0, 1, 2])
    s = fit_probe(np.ones((8, 4)), y, np.ones((8, 4)), y, "lda")
    assert s.acc == pytest.approx(np.mean(y == 1)) and s.auc == 0.5


def test_macro_auc_is_sklearns():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 300)
    scores = rng.random((300, 5))
    scores[np.arange(300), y] += 0.3
    scores = np.round(scores, 1)  # ties
    scores /= scores.sum(1, keepdims=True)
    want = roc_auc_score(y, scores, multi_class="ovr", average="macro")
    assert macro_auc(y, scores, np.arange(5)) == pytest.approx(want, abs=1e-12)


def test_probes_on_a_trained_model(trained):
    model, config, data = trained
    res = linear_probes(model, config, data)
    assert [r.stage_label for r in res.rows] == ["embed", "embed", "L0", "L0", "L1", "L1", "L2", "L2"]
    assert res.n_train == 320 and res.n_val == 80 and res.position == "SEP"
    # SEP is one vector after the embedding: nothing to read
    assert res.score("embed", "d1").auc == 0.5 and res.score("embed", "d2", "lda").auc == 0.5
    # every digit passes through SEP, so some stage must hold each one (linearly, it turns out)
    for target in ("d1", "d2"):
        assert max(res.score(s, target).auc for s in ("L0", "L1", "L2")) > 0.95
    # the same numbers from the cache's activations at SEP, by hand
    with torch.no_grad():
        _, tr = model.run_with_cache(data.train_inputs)
        _, va = model.run_with_cache(data.val_inputs)
    for l in range(3):
        for i, target in enumerate(("d1", "d2")):
            for kind in ("logistic", "lda"):
                want = fit_probe(tr["resid_post", l][:, 2].numpy(), data.train_inputs[:, i].numpy(),
                                 va["resid_post", l][:, 2].numpy(), data.val_inputs[:, i].numpy(), kind)
                got = res.score(f"L{l}", target, kind)
                assert got.acc == pytest.approx(want.acc, abs=1e-4)
                assert got.auc == pytest.approx(want.auc, abs=1e-4)
    got = sep_residuals(model, config, data.val_inputs, batch_size=33)
    assert torch.allclose(got["blocks.1.hook_resid_post"], va["resid_post", 1][:, 2], atol=1e-6)
    d = res.to_dict()
    assert set(d["rows"][0]) == {"stage", "stage_label", "target", "logistic", "lda"}


def test_probes_subsample_when_asked(trained):
    model, config, data = trained
    a = linear_probes(model, config, data, kinds=("lda",), max_train=100, max_val=50, seed=3)
    b = linear_probes(model, config, data, kinds=("lda",), max_train=100, max_val=50, seed=3)
    assert a.n_train == 100 and a.n_val == 50 and a.to_dict() == b.to_dict()
