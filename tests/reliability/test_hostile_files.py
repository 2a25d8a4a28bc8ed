"""Hostile and broken files: each is refused with one line naming the file and the problem, and no
payload ever runs."""

import json
import pickle
import random
import shutil

import pytest
import torch

from listcopy.checkpoint import MODEL_FILE, RUN_FILE, STATE_FILE, CheckpointError, load
from listcopy.config import Config
from listcopy.training import train
from tests.conftest import FIXTURES

SEED_PT = FIXTURES / "seed_default_1000.pt"


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("good") / "run"
    train(Config().override(["train.max_steps=40", "train.eval_every=20"]), out, progress=False)
    return out


def refused(path, tally, *needles, overrides=()):
    tally["hostile files tried"] += 1
    with pytest.raises(CheckpointError) as err:
        load(path, overrides)
    text = str(err.value)
    assert "\n" not in text and str(path).split("/")[-1] in text, text
    for needle in needles:
        assert needle in text, text
    return text


class Payload:
    """Unpickling this would create a marker file (if the payload ever ran)."""

    marker = None

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("protocol", [2, 4])
def test_pickle_payloads_never_run(tmp_path, tally, protocol):
    marker = tmp_path / "payload-ran"
    Payload.marker = marker
    state = torch.load(SEED_PT, weights_only=True)
    for where in ("top", "inside"):
        bad = tmp_path / f"{where}-{protocol}.pt"
        obj = Payload() if where == "top" else {**state, "embed.W_E": Payload()}
        with open(bad, "wb") as fh:
            pickle.dump(obj, fh, protocol=protocol)
        refused(bad, tally, "refused")
        # also disguised as torch.save's zip format
        zipped = tmp_path / f"zip-{where}-{protocol}.pt"
        torch.save(obj, zipped, pickle_protocol=protocol)
        refused(zipped, tally, "refused")
    assert not marker.exists()


def test_non_state_dict_pickles(tmp_path, tally):
    for i, obj in enumerate([[1, 2], torch.zeros(3), {"a": 1}, {1: torch.zeros(1)}, None]):
        path = tmp_path / f"odd{i}.pt"
        torch.save(obj, path)
        refused(path, tally)


