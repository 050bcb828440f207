"""layerforge.data: batching, seeded shuffling, drop_last, random_split."""
import numpy as np
import pytest

import layerforge as lf
from layerforge.data import DataLoader, Dataset, TensorDataset, random_split


def test_tensor_dataset_loader():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.arange(10)
    ds = TensorDataset(lf.tensor(x), y)
    assert len(ds) == 10 and ds[3][1].item() == 3
    batches = list(DataLoader(ds, batch_size=4))
    assert [b[0].shape for b in batches] == [(4, 2), (4, 2), (2, 2)] and len(DataLoader(ds, batch_size=4)) == 3
    assert len(list(DataLoader(ds, batch_size=4, drop_last=True))) == 2
    o1 = np.concatenate([b[1].numpy() for b in DataLoader(ds, batch_size=3, shuffle=True, seed=7)])
    o2 = np.concatenate([b[1].numpy() for b in DataLoader(ds, batch_size=3, shuffle=True, seed=7)])
    np.testing.assert_array_equal(o1, o2)
    assert sorted(o1.tolist()) == list(range(10)) and o1.tolist() != list(range(10))
    for xb, yb in DataLoader(ds, batch_size=3, shuffle=True, seed=1):
        np.testing.assert_array_equal(xb.numpy()[:, 0], 2 * yb.numpy())
    with pytest.raises(ValueError):
        TensorDataset(x, y[:5])


def test_random_split_and_generic_dataset():
    ds = TensorDataset(np.arange(10))
    a, b = random_split(ds, [8, 2], seed=0)
    ia = [int(a[i][0].item()) for i in range(len(a))]
    ib = [int(b[i][0].item()) for i in range(len(b))]
    assert sorted(ia + ib) == list(range(10))
    c, d = random_split(ds, [0.8, 0.2], seed=0)
    assert (len(c), len(d)) == (8, 2)
    assert sum(len(bt[0]) for bt in DataLoader(a, batch_size=3)) == 8
    with pytest.raises(ValueError):
        random_split(ds, [5, 6])

    class Squares(Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return lf.tensor([float(i)]), i * i

    xb, yb = next(iter(DataLoader(Squares(), batch_size=5)))
    assert xb.shape == (5, 1) and yb.tolist() == [0, 1, 4, 9, 16]
