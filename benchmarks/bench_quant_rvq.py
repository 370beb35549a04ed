"""Quantizer benchmarks: ResidualVQ and GumbelQuantize, forward + backward, against torch twins.

rvq_depth4_train_step: ResidualVQ(256, num_quantizers=4, codebook_size=1024) in training mode (EMA
codebooks, decay 0.8, commitment 1.0) on N = 16384 vectors (64 images x 16x16) of dim 256; the torch
twin runs what vector-quantize-pytorch's ResidualVQ + EuclideanCodebook do per level: cdist, argmax of
-distance, gather, one-hot EMA update of cluster_size / embed_avg with Laplace smoothing, mse
commitment, straight-through, residual -= quantized.detach().
gumbel_k8192_train_step: GumbelQuantize(256, 8192) on (8, 256, 32, 32) (DALL-E dVAE's grid and
codebook), hard straight-through, kl_weight 5e-4; the torch twin is taming-transformers'
GumbelQuantize.forward (1x1 conv, F.gumbel_softmax(dim=1, hard=True), einsum, KL to uniform).
Both steps backpropagate sum(quantized * g) + loss to the input and every parameter.
"""
import numpy as np

RVQ_N, RVQ_DIM, RVQ_K, RVQ_Q = 16384, 256, 1024, 4
GB, GC, GH, GK = 8, 256, 32, 8192


# ---------------------------------------------------------------- residual VQ

def _rvq_inputs(h):
    def make(rng):
        return {"x": h.randn(rng, 64, RVQ_N // 64, RVQ_DIM), "g": h.randn(rng, 64, RVQ_N // 64, RVQ_DIM),
                "embed": h.randn(rng, RVQ_Q, RVQ_K, RVQ_DIM)}
    return make


def _rvq_mmu(fw, d):
    mmu = fw.mod
    rvq = mmu.quantizers.ResidualVQ(RVQ_DIM, RVQ_Q, RVQ_K, decay=0.8, commitment_weight=1.0)
    rvq.train()
    x, g = fw.tensor(d["x"], requires_grad=True), fw.tensor(d["g"])

    def step():
        x.grad = None
        q, _, loss = rvq(x)
        ((q * g).sum() + loss).backward()
    return step


def _torch_vq_level(torch, x, embed, cluster_size, embed_avg, decay=0.8, eps=1e-5):
    """vector-quantize-pytorch's VectorQuantize (EMA EuclideanCodebook, training) on x (B, N, D)."""
    F = torch.nn.functional
    k = embed.shape[0]
    with torch.no_grad():
        flatten = x.detach().reshape(-1, x.shape[-1])
        dist = -torch.cdist(flatten, embed, p=2)
        ind = dist.argmax(dim=-1)
        quantize = F.embedding(ind, embed)
        onehot = F.one_hot(ind, k).type(x.dtype)
        cluster_size.lerp_(onehot.sum(0), 1 - decay)
        embed_avg.lerp_(onehot.t() @ flatten, 1 - decay)
        n = cluster_size.sum()
        smoothed = (cluster_size + eps) / (n + k * eps) * n
        embed.copy_(embed_avg / smoothed[:, None])
    quantize = quantize.reshape(x.shape)
    loss = F.mse_loss(quantize.detach(), x)
    return x + (quantize - x).detach(), ind.reshape(x.shape[:-1]), loss


def _rvq_torch(fw, d):
    torch = fw.mod
    embeds = [torch.tensor(e) for e in d["embed"]]
    sizes = [torch.zeros(RVQ_K) for _ in embeds]
    avgs = [e.clone() for e in embeds]
    x, g = fw.tensor(d["x"], requires_grad=True), fw.tensor(d["g"])

    def step():
        x.grad = None
        residual, out, losses = x, 0.0, []
        for e, cs, ea in zip(embeds, sizes, avgs):
            q, _, loss = _torch_vq_level(torch, residual, e, cs, ea)
            residual = residual - q.detach()
            out = out + q
            losses.append(loss)
        ((out * g).sum() + torch.stack(losses).mean()).backward()
    return step


# ---------------------------------------------------------------- Gumbel

def _gumbel_inputs(h):
    def make(rng):
        return {"x": h.randn(rng, GB, GC, GH, GH), "g": h.randn(rng, GB, GC, GH, GH),
                "w": (h.randn(rng, GK, GC, 1, 1) / np.float32(16.0)).astype(np.float32),
                "b": np.zeros(GK, np.float32), "e": h.randn(rng, GK, GC)}
    return make


def _gumbel_mmu(fw, d):
    mmu = fw.mod
    gq = mmu.quantizers.GumbelQuantize(GC, GK)
    gq.load_state_dict({"proj.weight": d["w"], "proj.bias": d["b"], "embed.weight": d["e"]})
    gq.train()
    x, g = fw.tensor(d["x"], requires_grad=True), fw.tensor(d["g"])
    leaves = [x] + list(gq.parameters())

    def step():
        for t in leaves:
            t.grad = None
        q, _, loss = gq(x)
        ((q * g).sum() + loss).backward()
    return step


def _gumbel_torch(fw, d):
    torch = fw.mod
    F = torch.nn.functional
    w, b = torch.tensor(d["w"], requires_grad=True), torch.tensor(d["b"], requires_grad=True)
    e = torch.tensor(d["e"], requires_grad=True)
    x, g = fw.tensor(d["x"], requires_grad=True), fw.tensor(d["g"])
    leaves = [x, w, b, e]

    def step():  # taming-transformers GumbelQuantize.forward (training, straight-through)
        for t in leaves:
            t.grad = None
        logits = F.conv2d(x, w, b)
        soft_one_hot = F.gumbel_softmax(logits, tau=1.0, dim=1, hard=True)
        z_q = torch.einsum("b n h w, n d -> b d h w", soft_one_hot, e)
        qy = F.softmax(logits, dim=1)
        diff = 5e-4 * torch.sum(qy * torch.log(qy * GK + 1e-10), dim=1).mean()
        ((z_q * g).sum() + diff).backward()
    return step


def cases(h):
    gumbel_flops = 3 * 2 * GB * GH * GH * GK * GC * 2  # 1x1 conv and one-hot @ embed, fwd + 2 bwd each
    out = [h.Case("gumbel_k8192_train_step", gumbel_flops, _gumbel_inputs(h), _gumbel_mmu, _gumbel_torch)]
    try:
        from mmu.quantizers import vq
        has_vq = hasattr(vq, "VectorQuantize")
    except Exception:  # mmu not importable: the torch column still runs
        has_vq = True
    if has_vq:
        # one distance GEMM per level; an EMA codebook's backward is straight-through (no GEMM)
        out.append(h.Case("rvq_depth4_train_step", RVQ_Q * 2 * RVQ_N * RVQ_K * RVQ_DIM, _rvq_inputs(h),
                          _rvq_mmu, _rvq_torch))
    return out
