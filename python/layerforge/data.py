"""layerforge.data: Dataset, TensorDataset, DataLoader (batch_size, shuffle with a seed, drop_last) and
random_split, with torch.utils.data's semantics on layerforge Tensors / numpy arrays; standardisation
helpers; the bundled 5,000-image MNIST subset and a reader for the standard MNIST IDX files."""
from __future__ import annotations

import gzip
import math
import os

import numpy as np

from .tensor import Tensor, default_generator

__all__ = ["Dataset", "TensorDataset", "Subset", "DataLoader", "random_split", "fit_standardizer",
           "standardize", "load_mnist_5k", "read_idx", "load_mnist_idx"]


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


# ---- standardisation --------------------------------------------------------------------------------
def fit_standardizer(x, axis=None, eps: float = 1e-8):
    """Mean and standard deviation of ``x`` over ``axis`` (None: all elements, as the usual single MNIST
    mean/std; e.g. ``axis=0`` for per-feature statistics), computed in float64 and returned as float32
    arrays that broadcast against ``x`` (keepdims). ``eps`` keeps a constant feature from dividing by 0.
    Fit on the training split only, then apply the same statistics to every split."""
    a = np.asarray(x._data if isinstance(x, Tensor) else x, dtype=np.float64)
    if a.size == 0:
        raise ValueError("fit_standardizer: x is empty")
    mean = a.mean(axis=axis, keepdims=True)
    std = a.std(axis=axis, keepdims=True)
    return mean.astype(np.float32), np.maximum(std, eps).astype(np.float32)


def standardize(x, mean, std, dtype=np.float32):
    """``(x - mean) / std`` as a new ``dtype`` array (uint8 images included), with statistics from
    ``fit_standardizer``."""
    a = np.asarray(x._data if isinstance(x, Tensor) else x)
    out = a.astype(dtype)  # a fresh array: the caller's data is never modified
    out -= np.asarray(mean, dtype)
    out /= np.asarray(std, dtype)
    return out


# ---- MNIST ------------------------------------------------------------------------------------------
_BUNDLED = os.path.join(os.path.dirname(__file__), "_datasets")


def load_mnist_5k():
    """The bundled 5,000-image MNIST subset (500 per class; source and license in
    ``layerforge/_datasets/README.md``): ``(images uint8 (5000, 28, 28), labels int64 (5000,))``, stored
    sorted by class, so shuffle (e.g. ``random_split``) before splitting."""
    with np.load(os.path.join(_BUNDLED, "mnist_5k.npz")) as f:
        return f["images"], f["labels"].astype(np.int64)


# IDX type codes (http://yann.lecun.com/exdb/mnist/): big-endian data of these types.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """An IDX file (gzipped or not: decided by the file's first bytes, not its name) as a numpy array in
    native byte order, e.g. ``train-images-idx3-ubyte.gz`` -> uint8 ``(60000, 28, 28)``."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"read_idx: {path} is not an IDX file (bad magic number {raw[:4].hex()})")
    dt, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise ValueError(f"read_idx: {path} is truncated (header of {ndim} dims)")
    shape = tuple(int(v) for v in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    count = math.prod(shape)
    if len(raw) - head != count * dt.itemsize:
        raise ValueError(f"read_idx: {path} holds {len(raw) - head} data bytes, its header says shape "
                         f"{shape} of {dt.name} ({count * dt.itemsize} bytes)")
    return np.frombuffer(raw, dt, count=count, offset=head).astype(dt.newbyteorder("="), copy=True).reshape(shape)


def _find_idx(folder, stem):
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        p = os.path.join(folder, name)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(f"load_mnist_idx: no {stem}[.gz] in {folder}")


def load_mnist_idx(folder):
    """The standard MNIST files in ``folder`` (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally ``.gz``):
    ``((train_images, train_labels), (test_images, test_labels))``, images uint8 ``(N, 28, 28)``, labels
    int64."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"load_mnist_idx: {folder} is not a directory")
    out = []
    for split in ("train", "t10k"):
        images = read_idx(_find_idx(folder, f"{split}-images-idx3-ubyte"))
        labels = read_idx(_find_idx(folder, f"{split}-labels-idx1-ubyte")).astype(np.int64)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"load_mnist_idx: {split} images {images.shape} and labels {labels.shape} "
                             "do not pair up")
        out.append((images, labels))
    return tuple(out)
