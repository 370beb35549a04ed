"""Small models built from mmu.nn train on scikit-learn's 8x8 digits (a ViT
classifier and a conv autoencoder) and their losses fall; torch weights saved
with safetensors load into mmu twins and give torch's outputs."""
import math

import numpy as np
import pytest

import mmu
import mmu.nn as nn
import mmu.nn.functional as F

try:
    from gradcheck import assert_close, torch_or_skip
except ImportError:
    from tests.gradcheck import assert_close, torch_or_skip


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _digits():
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_digits()
    x = (d.images.astype(np.float32) / 8.0 - 1.0)[:, None]  # (1797, 1, 8, 8) in [-1, 1]
    return x, d.target.astype(np.int64)


class ViT(nn.Module):
    """Conv patch embedding (2x2 patches of the 8x8 digit -> 16 tokens), learned positions,
    pre-norm TransformerBlocks, mean pooling and a linear classifier."""

    def __init__(self, dim=32, depth=4, heads=4, patch=2, image=8, classes=10, mlp_ratio=2.0):
        super().__init__()
        self.patch_embed = nn.Conv2d(1, dim, patch, stride=patch)
        tokens = (image // patch) ** 2
        self.pos_embed = nn.Parameter(mmu.zeros(1, tokens, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList([nn.TransformerBlock(dim, heads, mlp_ratio=mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch_embed(x)  # (B, D, 4, 4)
        b, d = x.shape[:2]
        x = x.reshape(b, d, -1).transpose(1, 2) + self.pos_embed  # (B, 16, D)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x).mean(1))


class AutoEncoder(nn.Module):
    def __init__(self, ch=8):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, ch, 3, stride=2, padding=1), nn.GroupNorm(2, ch), nn.SiLU(),  # 8x8 -> 4x4
            nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1), nn.SiLU())  # -> 2x2
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(2 * ch, ch, 4, stride=2, padding=1), nn.GroupNorm(2, ch), nn.SiLU(),  # -> 4x4
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, 1, 3, padding=1))  # -> 8x8

    def forward(self, x):
        return self.decoder(self.encoder(x))


def _adamw(params, lr):
    return mmu.optim.AdamW(params, lr=lr, weight_decay=0.01)


def test_vit_trains_on_digits():
    x, y = _digits()
    mmu.manual_seed(0)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    train, test = order[:1024], order[1024:1524]
    model = ViT()
    opt = _adamw(model.parameters(), lr=5e-3)
    xt, yt = mmu.tensor(x[test]), mmu.tensor(y[test])

    def evaluate():
        model.eval()
        with mmu.no_grad():
            logits = model(xt)
            loss = F.cross_entropy(logits, yt).item()
            acc = float((logits.argmax(-1).numpy() == y[test]).mean())
        model.train()
        return loss, acc

    loss0, acc0 = evaluate()
    assert abs(loss0 - math.log(10)) < 0.5  # torch-like init: near-uniform predictions
    losses = []
    for step in range(100):
        idx = train[rng.integers(0, len(train), 64)]
        loss = F.cross_entropy(model(mmu.tensor(x[idx])), mmu.tensor(y[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    loss1, acc1 = evaluate()
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    assert loss1 < 0.6 * loss0
    assert acc1 > 0.6  # chance is 0.1


def test_conv_autoencoder_reconstruction_loss_falls():
    x, _ = _digits()
    mmu.manual_seed(0)
    rng = np.random.default_rng(1)
    model = AutoEncoder()
    opt = _adamw(model.parameters(), lr=5e-3)
    held = mmu.tensor(x[:256])
    with mmu.no_grad():
        before = F.mse_loss(model(held), held).item()
    for step in range(80):
        batch = mmu.tensor(x[rng.integers(256, len(x), 64)])
        loss = F.mse_loss(model(batch), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with mmu.no_grad():
        after = F.mse_loss(model(held), held).item()
    assert after < 0.5 * before


def _torch_vit(torch, dim=32, depth=2, heads=4, mlp_ratio=2.0):
    tnn = torch.nn

    class TorchViT(tnn.Module):
        def __init__(self):
            super().__init__()
            self.patch_embed = tnn.Conv2d(1, dim, 2, stride=2)
            self.pos_embed = tnn.Parameter(torch.randn(1, 16, dim) * 0.02)
            self.blocks = tnn.ModuleList([
                tnn.TransformerEncoderLayer(dim, heads, dim_feedforward=int(mlp_ratio * dim), dropout=0.0,
                                            activation="gelu", batch_first=True, norm_first=True)
                for _ in range(depth)])
            self.norm = tnn.LayerNorm(dim)
            self.head = tnn.Linear(dim, 10)

        def forward(self, x):
            x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
            for blk in self.blocks:
                x = blk(x)
            return self.head(self.norm(x).mean(1))

    return TorchViT()


def test_torch_safetensors_checkpoint_loads_into_mmu_twin(tmp_path):
    torch = torch_or_skip()
    st = pytest.importorskip("safetensors.torch")
    torch.manual_seed(0)
    theirs = _torch_vit(torch)
    path = tmp_path / "vit.safetensors"
    st.save_file(theirs.state_dict(), str(path))
    ours = ViT(depth=2)
    state = mmu.io.load_file(str(path))
    assert set(state) == set(ours.state_dict())
    ours.load_state_dict(state)
    x, _ = _digits()
    batch = x[:16]
    theirs.eval(), ours.eval()
    with torch.no_grad():
        expected = theirs(torch.tensor(batch)).numpy()
    with mmu.no_grad():
        got = ours(mmu.tensor(batch)).numpy()
    assert_close(got, expected, rtol=1e-4, atol=2e-5, what="ViT logits")
    # and the autoencoder's conv / group-norm / transposed-conv / upsample stack
    tnn = torch.nn
    tae = tnn.Module()
    tae.encoder = tnn.Sequential(tnn.Conv2d(1, 8, 3, stride=2, padding=1), tnn.GroupNorm(2, 8), tnn.SiLU(),
                                 tnn.Conv2d(8, 16, 3, stride=2, padding=1), tnn.SiLU())
    tae.decoder = tnn.Sequential(tnn.ConvTranspose2d(16, 8, 4, stride=2, padding=1), tnn.GroupNorm(2, 8), tnn.SiLU(),
                                 tnn.Upsample(scale_factor=2, mode="nearest"), tnn.Conv2d(8, 1, 3, padding=1))
    st.save_file(tae.state_dict(), str(tmp_path / "ae.safetensors"))
    ae = AutoEncoder()
    ae.load_state_dict(mmu.io.load_file(str(tmp_path / "ae.safetensors")))
    with torch.no_grad():
        expected = tae.decoder(tae.encoder(torch.tensor(batch))).numpy()
    with mmu.no_grad():
        got = ae(mmu.tensor(batch)).numpy()
    assert_close(got, expected, rtol=1e-4, atol=2e-5, what="autoencoder output")


def test_vit_train_step_matches_torch():
    """One forward/backward of the whole ViT (conv patch-embed + 2 blocks) equals torch's."""
    torch = torch_or_skip()
    torch.manual_seed(0)
    theirs = _torch_vit(torch)
    ours = ViT(depth=2)
    ours.load_state_dict(theirs.state_dict())
    x, y = _digits()
    xb, yb = x[:8], y[:8]
    loss_t = torch.nn.functional.cross_entropy(theirs(torch.tensor(xb)), torch.tensor(yb))
    loss_t.backward()
    loss_m = F.cross_entropy(ours(mmu.tensor(xb)), mmu.tensor(yb))
    loss_m.backward()
    assert loss_m.item() == pytest.approx(loss_t.item(), rel=1e-5)
    theirs_params = dict(theirs.named_parameters())
    for k, p in ours.named_parameters():
        assert_close(p.grad.numpy(), theirs_params[k].grad.numpy(), rtol=1e-3, atol=1e-5, what=f"grad of {k}")
