"""PyTorch twins of mmu models: the same layers, weights and optimiser, so a benchmark times
the same work in both frameworks."""
import torch
import torch.nn.functional as F


class TorchMLPAutoencoder(torch.nn.Module):
    """Twin of mmu.demo.MLPAutoencoder: the same Sequential layout (so the same state_dict keys),
    its weights copied from `state` (name -> NumPy array, e.g. the mmu model's state_dict)."""

    def __init__(self, state, sizes):
        super().__init__()
        layers = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.GELU() if i < len(sizes) - 2 else torch.nn.Tanh()]
        self.net = torch.nn.Sequential(*layers)
        self.load_state_dict({k: torch.tensor(v) for k, v in state.items()})

    def forward(self, x):
        return self.net(x)


def train_step(model, optimizer, batch):
    """The same step as mmu.demo.train_step."""
    loss = F.mse_loss(model(batch), batch)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()
