"""mmu's demo job: an MLP autoencoder on scikit-learn's 8x8 digits, trained with Adam.

    python -m mmu demo [--steps N] [--batch-size N] [--lr LR] [--seed S] [--threads N] [--quiet]

The model is an mmu.nn.Sequential of Linear layers (torch's default init, drawn from mmu's
seeded generator) and the optimiser mmu.optim.Adam (one fused C update per step).
benchmarks/run.py times `train_step` against its torch twin for its `demo_train_step` case.
"""
import argparse
import time

import numpy as np

import mmu
import mmu.functional as F
from mmu import nn

LAYER_SIZES = (64, 128, 32, 128, 64)  # 8x8 image -> 32-dim code -> 8x8 image
N_TEST = 297  # held-out images; the other 1500 of the 1797 are for training


def load_digits_data(rng, n_test=N_TEST):
    """(x_train, x_test): float32 arrays of shape (n, 64) with pixels scaled from 0..16 to [-1, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # not a dependency of the library itself, only of this demo
        raise SystemExit("the mmu demo needs scikit-learn for its data: pip install scikit-learn") from e
    x = load_digits().data.astype(np.float32) / 8.0 - 1.0
    perm = rng.permutation(len(x))
    return x[perm[n_test:]], x[perm[:n_test]]  # fancy indexing copies: both are contiguous


class MLPAutoencoder(nn.Module):
    """GELU after every hidden layer, tanh on the output (pixels live in [-1, 1])."""

    def __init__(self, sizes=LAYER_SIZES):
        super().__init__()
        layers = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers += [nn.Linear(fan_in, fan_out), nn.GELU() if i < len(sizes) - 2 else nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def train_step(model, optimizer, batch):
    """One Adam step on `batch` (a tensor or NumPy array of shape (n, 64)); returns the loss."""
    loss = F.mse_loss(model(batch), batch)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def evaluate(model, x):
    """Reconstruction MSE on `x`, without recording a graph."""
    with mmu.no_grad():
        x = mmu.tensor(x)
        return F.mse_loss(model(x), x).item()


def batches(x, batch_size, rng):
    """Endless minibatches: a fresh shuffle every epoch, the ragged tail dropped."""
    while True:
        perm = rng.permutation(len(x))
        for i in range(0, len(x) - batch_size + 1, batch_size):
            yield x[perm[i:i + batch_size]]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m mmu demo", description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    # The matrices are tiny (64 x 128 at batch 64), so OpenMP threads help little; on a machine busy
    # with other work, waiting for a descheduled worker at every op can make 2 threads ~15x
    # slower than 1.
    ap.add_argument("--threads", type=int, help="mmu.set_num_threads(N) first (default: mmu's)")
    ap.add_argument("--quiet", action="store_true", help="print only the final result line")
    args = ap.parse_args(argv)
    say = (lambda *a: None) if args.quiet else print

    if args.threads:
        mmu.set_num_threads(args.threads)
    mmu.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)  # one stream, used in a fixed order: split, init, batches
    x_train, x_test = load_digits_data(rng)
    if not 1 <= args.batch_size <= len(x_train):
        ap.error(f"--batch-size must be between 1 and {len(x_train)}")
    if args.steps < 1:
        ap.error("--steps must be at least 1")
    model = MLPAutoencoder()
    optimizer = mmu.optim.Adam(model.parameters(), lr=args.lr)
    # What "no learning" scores: predicting the mean training image for every input.
    baseline = float(np.mean((x_test - x_train.mean(axis=0)) ** 2))
    say(f"digits autoencoder {' -> '.join(map(str, LAYER_SIZES))}: {len(x_train)} train / "
        f"{len(x_test)} held-out images, Adam lr={args.lr}, batch {args.batch_size}, {args.steps} steps")
    say(f"held-out MSE of predicting the mean image: {baseline:.4f}")

    log_every = max(1, args.steps // 10)
    window = []  # losses since the last print: their mean is steadier than one batch's loss
    start = time.perf_counter()
    for step, batch in zip(range(1, args.steps + 1), batches(x_train, args.batch_size, rng)):
        window.append(train_step(model, optimizer, mmu.tensor(batch)))
        if step % log_every == 0 or step == args.steps:
            say(f"step {step:5d}  train loss {sum(window) / len(window):.4f}")
            window = []
    elapsed = time.perf_counter() - start

    train_mse, test_mse = evaluate(model, x_train), evaluate(model, x_test)
    print(f"final reconstruction MSE: train {train_mse:.4f}, held-out {test_mse:.4f} "
          f"(mean-image baseline {baseline:.4f}); {args.steps} steps in {elapsed:.1f} s "
          f"on {mmu.get_num_threads()} thread(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
