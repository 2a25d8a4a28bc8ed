"""listcopy: train and dissect tiny attention-only transformers that copy a list through SEP.

    >>> import listcopy
    >>> config = listcopy.Config().override(["train.max_steps=2000"])
    >>> run = listcopy.train(config)                 # one model, the seed's recipe
    >>> model, config = listcopy.load("runs/3layer_100dig_8d")   # or a seed .pt file
    >>> data = listcopy.dataset(config)              # the seed's split
    >>> listcopy.evaluate(model, data)               # {'loss', 'acc', 'seq_acc', 'n_val'}

Only the config and the error base class (``ListcopyError``: every error listcopy reports, with
its exit status) are imported eagerly; everything that needs torch loads on first use.
"""

from .config import Config, ConfigError, ModelConfig, TaskConfig, TrainConfig, load_config
from .errors import ListcopyError
from .lazy import lazy_attributes

__version__ = "0.1.0"

_LAZY = {
    "train": ("training", "train"),
    "train_ensemble": ("training", "train_ensemble"),
    "Run": ("training", "Run"),
    "load": ("checkpoint", "load"),
    "CheckpointError": ("checkpoint", "CheckpointError"),
    "dataset": ("task", "dataset"),
    "evaluate": ("metrics", "evaluate"),
    "build_model": ("model", "build_model"),
    "ListCopyTransformer": ("hooked", "ListCopyTransformer"),
    "ListCopyCore": ("model", "ListCopyCore"),
    "Ensemble": ("engine", "Ensemble"),
}

__all__ = ["Config", "ConfigError", "ListcopyError", "ModelConfig", "TaskConfig", "TrainConfig",
           "load_config", *_LAZY]


__getattr__ = lazy_attributes(__name__, _LAZY)