def test_truncated_and_bit_flipped_safetensors(good_run, tmp_path, tally):
    rng = random.Random(0)
    original = (good_run / MODEL_FILE).read_bytes()
    cases = [original[:n] for n in (0, 7, 8, 100, len(original) // 2, len(original) - 1)]
    for _ in range(20):
        data = bytearray(original)
        pos = rng.randrange(len(data))
        data[pos] ^= 1 << rng.randrange(8)
        cases.append(bytes(data))
    for i, data in enumerate(cases):
        run = tmp_path / f"run{i}"
        shutil.copytree(good_run, run)
        (run / MODEL_FILE).write_bytes(data)
        refused(run, tally, MODEL_FILE)


def test_json_with_wrong_types_or_missing_fields(good_run, tmp_path, tally):
    record = json.loads((good_run / RUN_FILE).read_text())
    variants = {
        "not-json": "{",
        "list": "[]",
        "no-config": json.dumps({k: v for k, v in record.items() if k != "config"}),
        "config-string": json.dumps({**record, "config": "3layer"}),
        "section-list": json.dumps({**record, "config": {"model": [1, 2]}}),
        "wrong-type": json.dumps({**record, "config": {**record["config"], "model": {"d_model": "8"}}}),
        "unknown-key": json.dumps({**record, "config": {**record["config"], "train": {"lrr": 1}}}),
        "binary": b"\xff\xfe\x00",
    }
    for name, text in variants.items():
        run = tmp_path / name
        shutil.copytree(good_run, run)
        if isinstance(text, bytes):
            (run / RUN_FILE).write_bytes(text)
        else:
            (run / RUN_FILE).write_text(text)
        refused(run, tally, RUN_FILE)


def test_state_dicts_with_missing_extra_misshaped_tensors(tmp_path, tally):
    state = torch.load(SEED_PT, weights_only=True)
    variants = {
        "missing": {k: v for k, v in state.items() if k != "blocks.1.attn.W_Q"},
        "missing-buffer": {k: v for k, v in state.items() if not k.endswith("IGNORE")},
        "extra": {**state, "blocks.3.attn.W_Q": torch.zeros(1, 8, 8)},
        "misshaped": {**state, "unembed.W_U": torch.zeros(8, 100)},
        "transposed": {**state, "unembed.W_U": state["unembed.W_U"].T.contiguous()},
        "int-weights": {**state, "embed.W_E": torch.zeros(101, 8, dtype=torch.int64)},
        "inf-weights": {**state, "pos_embed.W_pos": torch.full((5, 8), float("inf"))},
        "bad-mask": {**state, "blocks.0.attn.mask": torch.ones(5, 5, dtype=torch.bool)},
    }
    for name, sd in variants.items():
        path = tmp_path / f"{name}.pt"
        torch.save(sd, path)
        refused(path, tally)


def test_checkpoint_for_another_config(good_run, tally):
    refused(SEED_PT, tally, "has shape", overrides=["model.d_model=16"])
    refused(SEED_PT, tally, "unexpected tensor", overrides=["model.n_layers=2"])
    refused(SEED_PT, tally, "missing tensor", overrides=["model.ln=true"])
    refused(good_run, tally, overrides=["task.n_digits=50"])


def test_resume_state_is_checked_too(good_run, tmp_path, tally):
    run = tmp_path / "r"
    shutil.copytree(good_run, run)
    data = bytearray((run / STATE_FILE).read_bytes())
    data[-3] ^= 0xFF
    (run / STATE_FILE).write_bytes(bytes(data))
    tally["hostile files tried"] += 1
    with pytest.raises(CheckpointError, match=STATE_FILE):
        train(Config().override(["train.max_steps=80", "train.eval_every=20"]), run, resume=True,
              progress=False)


RESUME = ["train.max_steps=80", "train.eval_every=20"]


def rewritten(good_run, run, change=dict, sha256=True, **record):
    """A copy of ``good_run`` whose train state is rewritten as anyone can (safetensors' own
    ``save_file``): ``change`` applied to its tensors (``dict``: none), ``record`` to its header's
    run record, and the header's sha256 made to match the tensors (``sha256``) or left out."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from listcopy.checkpoint import tensors_digest

    shutil.copytree(good_run, run)
    with safe_open(str(run / STATE_FILE), framework="pt") as fh:
        tensors, header = change({k: fh.get_tensor(k) for k in fh.keys()}), fh.metadata()
    header = {"listcopy": json.dumps({**json.loads(header["listcopy"]), **record})}
    if sha256:
        header["sha256"] = tensors_digest(tensors)
    save_file(tensors, str(run / STATE_FILE), metadata=header)
    return run


def replace(key, value):
    return lambda tensors: {**tensors, key: value(tensors[key])}


def without(key):
    return lambda tensors: {k: v for k, v in tensors.items() if k != key}


TAMPERED = {  # name: (change, the key the error names, what it says)
    "moment-shape": (replace("optim.exp_avg", lambda t: t[:100].clone()), "'optim.exp_avg'",
                     "shape (100,)"),
    "moment-dtype": (replace("optim.exp_avg_sq", torch.Tensor.double), "'optim.exp_avg_sq'",
                     "float64"),
    "moment-gone": (without("optim.exp_avg"), "optim", "no optimiser state"),
    "generator-10-bytes": (replace("rng.generator", lambda t: t[:10].clone()), "'rng.generator'",
                           "shape (10,)"),
    "generator-zeros": (replace("rng.generator", torch.zeros_like), "'rng.generator'",
                        "not a random generator"),
    "perm-huge": (replace("rng.perm", lambda t: torch.full_like(t, 10**9)), "'rng.perm'",
                  "distinct rows"),
    "perm-negative": (replace("rng.perm", torch.neg), "'rng.perm'", "distinct rows"),
    "perm-repeats": (replace("rng.perm", torch.zeros_like), "'rng.perm'", "distinct rows"),
    "perm-short": (replace("rng.perm", lambda t: t[:3].clone()), "'rng.perm'",
                   "expected torch.int64"),
    "perm-float": (replace("rng.perm", torch.Tensor.float), "'rng.perm'", "expected torch.int64"),
    "perm-gone": (without("rng.perm"), "'rng.perm'", "no "),
    "epoch-ahead": (replace("rng.epoch", lambda t: t + 5), "'rng.epoch'", "not an epoch"),
    "weights-shape": (replace("model.embed.W_E", lambda t: t[:50].clone()), "'embed.W_E'", "shape"),
    "weights-nan": (replace("model.unembed.W_U", lambda t: t * float("nan")), "'unembed.W_U'",
                    "non-finite"),
}


@pytest.mark.parametrize("name", TAMPERED)
def test_a_tampered_train_state_is_refused_naming_the_key(good_run, tmp_path, tally, name):
    """With a matching sha256 the contents are checked against the run's config; without one the
    file is refused as not listcopy's (every train state listcopy writes carries one)."""
    change, key, says = TAMPERED[name]
    for sha256 in (True, False):
        run = rewritten(good_run, tmp_path / f"{name}-{sha256}", change, sha256)
        tally["hostile files tried"] += 1
        with pytest.raises(CheckpointError) as err:
            train(Config().override(RESUME), run, resume=True, progress=False)
        text = str(err.value)
        assert "\n" not in text and f"{run / STATE_FILE}:" in text, text
        for needle in ((key, says) if sha256 else ("no sha256", "not written by listcopy")):
            assert needle in text, text


def test_a_rewritten_train_state_that_is_intact_still_resumes(good_run, tmp_path):
    run = rewritten(good_run, tmp_path / "r")
    assert train(Config().override(RESUME), run, resume=True, progress=False).step == 80


def test_a_tampered_fresh_data_generator_is_refused(tmp_path):
    config = Config().override(["train.max_steps=20", "train.eval_every=10",
                                "train.fresh_data=true"])
    train(config, tmp_path / "good", progress=False)
    run = rewritten(tmp_path / "good", tmp_path / "r",
                    replace("rng.fresh", lambda t: t[:10].clone()))
    longer = config.override(["train.max_steps=40"])
    with pytest.raises(CheckpointError, match="'rng.fresh' is torch.uint8 of shape \\(10,\\)"):
        train(longer, run, resume=True, progress=False)
    assert train(longer, tmp_path / "good", resume=True, progress=False).step == 40


@pytest.mark.parametrize("field, value", [("step", "abc"), ("step", -1), ("history", 5),
                                          ("history", [{"step": 20}]), ("wall_time_s", "x")])
def test_resume_metadata_of_the_wrong_type_is_refused(good_run, tmp_path, field, value):
    """The sha256 covers the tensors, not the header's run record: its fields are checked too."""
    run = rewritten(good_run, tmp_path / "r", **{field: value})
    with pytest.raises(CheckpointError, match=f"corrupt listcopy metadata \\('{field}'"):
        train(Config().override(RESUME), run, resume=True, progress=False)


@pytest.mark.parametrize("name, sha256", [("moment-shape", False), ("generator-10-bytes", True),
                                          ("perm-huge", True)])
def test_the_cli_refuses_a_tampered_train_state_in_one_line_and_changes_nothing(
        good_run, tmp_path, name, sha256):
    """The audit's three tracebacks (a moment of another shape, a 10-byte generator state, a batch
    order of 10^9s): one line, exit 2, and the run directory byte for byte as it was."""
    from tests.conftest import run_cli
    from tests.test_cli import assert_one_line_error

    run = rewritten(good_run, tmp_path / "r", TAMPERED[name][0], sha256)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    result = run_cli("train", "--resume", "--out", str(run), "--set", "train.max_steps=80",
                     "--set", "train.eval_every=20", "--quiet")
    key = TAMPERED[name][1] if sha256 else "no sha256"
    assert_one_line_error(result, str(run / STATE_FILE), key)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
