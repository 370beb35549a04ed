"""VQ benchmarks: nearest_code at N=16384, D=256, K=1024/8192/16384 vs torch doing what
vector-quantize-pytorch does (cdist or addmm, then argmin: whichever is faster on this machine), and
VectorQuantize forward + backward (EMA codebook, commitment loss, straight-through) at K=1024/8192/16384
vs a torch twin of vector-quantize-pytorch's EuclideanCodebook step."""
import time

import numpy as np

N, D = 16384, 256


def _inputs(K):
    def make(rng):
        return {"x": rng.standard_normal((N, D), dtype=np.float32),
                "e": rng.standard_normal((K, D), dtype=np.float32)}
    return make


def nearest_mmu(fw, d):
    x, e = fw.tensor(d["x"]), fw.tensor(d["e"])
    return lambda: fw.F.nearest_code(x, e)


def nearest_torch(fw, d):
    torch = fw.mod
    x, e = fw.tensor(d["x"]), fw.tensor(d["e"])

    def cdist():
        return torch.cdist(x, e).argmin(-1)

    def addmm():
        # ||e||^2 - 2 x e^T (||x||^2 is constant per row)
        return torch.addmm((e * e).sum(1), x, e.t(), beta=1.0, alpha=-2.0).argmin(-1)

    best, best_t = cdist, float("inf")
    for f in (cdist, addmm):
        f()
        t = time.perf_counter()
        f()
        dt = time.perf_counter() - t
        if dt < best_t:
            best, best_t = f, dt
    return best


def _vq_inputs(K):
    def make(rng):
        return {"x": rng.standard_normal((8, N // 8, D), dtype=np.float32),
                "g": rng.standard_normal((8, N // 8, D), dtype=np.float32),
                "e": rng.standard_normal((K, D), dtype=np.float32)}
    return make


def vq_mmu(fw, d):
    mmu = fw.mod
    from mmu.quantizers import VectorQuantize
    K = d["e"].shape[0]
    vq = VectorQuantize(D, K, decay=0.8, commitment_weight=1.0)
    with mmu.no_grad():
        vq.embed.copy_(mmu.tensor(d["e"][None]))
        vq.embed_avg.copy_(mmu.tensor(d["e"][None]))
    x = fw.tensor(d["x"], requires_grad=True)
    g = fw.tensor(d["g"])

    def step():
        x.grad = None
        q, ind, loss = vq(x)
        ((q * g).sum() + loss).backward()
    return step


def vq_torch(fw, d):
    torch, F = fw.mod, fw.F
    K = d["e"].shape[0]
    embed = fw.tensor(d["e"])
    embed_avg = embed.clone()
    cluster_size = torch.zeros(K)
    decay, eps = 0.8, 1e-5
    x = fw.tensor(d["x"], requires_grad=True)
    g = fw.tensor(d["g"])

    def step():
        x.grad = None
        flat = x.reshape(-1, D)
        # vector-quantize-pytorch: dist = -cdist, argmax (addmm form: the faster of the two here)
        with torch.no_grad():
            dist = torch.addmm((embed * embed).sum(1), flat, embed.t(), beta=1.0, alpha=-2.0)
            ind = dist.argmin(-1)
        q = F.embedding(ind, embed)
        with torch.no_grad():
            counts = torch.zeros(K).index_add_(0, ind, torch.ones(ind.shape[0]))
            embed_sum = torch.zeros(K, D).index_add_(0, ind, flat)
            cluster_size.lerp_(counts, 1 - decay)
            embed_avg.lerp_(embed_sum, 1 - decay)
            n = cluster_size.sum()
            smoothed = (cluster_size + eps) / (n + K * eps) * n
            embed.copy_(embed_avg / smoothed[:, None])
        commit = F.mse_loss(q.detach(), flat)
        out = (flat + (q - flat).detach()).reshape(x.shape)
        ((out * g).sum() + commit).backward()
    return step


def cases(h):
    out = []
    for K in (1024, 8192, 16384):
        out.append(h.Case(f"nearest_code N{N} D{D} K{K}", 2.0 * N * K * D, _inputs(K), nearest_mmu, nearest_torch))
    for K in (1024, 8192, 16384):
        out.append(h.Case(f"vq_ema fwd+bwd N{N} D{D} K{K}", 2.0 * N * K * D, _vq_inputs(K), vq_mmu, vq_torch))
    return out
