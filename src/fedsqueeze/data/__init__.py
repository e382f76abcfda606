"""fedsqueeze.data: datasets (local files or generated, never downloaded) and client partitions.

>>> from fedsqueeze.data import load_dataset, partition
>>> ds = load_dataset("digits", seed=0)
>>> parts = partition(ds.y_train, 20, "dirichlet", seed=0, alpha=0.5)
>>> sum(len(p) for p in parts) == ds.num_train
True
"""

from __future__ import annotations

from .datasets import Dataset, available_datasets, load_dataset
from .partition import partition, validation_split

__all__ = ["Dataset", "load_dataset", "available_datasets", "partition", "validation_split"]
