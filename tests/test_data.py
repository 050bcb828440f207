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


# ---- standardisation, bundled MNIST, IDX files ------------------------------------------------------
from layerforge.data import fit_standardizer, load_mnist_5k, load_mnist_idx, read_idx, standardize  # noqa: E402


def test_standardize_matches_float64(rng):
    x = rng.integers(0, 256, (37, 5, 3)).astype(np.uint8)
    mean, std = fit_standardizer(x)
    ref = (x.astype(np.float64) - x.mean()) / x.std()
    out = standardize(x, mean, std)
    assert out.dtype == np.float32 and x.dtype == np.uint8
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    mean0, std0 = fit_standardizer(x.astype(np.float32), axis=0)  # per feature
    assert mean0.shape == (1, 5, 3)
    np.testing.assert_allclose(standardize(x, mean0, std0).mean(0), 0, atol=1e-5)
    const = np.full((4, 2), 3.0)
    assert np.all(np.isfinite(standardize(const, *fit_standardizer(const))))  # eps: no 0/0
    with pytest.raises(ValueError, match="empty"):
        fit_standardizer(np.zeros((0, 3)))


def test_bundled_mnist():
    images, labels = load_mnist_5k()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and np.bincount(labels).tolist() == [500] * 10
    assert images.max() == 255 and 0.1 < images.mean() / 255 < 0.2  # MNIST's mean is about 0.13


def _write_idx(path, arr, gz):
    import gzip as _gz

    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}
    head = bytes([0, 0, codes[arr.dtype], arr.ndim]) + np.array(arr.shape, ">u4").tobytes()
    raw = head + arr.tobytes()
    with open(path, "wb") as f:
        f.write(_gz.compress(raw) if gz else raw)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, rng, gz):
    imgs = rng.integers(0, 256, (7, 5, 3)).astype(np.uint8)
    vals = rng.standard_normal((4, 6)).astype(">f4")
    _write_idx(tmp_path / "a", imgs, gz)
    _write_idx(tmp_path / "b", vals, gz)
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), imgs)
    got = read_idx(tmp_path / "b")
    assert got.dtype == np.float32 and got.dtype.isnative
    np.testing.assert_array_equal(got, vals.astype(np.float32))


def test_read_idx_bad_files(tmp_path):
    (tmp_path / "junk").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "junk")
    good = np.arange(12, dtype=np.uint8).reshape(3, 4)
    _write_idx(tmp_path / "t", good, False)
    (tmp_path / "short").write_bytes((tmp_path / "t").read_bytes()[:-2])
    with pytest.raises(ValueError, match="header says shape"):
        read_idx(tmp_path / "short")


def test_load_mnist_idx_folder(tmp_path, rng):
    for split, n, gz in (("train", 9, True), ("t10k", 4, False)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte{'.gz' if gz else ''}",
                   rng.integers(0, 256, (n, 28, 28)).astype(np.uint8), gz)
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte{'.gz' if gz else ''}",
                   rng.integers(0, 10, n).astype(np.uint8), gz)
    (xtr, ytr), (xte, yte) = load_mnist_idx(str(tmp_path))
    assert xtr.shape == (9, 28, 28) and ytr.shape == (9,) and ytr.dtype == np.int64 and xte.shape == (4, 28, 28)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels"):
        load_mnist_idx(str(tmp_path))
