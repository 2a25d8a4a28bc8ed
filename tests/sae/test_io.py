"""SAE files: the research line's checkpoints load and evaluate to hand-computed numbers; ours are
SAELens' own format; broken or hostile files are refused with one line, and nothing in them runs."""

import json

import pytest
import torch

from listcopy.checkpoint import CheckpointError
from listcopy.sae.io import LINE_SOURCE, load_sae
from listcopy.sae.run import eval_sae

from .reference import LineFormula, hand_patched, hand_reconstruction, line_checkpoint


@pytest.fixture
def line_file(tmp_path):
    ckpt = line_checkpoint(d=16, d_sae=12, seed=5)
    path = tmp_path / "sae_d12_k4_3layer_20dig_16d.pt"
    torch.save(ckpt, path)
    return path, ckpt


def test_line_checkpoint_computes_the_line_formula(line_file):
    path, ckpt = line_file
    loaded = load_sae(path)
    assert (loaded.d_in, loaded.d_sae, loaded.source) == (16, 12, LINE_SOURCE)
    assert (loaded.hook, loaded.positions) == ("blocks.0.hook_resid_post", "SEP")
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(0))
    ref = LineFormula(ckpt)
    z = loaded.sae.encode(x)
    assert torch.allclose(z, ref.encode(x), atol=1e-5)
    assert 0 < (z != 0).float().mean() < 1  # the threshold cuts some latents, not all
    assert torch.allclose(loaded.sae.decode(z), ref.decode(ref.encode(x)), atol=1e-5)


def test_line_checkpoint_evaluates_to_hand_numbers(line_file, trained, model_dir):
    path, ckpt = line_file
    model, config, data = trained
    got = eval_sae(path, model_dir, device="cpu")
    with torch.no_grad():
        _, cache = model.run_with_cache(data.val_inputs)
    x = cache["blocks.0.hook_resid_post"][:, 2]
    ref = LineFormula(ckpt)
    hand = hand_reconstruction(ref, x)
    for key in ("mse", "explained_variance", "l0"):
        assert got[key] == pytest.approx(hand[key], rel=1e-4, abs=1e-6), key
    assert got["dead"] == hand["dead"] and got["d_sae"] == 12
    acc, per = hand_patched(model, config, data.val_inputs, data.val_targets,
                            "blocks.0.hook_resid_post", (2,), ref)
    assert got["patched_acc"] == pytest.approx(acc)
    assert [got["per_position"][k]["patched_acc"] for k in ("o1", "o2")] == pytest.approx(per)
    assert got["source"] == LINE_SOURCE


def test_ours_is_saelens_format(sae_dir, trained):
    """SAELens' own loader reads our directory and computes what ours does."""
    from sae_lens import SAE

    theirs = SAE.load_from_disk(sae_dir)
    ours = load_sae(sae_dir)
    assert json.loads((sae_dir / "cfg.json").read_text())["architecture"] == "jumprelu"  # BatchTopK
    assert ours.hook == "blocks.0.hook_resid_post" and list(ours.positions) == [2]
    x = torch.randn(50, 16, generator=torch.Generator().manual_seed(2))
    assert torch.equal(theirs.encode(x), ours.sae.encode(x))
    record = json.loads((sae_dir / "sae.json").read_text())
    again = eval_sae(sae_dir, trained[:2], device="cpu")
    for key in ("patched_acc", "baseline_acc", "l0", "mse", "explained_variance", "dead", "d_sae"):
        assert again[key] == pytest.approx(record["metrics"][key]), key


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


class Payload:
    """A pickle that would create a file when unpickled by a full (unsafe) load."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_payload_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    ckpt = line_checkpoint(16, 12, 0)
    ckpt["cfg"]["hook"] = Payload(marker)
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError) as err:
        load_sae(path)
    assert str(path) in _one_line(err) and not marker.exists()


def _broken(ckpt):
    return [
        ("no state_dict", {"cfg": ckpt["cfg"]}, "no 'state_dict'"),
        ("missing", {**ckpt, "state_dict": {k: v for k, v in ckpt["state_dict"].items()
                                            if k != "b_dec"}}, "'b_dec'"),
        ("shape", {**ckpt, "state_dict": {**ckpt["state_dict"],
                                          "decoder.weight": torch.zeros(12, 16)}}, "shape"),
        ("nan", {**ckpt, "state_dict": {**ckpt["state_dict"],
                                        "encoder.bias": torch.full((12,), float("nan"))}},
         "non-finite"),
        ("size", {**ckpt, "cfg": {"dict_size": 99}}, "99 latents"),
        ("mean", {**ckpt, "act_mean": torch.zeros(3)}, "act_mean"),
        ("no latents", {**ckpt, "state_dict": {**ckpt["state_dict"],
                                               "encoder.weight": torch.zeros(0, 16)}},
         "no latents"),
    ]


@pytest.mark.parametrize("case", range(7))
def test_broken_line_checkpoints_one_line(tmp_path, case):
    name, ckpt, words = _broken(line_checkpoint(16, 12, 0))[case]
    path = tmp_path / f"{name}.pt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError) as err:
        load_sae(path)
    assert words in _one_line(err) and str(path) in str(err.value)


def test_truncated_and_missing_files(tmp_path):
    path = tmp_path / "cut.pt"
    torch.save(line_checkpoint(16, 12, 0), path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError) as err:
        load_sae(path)
    assert "unreadable" in _one_line(err)
    with pytest.raises(CheckpointError, match="no such SAE"):
        load_sae(tmp_path / "nothing.pt")


def test_damaged_saelens_directory(sae_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(sae_dir, copy)
    weights = copy / "sae_weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x10  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as err:
        load_sae(copy)
    assert "sha256" in _one_line(err)
    (copy / "sae.json").unlink()
    (copy / "cfg.json").write_text("{not json")
    with pytest.raises(CheckpointError) as err:
        load_sae(copy)
    assert "not a readable SAELens SAE" in _one_line(err)
    (copy / "cfg.json").unlink()
    with pytest.raises(CheckpointError, match="no cfg.json"):
        load_sae(copy)
