"""Which positions each layer must compute: one derivation from the attention masks, both backends.

Only the output positions' logits matter, so the last layer needs only their rows, the layer
before it those rows and every key they attend to, and so on back to the embedding. Everything is
derived from one allowed-matrix per layer (query row i may attend to key j), so a model whose layers
mask differently only passes other matrices. A row with no allowed key receives nothing in that
layer (its pattern row is zero): it keeps its residual.

The torch backend refines this into its pruned plan (plan.py); the kernel writes it into its
shape header (kernel.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..task import layer_masks

Allowed = tuple[tuple[bool, ...], ...]  # (T, T): query row i may attend to key j
Rows = tuple[int, ...]  # positions, ascending


def allowed_matrices(list_len: int, n_layers: int,
                     layer0_mask: bool = False) -> tuple[Allowed, ...]:
    """Per layer, where the model lets a query receive from a key (:func:`listcopy.task.layer_masks`):
    causal and the seed's list mask, every layer the same; with ``layer0_mask`` the outputs
    receive nothing in layer 0 (their rows have no key)."""
    return tuple(tuple(tuple(bool(x) for x in row) for row in m.allowed.tolist())
                 for m in layer_masks(list_len, n_layers, layer0_mask))


def output_rows(list_len: int) -> Rows:
    """The output positions, ``L + 1 .. 2L``."""
    return tuple(range(list_len + 1, 2 * list_len + 1))


@dataclass(frozen=True)
class RowNeeds:
    """What each layer computes. ``held[l]`` (l = 0..n_layers): the positions of layer l's input
    that reach an output (``held[n_layers]``: the outputs); ``keys[l][i]``: the keys row i attends
    to in layer l."""

    allowed: tuple[Allowed, ...]
    held: tuple[Rows, ...]
    keys: tuple[tuple[Rows, ...], ...]

    @property
    def n_layers(self) -> int:
        return len(self.allowed)

    def out(self, layer: int) -> Rows:
        """The rows layer ``layer`` must produce."""
        return self.held[layer + 1]

    def attending(self, layer: int) -> Rows:
        """Rows of ``out(layer)`` with more than one key: they need a query, and their keys a key.
        (With one key the pattern is exactly 1 on it; with none it is 0.)"""
        return tuple(r for r in self.out(layer) if len(self.keys[layer][r]) > 1)

    def key_rows(self, layer: int) -> Rows:
        """Positions whose key an attending row compares its query with."""
        return tuple(sorted({k for r in self.attending(layer) for k in self.keys[layer][r]}))

    def value_rows(self, layer: int) -> Rows:
        """Positions whose value some row of ``out(layer)`` reads."""
        return tuple(sorted({k for r in self.out(layer) for k in self.keys[layer][r]}))


def row_needs(allowed: tuple[Allowed, ...], out_rows: Rows) -> RowNeeds:
    """Backwards from ``out_rows`` after the last layer: a layer needs the rows it must produce
    (the residual) and every key they attend to."""
    n_layers = len(allowed)
    keys = tuple(tuple(tuple(j for j, ok in enumerate(row) if ok) for row in matrix)
                 for matrix in allowed)
    held: list[Rows] = [()] * (n_layers + 1)
    held[n_layers] = tuple(sorted(out_rows))
    for layer in reversed(range(n_layers)):
        rows = set(held[layer + 1]) | {k for r in held[layer + 1] for k in keys[layer][r]}
        held[layer] = tuple(sorted(rows))
    return RowNeeds(tuple(allowed), tuple(held), keys)


def model_row_needs(list_len: int, n_layers: int, layer0_mask: bool = False) -> RowNeeds:
    """:func:`row_needs` of the model's own masks (:func:`allowed_matrices`) and outputs."""
    return row_needs(allowed_matrices(list_len, n_layers, layer0_mask), output_rows(list_len))
