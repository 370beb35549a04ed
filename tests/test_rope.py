"""apply_rotary's partial rotary (cos/sin with R < D columns: the first R dims rotate, the rest pass
through, Phi-1.5's rotary fraction) and per-batch tables ((B, 1, L, R) against x (B, H, L, D), for
left-padded batches): forward vs float64 NumPy, gradients vs finite differences and vs torch running
Hugging Face's formula, broadcasting rules and bad inputs."""
import numpy as np
import pytest

import mmu
import mmu.functional as F
from gradcheck import assert_close, check_mmu_grads, torch_or_skip


def tables(pos, R, base=10000.0):
    """float64 cos/sin (..., R) of 1-D positions of any shape (GPT-NeoX rotate-half layout)."""
    inv = base ** (-np.arange(0, R, 2) / R)
    f = np.asarray(pos, np.float64)[..., None] * inv
    emb = np.concatenate([f, f], -1)
    return np.cos(emb), np.sin(emb)


def ref_partial(x, c, s):
    """x (..., D), c/s broadcastable (..., R): rotate the first R dims, pass the rest."""
    x = np.asarray(x, np.float64)
    R = c.shape[-1]
    h = R // 2
    xr, xp = x[..., :R], x[..., R:]
    rot = np.concatenate([-xr[..., h:], xr[..., :h]], -1)
    return np.concatenate([xr * c + rot * s, np.broadcast_to(xp, xr.shape[:-1] + xp.shape[-1:])], -1)


@pytest.mark.parametrize("D,R", [(8, 4), (12, 4), (16, 16), (10, 2)])
def test_partial_rotary_vs_numpy_and_finite_differences(D, R):
    rng = np.random.default_rng(D * 31 + R)
    L = 5
    pos = np.arange(L) * 2 + 1
    c, s = F.rotary_cos_sin(pos, R)
    rc, rs = tables(pos, R)
    assert c.shape == (L, R)
    x = rng.standard_normal((2, 3, L, D)).astype(np.float32)
    out = F.apply_rotary(mmu.tensor(x), c, s).numpy()
    assert_close(out, ref_partial(x, rc, rs), 1e-5, 1e-5)
    assert np.array_equal(out[..., R:], x[..., R:])  # the pass-through dims are copied bit for bit
    cn, sn = c.numpy().astype(np.float64), s.numpy().astype(np.float64)
    check_mmu_grads(lambda m, x: m.F.apply_rotary(x, c, s), lambda x: ref_partial(x, cn, sn), [x[0]])


def test_per_batch_positions_broadcast_without_copies():
    rng = np.random.default_rng(3)
    B, H, L, D, R = 3, 2, 4, 8, 4
    pos = np.array([[0, 1, 2, 3], [0, 0, 0, 1], [5, 6, 7, 8]])  # e.g. left padding in row 1
    c, s = F.rotary_cos_sin(pos.reshape(-1), R)
    c, s = c.reshape(B, 1, L, R), s.reshape(B, 1, L, R)
    rc, rs = tables(pos, R)
    rc, rs = rc[:, None], rs[:, None]  # (B, 1, L, R)
    x = rng.standard_normal((B, H, L, D)).astype(np.float32)
    out = F.apply_rotary(mmu.tensor(x), c, s).numpy()
    assert_close(out, ref_partial(x, rc, rs), 1e-5, 1e-5)
    # each batch row equals a call with its own (L, R) table
    for b in range(B):
        cb, sb = F.rotary_cos_sin(pos[b], R)
        assert np.array_equal(out[b], F.apply_rotary(mmu.tensor(x[b]), cb, sb).numpy())
    cn, sn = c.numpy().astype(np.float64), s.numpy().astype(np.float64)
    check_mmu_grads(lambda m, x: m.F.apply_rotary(x, c, s), lambda x: ref_partial(x, cn, sn), [x])
    # a table per head (1, H, L, R) and one with both (B, H, L, R) broadcast the same way
    ch, sh = F.rotary_cos_sin(np.arange(H * L), D)
    ch, sh = ch.reshape(1, H, L, D), sh.reshape(1, H, L, D)
    assert_close(F.apply_rotary(mmu.tensor(x), ch, sh).numpy(),
                 ref_partial(x, ch.numpy().astype(np.float64), sh.numpy().astype(np.float64)), 1e-5, 1e-5)


def test_partial_per_batch_matches_torch_hugging_face_formula():
    """Phi's attention: q_rot, q_pass = q[..., :R], q[..., R:]; q_rot*cos + rotate_half(q_rot)*sin; cat."""
    torch = torch_or_skip()
    rng = np.random.default_rng(5)
    B, H, L, D, R = 2, 3, 6, 16, 8
    pos = np.stack([np.arange(L), np.maximum(np.arange(L) - 2, 0)])
    c, s = F.rotary_cos_sin(pos.reshape(-1), R)
    c, s = c.reshape(B, 1, L, R), s.reshape(B, 1, L, R)
    x = rng.standard_normal((B, H, L, D)).astype(np.float32)
    g = rng.standard_normal((B, H, L, D)).astype(np.float32)

    def rotate_half(t):
        return torch.cat((-t[..., R // 2:], t[..., :R // 2]), -1)

    tx = torch.tensor(x, requires_grad=True)
    tc, ts = torch.tensor(c.numpy()), torch.tensor(s.numpy())
    rot, pas = tx[..., :R], tx[..., R:]
    tout = torch.cat((rot * tc + rotate_half(rot) * ts, pas), -1)
    tout.backward(torch.tensor(g))
    mx = mmu.tensor(x, requires_grad=True)
    mout = F.apply_rotary(mx, c, s)
    mout.backward(mmu.tensor(g))
    assert_close(mout.numpy(), tout.detach().numpy(), 1e-6, 1e-6)
    assert_close(mx.grad.numpy(), tx.grad.numpy(), 1e-6, 1e-6)


def test_rotary_table_shape_errors():
    x = mmu.tensor(np.zeros((2, 3, 4, 8), np.float32))
    c, s = F.rotary_cos_sin(np.arange(4), 4)
    c3b = mmu.tensor(np.repeat(c.numpy()[None, None], 3, 0))  # (3, 1, 4, 4): batch 3 against x's 2
    with pytest.raises(ValueError, match="apply_rotary.*broadcast"):
        F.apply_rotary(x, c3b, c3b)
    with pytest.raises(ValueError, match="apply_rotary.*at most"):  # R > D
        F.apply_rotary(mmu.tensor(np.zeros((2, 4, 2), np.float32)), c, s)
    c6, s6 = mmu.tensor(np.zeros((4, 6), np.float32)), mmu.tensor(np.zeros((4, 6), np.float32))
    c3, s3 = mmu.tensor(np.zeros((4, 3), np.float32)), mmu.tensor(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="apply_rotary.*even"):  # R odd
        F.apply_rotary(x, c3, s3)
    with pytest.raises(ValueError, match="apply_rotary.*L = 4"):  # L mismatch
        F.apply_rotary(x, c6[:3], s6[:3])
    with pytest.raises(ValueError, match="apply_rotary.*at most 4 dims"):  # more dims than x
        F.apply_rotary(x, c.reshape(1, 1, 1, 4, 4), s.reshape(1, 1, 1, 4, 4))
    with pytest.raises(ValueError, match="same shape"):
        F.apply_rotary(x, c, s6)
