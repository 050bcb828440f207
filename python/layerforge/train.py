"""`python -m layerforge train`: the tutorials' MNIST models, trained end to end on layerforge.

The models are written once against the torch-style API (``nn.Conv2d``, ``F.cross_entropy``,
``optim.Adam``...) and built either on layerforge (the default) or, with ``--backend torch``, on PyTorch
itself: same data, same batches in the same order, same hyper-parameters, so the epoch times of the two
are a like-for-like comparison and the accuracies should agree (the initial weights differ: each library
draws them from its own generator).

Data: the bundled 5,000-image MNIST subset split 80/20 (seeded), or the standard MNIST IDX files with
``--data FOLDER`` (train on the 60,000 training images, test on the 10,000 test images). Pixels are scaled
to [0, 1] and standardised with the training split's mean and standard deviation.
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

MODELS = ("cnn", "mlp", "lstm", "transformer")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")


def build_model(name: str, fw=None):
    """The named tutorial model on framework ``fw`` (``layerforge``, the default, or ``torch``): the same
    code builds either. Input (N, 1, 28, 28), output (N, 10) logits."""
    if fw is None:
        import layerforge as fw
    nn = fw.nn
    if name == "cnn":  # the Keras tutorial's CNN: 2x (conv 3x3 + ReLU + max-pool 2), dense 64, dense 10
        return nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(1600, 64), nn.ReLU(), nn.Linear(64, 10))
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                             nn.Linear(128, 10))
    if name == "lstm":
        class RowLSTM(nn.Module):
            """Each image as a sequence of 28 rows of 28 pixels; the last step's hidden state -> classes."""

            def __init__(self):
                super().__init__()
                self.lstm = nn.LSTM(28, 128, batch_first=True)
                self.fc = nn.Linear(128, 10)

            def forward(self, x):
                out, _ = self.lstm(x.reshape(x.shape[0], 28, 28))  # (N, 28 steps, 128)
                return self.fc(out[:, -1])

        return RowLSTM()
    if name == "transformer":
        class RowTransformer(nn.Module):
            """Rows as 28 tokens: linear embedding + learned positions, two pre-norm encoder layers, mean
            pool over tokens, linear classifier."""

            def __init__(self, d_model=64, nhead=4, layers=2):
                super().__init__()
                self.embed = nn.Linear(28, d_model)
                self.pos = nn.Parameter(fw.randn(28, d_model) * 0.02)
                self.encoder = nn.ModuleList([
                    nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward=128, dropout=0.1,
                                               batch_first=True, norm_first=True) for _ in range(layers)])
                self.norm = nn.LayerNorm(d_model)
                self.fc = nn.Linear(d_model, 10)

            def forward(self, x):
                h = self.embed(x.reshape(x.shape[0], 28, 28)) + self.pos  # (N, 28, d_model)
                for layer in self.encoder:
                    h = layer(h)
                return self.fc(self.norm(h).mean(1))

        return RowTransformer()
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


