"""nn/optim cases: the fused optimizer steps, softmax-cross-entropy, layer norm, and one MLP training
step (forward, loss, backward, Adam) against PyTorch CPU (float32, same thread count)."""
from __future__ import annotations

import numpy as np

from .. import ops
from .harness import Case, torch_peer


def _adam_case(n: int) -> Case:
    def setup():
        torch = torch_peer()
        rng = np.random.default_rng(0)
        p = rng.standard_normal(n, dtype=np.float32)
        g = rng.standard_normal(n, dtype=np.float32) * 1e-3
        m, v = np.zeros_like(p), np.zeros_like(p)
        step = [0]

        def ours():
            step[0] += 1
            ops.optim.adam_step(p, g, m, v, step=step[0], lr=1e-3)

        peer = None
        if torch is not None:
            tp = torch.nn.Parameter(torch.tensor(p.copy()))
            tp.grad = torch.tensor(g)
            opt = torch.optim.Adam([tp], lr=1e-3)
            peer = opt.step
        return ours, peer, "torch.optim.Adam (default)"

    # read p, g, m, v; write p, m, v
    return Case("nn", f"Adam step, {n / 1e6:g}M params", 7.0 * 4 * n, setup, unit="GB/s")


def _xent_case(n: int, c: int) -> Case:
    def setup():
        torch = torch_peer()
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, c), dtype=np.float32)
        t = rng.integers(0, c, n)

        def ours():
            return ops.cross_entropy(x, t)

        peer = None
        if torch is not None:
            tx = torch.tensor(x, requires_grad=True)
            tt = torch.tensor(t)

            def peer():
                tx.grad = None
                torch.nn.functional.cross_entropy(tx, tt).backward()
        return ours, peer, "torch F.cross_entropy fwd+bwd"

    return Case("nn", f"cross-entropy fwd+bwd {n}x{c}", 2.0 * 4 * n * c, setup, unit="GB/s")


def _layer_norm_case(r: int, d: int) -> Case:
    def setup():
        torch = torch_peer()
        rng = np.random.default_rng(0)
        x = rng.standard_normal((r, d), dtype=np.float32)
        g = rng.standard_normal((r, d), dtype=np.float32)
        w, b = np.ones(d, np.float32), np.zeros(d, np.float32)

        def ours():
            y, mean, rstd = ops.layer_norm(x, d, w, b)
            return ops.layer_norm_backward(g, x, mean, rstd, w)

        peer = None
        if torch is not None:
            tx = torch.tensor(x, requires_grad=True)
            ln = torch.nn.LayerNorm(d)
            tg = torch.tensor(g)

            def peer():
                tx.grad = None
                ln.zero_grad()
                ln(tx).backward(tg)
        return ours, peer, "torch nn.LayerNorm fwd+bwd"

    # fwd: read x, write y; bwd: read g, x, write gx
    return Case("nn", f"layer_norm fwd+bwd {r}x{d}", 5.0 * 4 * r * d, setup, unit="GB/s")


def _train_step_case(name: str, build, x_shape: tuple, classes: int, flops: float | None) -> Case:
    """One training step (forward, cross-entropy, backward, Adam) of the model ``build(fw)`` makes on
    framework ``fw`` (layerforge, or torch as the peer: the same model code builds both)."""
    def setup():
        import layerforge as lf

        torch = torch_peer()
        rng = np.random.default_rng(0)
        x = rng.standard_normal(x_shape, dtype=np.float32)
        y = rng.integers(0, classes, x_shape[0])

        def step_fn(fw, X, Y):
            model = build(fw)
            opt = fw.optim.Adam(model.parameters(), lr=1e-3)
            lossf = fw.nn.CrossEntropyLoss()

            def step():
                opt.zero_grad()
                loss = lossf(model(X), Y)
                loss.backward()
                opt.step()
            return step

        ours = step_fn(lf, lf.tensor(x), lf.tensor(y))
        peer = step_fn(torch, torch.tensor(x), torch.tensor(y)) if torch is not None else None
        return ours, peer, "torch (same model + Adam)"

    if flops is None:  # rate in steps per second
        return Case("nn", name, 1.0, setup, unit="steps/s")
    return Case("nn", name, flops, setup)


def _mlp_case(batch: int, sizes: tuple) -> Case:
    def build(fw):
        layers = []
        for i in range(len(sizes) - 1):
            layers.append(fw.nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(fw.nn.ReLU())
        return fw.nn.Sequential(*layers)

    flops = 0.0
    for i in range(len(sizes) - 1):
        flops += 3 * 2.0 * batch * sizes[i] * sizes[i + 1]  # forward + two backward GEMMs
    name = "MLP train step " + "-".join(str(s) for s in sizes) + f", batch {batch}"
    return _train_step_case(name, build, (batch, sizes[0]), sizes[-1], flops)


def _tutorial_case(model: str, batch: int) -> Case:
    from ..train import build_model

    # forward FLOPs per image of the CNN: conv1 26x26x32 outputs x 9 taps, conv2 11x11x64 x (32 x 9), dense
    cnn_fwd = 2.0 * (26 * 26 * 32 * 9 + 11 * 11 * 64 * 32 * 9 + 1600 * 64 + 64 * 10)
    flops = 3 * batch * cnn_fwd if model == "cnn" else None  # fwd + grad_x + grad_w (conv1's grad_x unused)
    return _train_step_case(f"tutorial {model} train step (MNIST), batch {batch}",
                            lambda fw: build_model(model, fw), (batch, 1, 28, 28), 10, flops)


def cases(quick: bool = False):
    for n in ([1 << 20] if quick else [1 << 16, 1 << 20, 1 << 23]):
        yield _adam_case(n)
    yield _xent_case(32, 10)
    yield _xent_case(4096, 1000)
    yield _layer_norm_case(4096, 512)
    yield _mlp_case(32, (784, 128, 10))
    yield _mlp_case(256, (784, 512, 256, 10))
    for model in (("cnn",) if quick else ("cnn", "lstm", "transformer")):
        yield _tutorial_case(model, 32)
