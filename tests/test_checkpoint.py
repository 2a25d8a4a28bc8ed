"""Run directories, seed .pt files both ways, atomic writes and refusals of bad files."""

import json
import os
import pickle

import pytest
import torch

from listcopy.checkpoint import (MODEL_FILE, RUN_FILE, CheckpointError, atomic_write,
                                 export_seed, load, read_run_json)
from listcopy.config import Config
from listcopy.metrics import evaluate
from listcopy.task import dataset
from listcopy.training import train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "r"
    run = train(Config().override(["train.max_steps=200", "train.eval_every=50"]), out,
                progress=False)
    return out, run


def test_save_load_eval_round_trip(run_dir):
    out, run = run_dir
    model, config = load(out)
    assert config == run.config
    metrics = evaluate(model, dataset(config))
    assert metrics["acc"] == pytest.approx(run.metrics["acc"], abs=1e-6)
    assert metrics["loss"] == pytest.approx(run.metrics["loss"], abs=1e-5)
    record = read_run_json(out)
    assert record["step"] == 200 and record["name"] == "3layer_100dig_8d"
    assert {"torch", "transformer-lens", "safetensors", "python"} <= set(record["versions"])
    assert [h["step"] for h in record["history"]] == [50, 100, 150, 200]
    assert record["config"] == config.to_dict()


def test_seed_checkpoint_evaluates_to_the_seeds_number(fixtures):
    """The 1000-step model written by the seed's own code, on its own held-out split."""
    for name in ("seed_default_1000.pt", "seed_default_1000_tl2.pt", "3layer_100dig_8d.pt"):
        model, config = load(fixtures / name)
        assert config == Config()
        assert evaluate(model, dataset(config))["acc"] == pytest.approx(0.75775, abs=1e-6)


@pytest.mark.parametrize("ignore,accepted", [(-1e5, True), (-float("inf"), True),
                                               (0.0, False), (-10.0, False)])
def test_a_saved_ignore_of_tl1_is_taken_and_a_small_one_refused(tmp_path, fixtures, ignore,
                                                                accepted):
    """TransformerLens 1.x saved IGNORE = -1e5 (2.x on: -inf): the seed's model with it evaluates
    to the seed's number; an IGNORE that would let a masked key through is refused."""
    state = torch.load(fixtures / "3layer_100dig_8d.pt", weights_only=True)
    state = {k: torch.tensor(ignore) if k.endswith(".IGNORE") else v for k, v in state.items()}
    path = tmp_path / "3layer_100dig_8d.pt"
    torch.save(state, path)
    if not accepted:
        with pytest.raises(CheckpointError, match=r"'blocks\.0\.attn\.IGNORE' must be -inf"):
            load(path)
        return
    model, config = load(path)
    assert evaluate(model, dataset(config))["acc"] == pytest.approx(0.75775, abs=1e-6)


def test_config_of_a_seed_file_comes_from_its_name_then_set(tmp_path, fixtures):
    state = torch.load(fixtures / "seed_default_1000.pt", weights_only=True)
    renamed = tmp_path / "2layer_100dig_8d.pt"
    torch.save(state, renamed)
    with pytest.raises(CheckpointError, match=r"2layer_100dig_8d\.pt: unexpected tensor 'blocks\.2"):
        load(renamed)
    model, config = load(renamed, ["model.n_layers=3"])
    assert config.model.n_layers == 3


def _tril(n):
    return torch.tril(torch.ones(n, n, dtype=torch.bool))


@pytest.mark.parametrize("mask, accepted", [
    (_tril(5), True),                               # TransformerLens 2.x: tril(n_ctx)
    (torch.zeros(0, 0, dtype=torch.bool), True),    # TransformerLens 3.x: empty
    (_tril(8), True),                               # a larger context, cut to n_ctx
    (_tril(4), False), (torch.ones(5, 5, dtype=torch.bool), False), (_tril(5).float(), False),
    (_tril(5)[0], False), (_tril(5).T.contiguous(), False),
])
def test_one_rule_for_saved_causal_masks_in_checks_and_loading(fixtures, mask, accepted):
    """The checkpoint check and the model's own loading accept the same mask buffers."""
    from listcopy.checkpoint import check_state_dict
    from listcopy.model import ListCopyTransformer, is_saved_causal_mask

    assert is_saved_causal_mask(mask, 5) is accepted
    state = torch.load(fixtures / "seed_default_1000.pt", weights_only=True)
    state["blocks.1.attn.mask"] = mask
    model = ListCopyTransformer(Config())
    if accepted:
        check_state_dict(state, Config(), "x.pt")
        model.load_state_dict(state)  # strict; the buffer becomes the model's own tril(5)
        assert torch.equal(model.blocks[1].attn.mask, _tril(5))
        return
    with pytest.raises(CheckpointError, match="x.pt: 'blocks.1.attn.mask' is not a causal mask"):
        check_state_dict(state, Config(), "x.pt")
    if mask.shape != (5, 5):  # loading leaves a refused buffer as it is: strict loading fails
        with pytest.raises(RuntimeError):
            model.load_state_dict(state)
    else:  # or takes it as given: never taken for a causal mask
        model.load_state_dict(state)
        assert torch.equal(model.blocks[1].attn.mask, mask)


