"""layerforge.data: Dataset, TensorDataset, DataLoader (batch_size, shuffle with a seed, drop_last) and
random_split, with torch.utils.data's semantics on layerforge Tensors / numpy arrays."""
from __future__ import annotations

import math

import numpy as np

from .tensor import Tensor, default_generator

__all__ = ["Dataset", "TensorDataset", "Subset", "DataLoader", "random_split"]


class Dataset:
    def __getitem__(self, index):  # pragma: no cover - interface
        raise NotImplementedError

    def __len__(self):  # pragma: no cover - interface
        raise NotImplementedError


class TensorDataset(Dataset):
    """Rows of tensors (or numpy arrays) sharing their first dim."""

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor")
        n = len(tensors[0])
        for t in tensors:
            if len(t) != n:
                raise ValueError(f"Size mismatch between tensors: {len(t)} != {n}")
        self.tensors = tuple(t if isinstance(t, Tensor) else Tensor._wrap(np.asarray(t)) for t in tensors)

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __len__(self):
        return len(self.tensors[0])


class Subset(Dataset):
    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, list(indices)

    def __getitem__(self, idx):
        if isinstance(idx, (list, np.ndarray)):
            return self.dataset[[self.indices[i] for i in idx]]
        return self.dataset[self.indices[idx]]

    def __len__(self):
        return len(self.indices)


def _generator(generator, seed):
    if generator is not None:
        return generator
    if seed is not None:
        return np.random.default_rng(seed)
    return default_generator()


def random_split(dataset, lengths, generator=None, seed=None):
    """Split into non-overlapping Subsets of the given lengths (or fractions summing to 1)."""
    n = len(dataset)
    lengths = list(lengths)
    if math.isclose(sum(lengths), 1) and sum(lengths) <= 1 and not all(isinstance(v, int) for v in lengths):
        counts = [int(math.floor(n * f)) for f in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
        lengths = counts
    if sum(lengths) != n:
        raise ValueError("Sum of input lengths does not equal the length of the input dataset!")
    perm = _generator(generator, seed).permutation(n)
    out, off = [], 0
    for L in lengths:
        out.append(Subset(dataset, perm[off:off + L].tolist()))
        off += L
    return out


def _collate(items):
    first = items[0]
    if isinstance(first, tuple):
        return tuple(_collate([it[i] for it in items]) for i in range(len(first)))
    if isinstance(first, Tensor):
        return Tensor._wrap(np.stack([t._data for t in items]))
    return Tensor._wrap(np.asarray(items))


class DataLoader:
    """Batches of a dataset. A TensorDataset (or a Subset of one) is batched by fancy indexing (one gather
    per tensor), other datasets item by item and stacked. ``shuffle`` draws a new order each epoch from
    ``generator`` / ``seed`` (default: layerforge's generator, seeded by ``manual_seed``)."""

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, generator=None, seed=None,
                 collate_fn=None, num_workers=0, **kwargs):
        if batch_size is None or int(batch_size) < 1:
            raise ValueError(f"batch_size should be a positive integer, got {batch_size}")
        self.dataset, self.batch_size, self.shuffle, self.drop_last = dataset, int(batch_size), shuffle, drop_last
        self.collate_fn = collate_fn
        self._gen = _generator(generator, seed) if (generator is not None or seed is not None) else None

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else (n + self.batch_size - 1) // self.batch_size

    def _fast_tensors(self):
        ds, idx = self.dataset, None
        if isinstance(ds, Subset) and isinstance(ds.dataset, TensorDataset):
            idx, ds = np.asarray(ds.indices), ds.dataset
        if isinstance(ds, TensorDataset) and self.collate_fn is None:
            return ds.tensors, idx
        return None, None

    def __iter__(self):
        n = len(self.dataset)
        order = (self._gen or default_generator()).permutation(n) if self.shuffle else np.arange(n)
        tensors, base = self._fast_tensors()
        for s in range(0, n, self.batch_size):
            b = order[s:s + self.batch_size]
            if self.drop_last and len(b) < self.batch_size:
                return
            if tensors is not None:
                rows = base[b] if base is not None else b
                yield tuple(Tensor._wrap(t._data[rows]) for t in tensors)
            else:
                items = [self.dataset[int(i)] for i in b]
                yield (self.collate_fn or _collate)(items)
