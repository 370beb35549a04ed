"""mmu's demo job: an MLP autoencoder on scikit-learn's 8x8 digits, trained with Adam.

    python -m mmu demo [--steps N] [--batch-size N] [--lr LR] [--seed S] [--threads N] [--quiet]

There is no mmu.nn / mmu.optim yet, so the model is a list of plain leaf tensors and the
optimiser is a small Adam that writes into the parameters through their zero-copy NumPy views.
benchmarks/run.py imports MLPAutoencoder from here for its `demo_train_step` case.
"""
import argparse
import math
import time

import numpy as np

import mmu
import mmu.functional as F

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


def init_params(sizes, rng):
    """Weights (out, in) and biases (out,) per layer as float32 NumPy arrays, drawn like
    torch.nn.Linear's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both."""
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / math.sqrt(fan_in)
        params.append(rng.uniform(-bound, bound, (fan_out, fan_in)).astype(np.float32))
        params.append(rng.uniform(-bound, bound, (fan_out,)).astype(np.float32))
    return params


class Adam:
    """torch.optim.Adam's default update (no weight decay, no amsgrad), done in NumPy in place
    on each parameter's zero-copy view; afterwards every grad is set to None (like
    optimizer.zero_grad(set_to_none=True)), so the next backward starts fresh."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.params = list(params)
        self.lr, (self.beta1, self.beta2), self.eps = lr, betas, eps
        self.m = [np.zeros(p.shape, np.float32) for p in self.params]
        self.v = [np.zeros(p.shape, np.float32) for p in self.params]
        self.t = 0

    def step(self):
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        step_size = self.lr / (1 - b1 ** self.t)
        bc2_sqrt = math.sqrt(1 - b2 ** self.t)
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is not None:
                g, w = p.grad.numpy(), p.numpy()  # w aliases the tensor's memory
                m *= b1
                m += (1 - b1) * g
                v *= b2
                v += (1 - b2) * g * g
                w -= step_size * m / (np.sqrt(v) / bc2_sqrt + self.eps)
            p.grad = None


class MLPAutoencoder:
    """GELU after every hidden layer, tanh on the output (pixels live in [-1, 1])."""

    def __init__(self, sizes=LAYER_SIZES, lr=3e-3, rng=None):
        rng = np.random.default_rng(0) if rng is None else rng
        self.params = [mmu.tensor(a, requires_grad=True) for a in init_params(sizes, rng)]
        self.optimizer = Adam(self.params, lr=lr)

    def parameters(self):
        """[w1, b1, w2, b2, ...] in layer order."""
        return list(self.params)

    def forward(self, x):
        n_layers = len(self.params) // 2
        for i in range(n_layers):
            x = F.linear(x, self.params[2 * i], self.params[2 * i + 1])
            x = F.gelu(x) if i < n_layers - 1 else mmu.tanh(x)
        return x

    def loss(self, x):
        return F.mse_loss(self.forward(x), x)

    def train_step(self, batch):
        """One step on `batch` (a tensor or NumPy array of shape (n, 64)); returns the loss."""
        loss = self.loss(batch)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def evaluate(self, x):
        """Reconstruction MSE on `x`, without recording a graph."""
        with mmu.no_grad():
            return self.loss(mmu.tensor(x)).item()


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
    model = MLPAutoencoder(lr=args.lr, rng=rng)
    # What "no learning" scores: predicting the mean training image for every input.
    baseline = float(np.mean((x_test - x_train.mean(axis=0)) ** 2))
    say(f"digits autoencoder {' -> '.join(map(str, LAYER_SIZES))}: {len(x_train)} train / "
        f"{len(x_test)} held-out images, Adam lr={args.lr}, batch {args.batch_size}, {args.steps} steps")
    say(f"held-out MSE of predicting the mean image: {baseline:.4f}")

    log_every = max(1, args.steps // 10)
    window = []  # losses since the last print: their mean is steadier than one batch's loss
    start = time.perf_counter()
    for step, batch in zip(range(1, args.steps + 1), batches(x_train, args.batch_size, rng)):
        window.append(model.train_step(mmu.tensor(batch)))
        if step % log_every == 0 or step == args.steps:
            say(f"step {step:5d}  train loss {sum(window) / len(window):.4f}")
            window = []
    elapsed = time.perf_counter() - start

    train_mse, test_mse = model.evaluate(x_train), model.evaluate(x_test)
    print(f"final reconstruction MSE: train {train_mse:.4f}, held-out {test_mse:.4f} "
          f"(mean-image baseline {baseline:.4f}); {args.steps} steps in {elapsed:.1f} s "
          f"on {mmu.get_num_threads()} thread(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