def test_export_has_exactly_the_seeds_keys_and_loads_weights_only(run_dir, tmp_path, fixtures):
    out, run = run_dir
    export_seed(run.model().state_dict(), tmp_path / "e.pt")
    exported = torch.load(tmp_path / "e.pt", weights_only=True)
    seed = torch.load(fixtures / "seed_default_1000_tl2.pt", weights_only=True)  # TL 2.18 format
    assert list(exported) == list(seed)
    for k in seed:
        assert exported[k].shape == seed[k].shape and exported[k].dtype == seed[k].dtype, k
    model, _ = load(tmp_path / "e.pt")
    tokens = dataset(Config()).val_inputs[:16]
    assert torch.equal(model(tokens), run.model()(tokens))


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.pt"
    with open(bad, "wb") as fh:
        pickle.dump({"embed.W_E": Payload()}, fh)
    with pytest.raises(CheckpointError, match="evil.pt: refused"):
        load(bad)
    assert not marker.exists()


@pytest.mark.parametrize("data, what", [
    (b"hi\n", "not a zip, a pickle or safetensors"), (b"", "an empty file"),
    (bytes(range(7, 107)), "not a zip, a pickle or safetensors"),
    (pickle.dumps({"a": 1}, protocol=0), "not a zip, a pickle or safetensors")])
def test_a_file_of_no_checkpoint_format_says_so(tmp_path, data, what):
    """Not torch.load's own words for it (a text file gave "KeyError: 105")."""
    path = tmp_path / "m.pt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as err:
        load(path)
    assert str(err.value) == f"{path}: not a checkpoint ({what})"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_safetensors_give_one_line_errors(run_dir, tmp_path, damage):
    import shutil

    out, _ = run_dir
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    f = copy / MODEL_FILE
    data = f.read_bytes()
    f.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00\xff" * 50,
                   "empty": b""}[damage])
    with pytest.raises(CheckpointError) as err:
        load(copy)
    assert str(copy / MODEL_FILE) in str(err.value) and "\n" not in str(err.value)


def test_broken_state_dicts_name_the_tensor(tmp_path, fixtures):
    state = torch.load(fixtures / "seed_default_1000.pt", weights_only=True)
    cases = {
        "missing": ({k: v for k, v in state.items() if k != "unembed.W_U"}, "missing tensor 'unembed.W_U'"),
        "extra": ({**state, "blocks.0.mlp.W_in": torch.zeros(2)}, "unexpected tensor 'blocks.0.mlp.W_in'"),
        "shape": ({**state, "embed.W_E": torch.zeros(100, 8)}, r"'embed.W_E' has shape \(100, 8\)"),
        "nan": ({**state, "embed.W_E": torch.full((101, 8), float("nan"))}, "non-finite"),
    }
    for name, (sd, message) in cases.items():
        path = tmp_path / f"{name}.pt"
        torch.save(sd, path)
        with pytest.raises(CheckpointError, match=message):
            load(path)


def test_bad_run_json(run_dir, tmp_path):
    import shutil

    out, _ = run_dir
    copy = tmp_path / "c"
    shutil.copytree(out, copy)
    (copy / RUN_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt JSON"):
        load(copy)
    (copy / RUN_FILE).write_text(json.dumps({"config": {"model": {"d_model": "eight"}}}))
    with pytest.raises(CheckpointError, match="model.d_model"):
        load(copy)
    (copy / RUN_FILE).write_text(json.dumps({"config": {"model": {"d_model": 16}}}))
    with pytest.raises(CheckpointError, match="has shape"):
        load(copy)  # a checkpoint for another config
    (copy / RUN_FILE).unlink()
    with pytest.raises(CheckpointError, match="no such run directory|not found"):
        load(copy)
    empty = tmp_path / "3layer_100dig_8d.pt"  # a directory, whatever its name
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"3layer_100dig_8d\.pt: a directory with no run"):
        load(empty)


def test_atomic_write_leaves_the_previous_file_when_the_writer_dies(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")

    def dies(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, dies)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # no temporary left behind


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc (no new files there)")
def test_atomic_write_names_the_path_given_not_the_temporary():
    from listcopy.cli import os_error_line

    with pytest.raises(OSError) as caught:
        atomic_write("/proc/x.json", lambda tmp: tmp.write_text("{}"))
    assert caught.value.filename == "/proc/x.json"
    assert os_error_line(caught.value).endswith(": /proc/x.json")
