"""Studies of trained models, one module per family; each returns a typed, JSON-ready result."""

from .parameters import ParameterRow, ParameterTable, parameter_table

__all__ = ["ParameterRow", "ParameterTable", "parameter_table"]