def build_optimizer(name: str, params, lr: float, optim):
    if name == "adam":
        return optim.Adam(params, lr=lr)
    if name == "adamw":
        return optim.AdamW(params, lr=lr)
    if name == "sgd":
        return optim.SGD(params, lr=lr, momentum=0.9)
    if name == "rmsprop":
        return optim.RMSprop(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def load_data(data_path: str | None, seed: int):
    """((x_train, y_train), (x_test, y_test)): float32 (N, 1, 28, 28) standardised, int64 labels."""
    from . import data

    if data_path:
        (xtr, ytr), (xte, yte) = data.load_mnist_idx(data_path)
    else:
        images, labels = data.load_mnist_5k()
        perm = np.random.default_rng(seed).permutation(len(images))
        n_train = int(round(0.8 * len(images)))
        tr, te = perm[:n_train], perm[n_train:]
        xtr, ytr, xte, yte = images[tr], labels[tr], images[te], labels[te]
    scaled_tr = xtr.astype(np.float32) / 255.0
    mean, std = data.fit_standardizer(scaled_tr)
    prep = lambda x: data.standardize(x.astype(np.float32) / 255.0, mean, std)[:, None]  # noqa: E731
    return (prep(xtr), ytr.astype(np.int64)), (prep(xte), yte.astype(np.int64))


def _framework(backend: str):
    if backend == "layerforge":
        import layerforge as fw

        return fw, fw.nn, fw.optim, fw.from_numpy, lambda t: t.detach().numpy()
    if backend == "torch":
        try:
            import torch as fw
        except ImportError:
            raise SystemExit("--backend torch needs PyTorch (pip install 'layerforge[bench]')") from None
        return fw, fw.nn, fw.optim, fw.from_numpy, lambda t: t.detach().numpy()
    raise ValueError(f"unknown backend {backend!r}")


def _progress(iterable, total, desc, enabled):
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency; a broken install should not stop training
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


def evaluate(model, x, y, fw, to_tensor, to_numpy, batch_size=500):
    """Accuracy of ``model`` on (x, y), in eval mode, without a graph."""
    model.eval()
    correct = 0
    with fw.no_grad():
        for s in range(0, len(x), batch_size):
            logits = to_numpy(model(to_tensor(x[s:s + batch_size])))
            correct += int((logits.argmax(1) == y[s:s + batch_size]).sum())
    return correct / max(len(x), 1)


def train(model="cnn", epochs=5, batch_size=32, lr=1e-3, optimizer="adam", threads=None, seed=0, save=None,
          data=None, backend="layerforge", progress=True, log=print, max_steps=None):
    """Train and evaluate; returns a dict with the per-epoch history and the final test accuracy.
    ``max_steps`` stops each epoch early (for tests and smoke runs)."""
    fw, nn, optim, to_tensor, to_numpy = _framework(backend)
    if threads:
        import layerforge

        layerforge.set_num_threads(threads)
        if backend == "torch":
            fw.set_num_threads(threads)
    elif backend == "torch":
        import layerforge

        fw.set_num_threads(layerforge.get_num_threads())  # same cores as layerforge would use
    (xtr, ytr), (xte, yte) = load_data(data, seed)
    fw.manual_seed(seed)
    net = build_model(model, fw)
    opt = build_optimizer(optimizer, net.parameters(), lr, optim)
    loss_fn = nn.CrossEntropyLoss()
    order_rng = np.random.default_rng(seed + 1)
    n_batches = math.ceil(len(xtr) / batch_size)
    log(f"{model} on {backend}: {sum(p.numel() for p in net.parameters()):,} parameters; "
        f"{len(xtr)} training / {len(xte)} test images; {optimizer} lr {lr:g}, batch {batch_size}")
    history = []
    for epoch in range(1, epochs + 1):
        net.train()
        perm = order_rng.permutation(len(xtr))
        total_loss, correct, seen = 0.0, 0, 0
        t0 = time.perf_counter()
        batches = range(n_batches if max_steps is None else min(n_batches, max_steps))
        for b in _progress(batches, len(batches), f"epoch {epoch}/{epochs}", progress):
            idx = perm[b * batch_size:(b + 1) * batch_size]
            xb, yb = to_tensor(xtr[idx]), to_tensor(ytr[idx])
            logits = net(xb)
            loss = loss_fn(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total_loss += float(loss.item()) * len(idx)
            correct += int((to_numpy(logits).argmax(1) == ytr[idx]).sum())
            seen += len(idx)
        seconds = time.perf_counter() - t0
        test_acc = evaluate(net, xte, yte, fw, to_tensor, to_numpy)
        rec = {"epoch": epoch, "loss": total_loss / max(seen, 1), "train_accuracy": correct / max(seen, 1),
               "test_accuracy": test_acc, "seconds": seconds}
        history.append(rec)
        log(f"epoch {epoch}/{epochs}  loss {rec['loss']:.4f}  train acc {rec['train_accuracy']:.4f}  "
            f"test acc {test_acc:.4f}  {seconds:.2f} s")
    result = {"model": model, "backend": backend, "history": history,
              "test_accuracy": history[-1]["test_accuracy"] if history else evaluate(
                  net, xte, yte, fw, to_tensor, to_numpy)}
    log(f"final test accuracy: {result['test_accuracy']:.4f}")
    if save:
        np.savez(save, **{k: to_numpy(v) for k, v in net.state_dict().items()})
        log(f"saved the weights to {save}")
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=MODELS, default="cnn", help="which tutorial model (default: cnn)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    p.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    p.add_argument("--seed", type=int, default=0, help="seeds the split, the initial weights and the batches")
    p.add_argument("--save", metavar="PATH", help="write the trained weights (state_dict) to an .npz file")
    p.add_argument("--data", metavar="FOLDER", help="MNIST IDX folder (default: the bundled 5k subset)")
    p.add_argument("--backend", choices=("layerforge", "torch"), default="layerforge",
                   help="run the same model and loop on PyTorch instead, to compare")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def main_from_args(args) -> int:
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    if not args.lr > 0:
        raise SystemExit("--lr must be > 0")
    train(model=args.model, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
          optimizer=args.optimizer, threads=args.threads, seed=args.seed, save=args.save, data=args.data,
          backend=args.backend, progress=not args.no_progress and sys.stderr.isatty())
    return 0
