"""Building and loading the CPU kernel: the torch fallback without a compiler, where the cache
cannot be written, and (issue 12) what is trusted: private cache folders, libraries owned by this
user and writable by nobody else, rebuilt when broken, fsynced before they are renamed into place.
"""

import logging

import pytest

from listcopy.engine import Ensemble

from .helpers import needs_kernel, small, state_dicts


def test_no_compiler_falls_back_to_torch_with_a_notice(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    config = small()
    with caplog.at_level(logging.WARNING, logger="listcopy"):
        ens = Ensemble(config, state_dicts(config, [0], False))
    assert ens.backend == "torch"
    notices = [r.getMessage() for r in caplog.records]
    assert len(notices) == 1 and "torch engine" in notices[0] and "\n" not in notices[0]
    with pytest.raises(ValueError, match="cannot train"):
        Ensemble(config, state_dicts(config, [0], False), backend="kernel")


@needs_kernel
def test_kernel_builds_where_the_cache_cannot_be_written(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    config = small(n_layers=1)  # a shape no other test builds in this process
    assert Ensemble(config, state_dicts(config, [0], False)).backend == "kernel"
