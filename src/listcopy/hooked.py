"""``ListCopyTransformer``: the model (model.py's ``ListCopyCore``) on TransformerLens'
``HookedRootModule``, its hook slots ``HookPoint``s: ``run_with_hooks``, ``run_with_cache``,
``hooks()`` and ``cache["pattern", 0]`` work as on the notebook's ``HookedTransformer``.

Importing this module imports TransformerLens (seconds); model.py's ``ListCopyCore`` does not.
"""

from __future__ import annotations

from torch import Tensor
from transformer_lens import ActivationCache, HookedRootModule
from transformer_lens.hook_points import HookPoint

from .config import Config
from .model import ListCopyCore


class ListCopyTransformer(ListCopyCore, HookedRootModule):
    """The seed's model (or the research line's variant) with TransformerLens hooks."""

    def __init__(self, config: Config):
        super().__init__(config, hook_point=HookPoint)
        self.setup()

    def run_with_cache(self, *args, **kwargs) -> tuple[Tensor, ActivationCache]:
        """As TransformerLens 3.x: the cache is an ``ActivationCache`` (``cache["pattern", 0]``)."""
        out, cache = super().run_with_cache(*args, **kwargs)
        has_batch = not kwargs.get("remove_batch_dim", False)
        return out, ActivationCache(cache, self, has_batch_dim=has_batch)
