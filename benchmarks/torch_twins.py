"""PyTorch twins of mmu models: the same layers, weights and optimiser math, so a benchmark
times the same work in both frameworks."""
import math

import torch
import torch.nn.functional as F


class TorchMLPAutoencoder:
    """Twin of mmu.demo.MLPAutoencoder. `weights` is [w1, b1, w2, b2, ...] as NumPy arrays (e.g.
    `[p.numpy() for p in mmu_model.parameters()]`); they are copied, so the two models train
    independently. The Adam update is written out with the same steps as mmu.demo.Adam (it is
    torch.optim.Adam's default math) and grads are set to None after it, as there."""

    def __init__(self, weights, lr=3e-3, betas=(0.9, 0.999), eps=1e-8):
        self.params = [torch.tensor(w, requires_grad=True) for w in weights]
        self.lr, (self.beta1, self.beta2), self.eps = lr, betas, eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    def parameters(self):
        return list(self.params)

    def forward(self, x):
        n_layers = len(self.params) // 2
        for i in range(n_layers):
            x = F.linear(x, self.params[2 * i], self.params[2 * i + 1])
            x = F.gelu(x) if i < n_layers - 1 else torch.tanh(x)
        return x

    def train_step(self, batch):
        loss = F.mse_loss(self.forward(batch), batch)
        loss.backward()
        self._adam_step()
        return loss.item()

    @torch.no_grad()
    def _adam_step(self):
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        step_size = self.lr / (1 - b1 ** self.t)
        bc2_sqrt = math.sqrt(1 - b2 ** self.t)
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is not None:
                g = p.grad
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                p.addcdiv_(m, v.sqrt().div_(bc2_sqrt).add_(self.eps), value=-step_size)
            p.grad = None
