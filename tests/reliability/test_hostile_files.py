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
