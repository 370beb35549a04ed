"""VectorQuantize: nearest-code VQ with EMA or learnable codebooks, k-means init, dead-code restart, rotation trick.

Semantics follow lucidrains/vector-quantize-pytorch (VectorQuantize with EuclideanCodebook /
CosineSimCodebook); the search is mmu.functional.nearest_code (a fused blocked kernel that never forms
the N x K distance matrix) and the EMA update one fused in-place C kernel (csrc/quant/vq.c).
"""
import math

import numpy as np

from .. import _C
from .. import functional as F
from ..nn import Linear, Module, Parameter
from ..autograd import no_grad
from ..tensor import Tensor
from .stats import codebook_stats
from .._limits import MAX_CODES, MAX_WIDTH, check_at_most, check_elements

import mmu as _mmu

__all__ = ["VectorQuantize", "rotate_to"]


def _np(t):
    return t.detach().numpy() if isinstance(t, Tensor) else np.asarray(t)


def _numeric(v, op, name, integer=False):
    """A Tensor, or an array-like of numbers turned into one (float32; int64 when integer) -> Tensor;
    TypeError naming op and argument for None, strings, objects, and non-integers where ints are due."""
    if isinstance(v, Tensor):
        return v
    if v is None or isinstance(v, (str, bytes, dict)):
        raise TypeError(f"{op}: {name} must be a Tensor or a numeric array, got {type(v).__name__}")
    try:
        a = np.asarray(v)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{op}: {name} must be a Tensor or a numeric array, got {type(v).__name__} ({e})") from None
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or (not integer and np.issubdtype(a.dtype, np.floating))):
        want = "integers" if integer else "numbers"
        raise TypeError(f"{op}: {name} must hold {want}, got {type(v).__name__} of dtype {a.dtype}")
    return _mmu.tensor(np.array(a, np.int64 if integer else np.float32))  # (ascontiguousarray makes 0-d 1-d)


def _l2norm_np(a):
    return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)


def _sample_rows(samples, num):
    """num rows of samples (M, d) (numpy), drawn with mmu's seeded RNG: without replacement when M >= num
    (a random permutation), with replacement otherwise (vector-quantize-pytorch's sample_vectors)."""
    M = samples.shape[0]
    u = _mmu.rand(max(M, num)).numpy()
    if M >= num:
        idx = np.argsort(u[:M], kind="stable")[:num]
    else:
        idx = np.minimum((u[:num] * M).astype(np.int64), M - 1)
    return samples[idx]


def _kmeans(samples, num_clusters, iters, cosine):
    """Lloyd's k-means on samples (M, d) (numpy float32): seeded initial centers sampled from the batch,
    assignment by nearest_code; clusters left empty keep their center. -> (means (K, d), counts (K,))."""
    means = _sample_rows(samples, num_clusters).astype(np.float32)
    bins = np.zeros(num_clusters, np.float32)
    for _ in range(iters):
        idx = _C._nearest_code(samples, means, cosine).numpy()
        bins = np.bincount(idx, minlength=num_clusters).astype(np.float32)
        sums = np.zeros_like(means, dtype=np.float64)
        np.add.at(sums, idx, samples)
        new = (sums / np.maximum(bins, 1)[:, None]).astype(np.float32)
        if cosine:
            new = _l2norm_np(new).astype(np.float32)
        means = np.where(bins[:, None] == 0, means, new)
    return means, bins


def rotate_to(src, tgt):
    """The rotation trick (Fifty et al. 2024, "Restructuring Vector Quantization with the Rotation
    Trick", sec. 4.2): src (M, d) -> a tensor equal to tgt in value whose gradient w.r.t. src is the
    fixed linear map lambda * R, where R rotates src/||src|| onto tgt/||tgt|| and lambda = ||tgt||/||src||.

    With e = src, u = e/||e||, q^ = tgt/||tgt||, w = (u + q^)/||u + q^|| (all but e detached):
        R e = e - 2 (e.w) w + 2 (e.u) q^,     out = lambda * R e.
    R is a Householder reflection through w followed by the reflection taking u to q^, i.e. a rotation
    of the plane (u, q^); R u = q^, so out == tgt in value.
    src and tgt: float32 Tensors (or arrays, taken as constants) of one shape (..., d).
    """
    src = _numeric(src, "rotate_to", "src")
    tgt = _numeric(tgt, "rotate_to", "tgt")
    if src.dtype != _mmu.float32 or tgt.dtype != _mmu.float32:
        raise TypeError(f"rotate_to: src and tgt must be float32, got {src.dtype} and {tgt.dtype}")
    if src.ndim < 1 or tuple(src.shape) != tuple(tgt.shape):
        raise ValueError(f"rotate_to: src and tgt must have one shape (..., d), got {tuple(src.shape)} and "
                         f"{tuple(tgt.shape)}")
    e = src
    es = src.detach().numpy().astype(np.float64)
    qs = tgt.detach().numpy().astype(np.float64)
    ne = np.linalg.norm(es, axis=-1, keepdims=True)
    nq = np.linalg.norm(qs, axis=-1, keepdims=True)
    u = es / np.maximum(ne, 1e-12)
    qh = qs / np.maximum(nq, 1e-12)
    w = _l2norm_np(u + qh)
    lam = np.where(ne > 0, nq / np.maximum(ne, 1e-12), 0.0)
    w_t = _mmu.tensor(w.astype(np.float32))
    u_t = _mmu.tensor(u.astype(np.float32))
    qh_t = _mmu.tensor(qh.astype(np.float32))
    lam_t = _mmu.tensor(lam.astype(np.float32))
    ew = (e * w_t).sum(-1, keepdim=True)
    eu = (e * u_t).sum(-1, keepdim=True)
    return (e - 2.0 * ew * w_t + 2.0 * eu * qh_t) * lam_t


# Lloyd iterations on the first batch: vector-quantize-pytorch's default is 10
MAX_KMEANS_ITERS = 10_000


def _check_int(v, name, minimum):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"VectorQuantize: {name} must be an int, got {type(v).__name__}")
    if v < minimum:
        raise ValueError(f"VectorQuantize: {name} must be >= {minimum}, got {v}")
    return int(v)


class VectorQuantize(Module):
    """Vector quantization layer (VQ-VAE), vector-quantize-pytorch's VectorQuantize.

    forward(x) with x (B, N, dim) (or (B, dim, N) with channel_last=False, or (B, dim, H, W) with
    accept_image_fmap=True) -> (quantized (same shape as x), indices (B, N) / (B, H, W), plus a last
    axis of size heads when heads > 1, loss (0-d)).

    Codebook: buffer `embed` (C, K, codebook_dim) with C = heads if separate_codebook_per_head else 1,
    updated by EMA (cluster_size, embed_avg with `decay`, Laplace-smoothed cluster sizes
    (n_k + eps) / (n + K eps) * n) in training mode, or a Parameter trained by the codebook loss
    mse(q, sg(x)) * codebook_weight when learnable_codebook=True. Commitment loss mse(sg(q), x) *
    commitment_weight. Gradients reach x by the straight-through estimator x + sg(q - x), or by the
    rotation trick (rotate_to) when rotation_trick=True. use_cosine_sim l2-normalises the inputs and the
    codes (the search maximises cosine similarity; outputs and losses use the normalised input).
    EMA state starts as vector-quantize-pytorch's: cluster_size = 1 for every code, embed_avg = embed,
    so a code no batch uses keeps its scale: its embed_avg and count decay together, and only once
    decay^t nears eps (t ~ 50 updates at decay 0.8, ~1100 at 0.99) does the Laplace eps shrink it, by
    decay^t / (decay^t + eps), as in vector-quantize-pytorch (a dead-code restart replaces it first).
    kmeans_init runs kmeans_iters (>= 1) Lloyd iterations on the first training batch and then sets
    embed_avg = centre * count, cluster_size = count and embed = embed_avg / smoothed count, as
    vector-quantize-pytorch's init_embed_ (a centre whose cluster came out empty gets count 0 and code 0).
    Until then the codebook is all zeros; unlike vector-quantize-pytorch, which initialises on the first
    forward in any mode, mmu initialises only in training mode without freeze_codebook (nothing changes
    in eval). Codes whose
    EMA cluster size falls below threshold_ema_dead_code are replaced by random vectors of the batch
    (their cluster_size reset to the threshold, embed_avg to vector * threshold); with a learnable or
    non-EMA codebook the counts are still tracked by EMA for this (the codebook is not). stochastic_sample_codes draws
    codes from softmax(-distance / sample_codebook_temp) with the Gumbel-max trick in training.
    Nothing in the codebook changes in eval mode. self.stats is a QuantizerStats after every forward.

    sync_codebook (vector-quantize-pytorch's name; None: on inside a data-parallel training step, i.e.
    mmu.distributed.data_parallel.synchronized(), which the Trainer enters when it trains data parallel;
    True: whenever mmu.distributed runs more than one rank; False: never): data-parallel training keeps the codebook identical on every rank. The batch's EMA statistics
    (per-code counts and sums of the assigned vectors, all codebooks in one buffer) are all-reduced
    (summed) before the EMA step, which then runs on every rank with the same numbers (it equals one
    process seeing all the ranks' batches, up to float rounding of the sums); k-means init and dead-code
    restarts gather the batch vectors of all ranks (in rank order), are decided on rank 0 (its RNG
    draws the samples) and broadcast (codebook, embed_avg, cluster_size). vector-quantize-pytorch samples
    the restart vectors on each rank and all-gathers them; rank 0 deciding gives the same result as one
    process over the concatenated batch, which the tests compare against.

    Defaults are vector-quantize-pytorch's (decay 0.8, commitment_weight 1.0, no k-means, no restart). The
    tokenizers differ (mmu.tokenizers.make_quantizer): "ema_vq" and "rvq" use decay 0.99 (the VQ-VAE paper's
    appendix; at 0.8 a code follows the last few batches), kmeans_init=True and threshold_ema_dead_code=1
    (codes start on the data and unused ones are restarted, so usage stays high) and commitment_weight =
    beta 0.25 (VQ-VAE eq. 3); "vq" uses learnable_codebook=True, ema_update=False, codebook_weight 1.0,
    commitment_weight 0.25 (VQ-VAE's codebook + beta-commitment loss).

    Limits (ValueError before anything is allocated, see mmu._limits): codebook_size <= 2**24, dim,
    codebook_dim and heads * codebook_dim <= 2**20, the codebook (C, K, codebook_dim) and the projection
    at most 2**28 float32 elements (1 GiB) each, kmeans_iters <= 10,000.
    """

    def __init__(self, dim, codebook_size, codebook_dim=None, heads=1, separate_codebook_per_head=False,
                 use_cosine_sim=False, decay=0.8, eps=1e-5, learnable_codebook=False, ema_update=True,
                 commitment_weight=1.0, codebook_weight=1.0, kmeans_init=False, kmeans_iters=10,
                 threshold_ema_dead_code=0, rotation_trick=False, stochastic_sample_codes=False,
                 sample_codebook_temp=1.0, freeze_codebook=False, channel_last=True, accept_image_fmap=False,
                 sync_codebook=None):
        super().__init__()
        if sync_codebook is not None and not isinstance(sync_codebook, bool):
            raise TypeError(f"VectorQuantize: sync_codebook must be None, True or False, got {sync_codebook!r}")
        self.sync_codebook = sync_codebook
        dim = _check_int(dim, "dim", 1)
        codebook_size = _check_int(codebook_size, "codebook_size", 1)
        heads = _check_int(heads, "heads", 1)
        codebook_dim = dim if codebook_dim is None else _check_int(codebook_dim, "codebook_dim", 1)
        kmeans_iters = _check_int(kmeans_iters, "kmeans_iters", 1 if kmeans_init else 0)
        # sizes before anything is allocated (mmu._limits: a 1 GiB tensor, 2**24 codes, 2**20 wide)
        op = "VectorQuantize"
        for name, v in (("dim", dim), ("codebook_dim", codebook_dim), ("heads * codebook_dim", heads * codebook_dim)):
            check_at_most(op, name, v, MAX_WIDTH)
        check_at_most(op, "codebook_size", codebook_size, MAX_CODES)
        check_at_most(op, "kmeans_iters", kmeans_iters, MAX_KMEANS_ITERS)
        n_books = heads if separate_codebook_per_head else 1
        check_elements(op, f"the codebook ({n_books}, {codebook_size}, {codebook_dim})",
                       n_books * codebook_size * codebook_dim)
        if heads * codebook_dim != dim:
            check_elements(op, f"the projection ({heads * codebook_dim}, {dim})", heads * codebook_dim * dim)
        if not 0.0 <= float(decay) <= 1.0:
            raise ValueError(f"VectorQuantize: decay must be in [0, 1], got {decay}")
        if float(eps) <= 0:
            raise ValueError(f"VectorQuantize: eps must be > 0, got {eps}")
        if float(sample_codebook_temp) <= 0:
            raise ValueError(f"VectorQuantize: sample_codebook_temp must be > 0, got {sample_codebook_temp}")
        if float(threshold_ema_dead_code) < 0:
            raise ValueError(f"VectorQuantize: threshold_ema_dead_code must be >= 0, got {threshold_ema_dead_code}")
        if learnable_codebook and ema_update:
            # vector-quantize-pytorch asserts the same: the two would fight over the codebook
            raise ValueError("VectorQuantize: learnable_codebook=True needs ema_update=False")
        self.dim, self.codebook_size, self.codebook_dim, self.heads = dim, codebook_size, codebook_dim, heads
        self.separate_codebook_per_head = bool(separate_codebook_per_head)
        self.use_cosine_sim = bool(use_cosine_sim)
        self.decay, self.eps = float(decay), float(eps)
        self.learnable_codebook, self.ema_update = bool(learnable_codebook), bool(ema_update)
        self.commitment_weight, self.codebook_weight = float(commitment_weight), float(codebook_weight)
        self.kmeans_init, self.kmeans_iters = bool(kmeans_init), kmeans_iters
        self.threshold_ema_dead_code = float(threshold_ema_dead_code)
        self.rotation_trick = bool(rotation_trick)
        self.stochastic_sample_codes = bool(stochastic_sample_codes)
        self.sample_codebook_temp = float(sample_codebook_temp)
        self.freeze_codebook = bool(freeze_codebook)
        self.channel_last, self.accept_image_fmap = bool(channel_last), bool(accept_image_fmap)
        self.num_codebooks = heads if self.separate_codebook_per_head else 1

        inner = codebook_dim * heads
        self.requires_projection = inner != dim
        self.project_in = Linear(dim, inner) if self.requires_projection else None
        self.project_out = Linear(inner, dim) if self.requires_projection else None

        C, K, d = self.num_codebooks, codebook_size, codebook_dim
        if self.kmeans_init:
            embed = np.zeros((C, K, d), np.float32)
        elif self.use_cosine_sim:
            embed = _l2norm_np(_mmu.randn(C, K, d).numpy())
        else:  # kaiming_uniform_ on a (C, K, d) tensor: fan_in = K * d
            bound = math.sqrt(6.0 / (K * d))
            embed = (_mmu.rand(C, K, d).numpy() * 2.0 - 1.0) * bound
        embed = _mmu.tensor(np.ascontiguousarray(embed, np.float32))
        if self.learnable_codebook:
            self.embed = Parameter(embed)
        else:
            self.register_buffer("embed", embed)
        # vector-quantize-pytorch's start: every code counts as seen once, embed_avg = embed (zeros before
        # k-means). Starting the counts at zero made the first update divide an unused code's decayed
        # embed_avg by a Laplace-smoothed count of ~eps: 1e4-norm codes that were never chosen again.
        self.register_buffer("cluster_size", _mmu.tensor(np.ones((C, K), np.float32)))
        self.register_buffer("embed_avg", _mmu.tensor(embed.numpy().copy()))
        self.register_buffer("initted", _mmu.tensor(np.array([0.0 if self.kmeans_init else 1.0], np.float32)))
        self.stats = None

    # ------------------------------------------------------------------ codebook sync (data parallel)
    def _sync_world(self):
        """mmu.distributed when the codebook is kept in sync over more than one rank, else None."""
        if self.sync_codebook is False:
            return None
        from .. import distributed as dist
        if self.sync_codebook is None:
            from ..distributed.data_parallel import is_synchronized
            return dist if is_synchronized() else None
        return dist if dist.is_initialized() and dist.get_world_size() > 1 else None

    @staticmethod
    def _gather_flats(dist, flats):
        """Every rank's batch vectors per codebook, concatenated in rank order."""
        every = dist.all_gather_object(flats)
        return [np.concatenate([r[c] for r in every]) for c in range(len(flats))]

    def _broadcast_codebook(self, dist):
        """The codebook state (embed, embed_avg, cluster_size, initted) := rank 0's, in place."""
        for t in (self.embed, self.embed_avg, self.cluster_size, self.initted):
            dist.broadcast(t.detach().numpy(), src=0)
            t._bump_version()

    def _synced_batch_stats(self, dist, parts, inds):
        """[(counts (K,), sums (K, d)) per codebook] of the batch, float32, summed over all ranks in one
        all-reduce."""
        K, d = self.codebook_size, self.codebook_dim
        buf = np.zeros((len(parts), K * (d + 1)), np.float32)
        for c, (p, ind) in enumerate(zip(parts, inds)):
            i = ind.numpy()
            buf[c, :K] = np.bincount(i, minlength=K)
            sums = buf[c, K:].reshape(K, d)
            np.add.at(sums, i, p.detach().numpy())
        dist.all_reduce(buf, op="sum")
        return [(buf[c, :K], buf[c, K:].reshape(K, d)) for c in range(len(parts))]

    def _ema_update_synced(self, dist, parts, inds):
        """The EMA codebook step of mmu_vq_ema_update (csrc/quant/vq.c, float32 in the same order of
        operations) on the batch statistics summed over the ranks."""
        cs = self.cluster_size.numpy().copy()
        avg = self.embed_avg.numpy().copy()
        emb = self._codebook_np().copy()
        dec, one_m = np.float32(self.decay), np.float32(1.0 - self.decay)
        K = self.codebook_size
        for c, (cnt, sums) in enumerate(self._synced_batch_stats(dist, parts, inds)):
            cs[c] = dec * cs[c] + one_m * cnt
            total = float(np.sum(cs[c], dtype=np.float64))
            avg[c] = avg[c] * dec + one_m * sums
            n, denom = np.float32(total), np.float32(total + K * self.eps)
            smoothed = (cs[c] + np.float32(self.eps)) / denom * n
            emb[c] = avg[c] * (np.float32(1.0) / smoothed)[:, None]
        self._set_buffers(emb, avg, cs)

    # ------------------------------------------------------------------ codebook state
    def _codebook_np(self):
        return self.embed.detach().numpy()

    def _set_buffers(self, embed=None, embed_avg=None, cluster_size=None):
        with no_grad():
            if embed is not None:
                self.embed.copy_(_mmu.tensor(np.ascontiguousarray(embed, np.float32)))
            if embed_avg is not None:
                self.embed_avg.copy_(_mmu.tensor(np.ascontiguousarray(embed_avg, np.float32)))
            if cluster_size is not None:
                self.cluster_size.copy_(_mmu.tensor(np.ascontiguousarray(cluster_size, np.float32)))

    def _smoothed_codebook(self, embed_avg, cluster_size):
        """embed_avg (C, K, d) / Laplace-smoothed cluster sizes (n_k + eps) / (n + K eps) * n (numpy, per
        codebook), l2-normalised for cosine: vector-quantize-pytorch's update_ema, the same formula as the
        C kernel's last step."""
        cs = cluster_size.astype(np.float64)
        n = cs.sum(-1, keepdims=True)
        smoothed = (cs + self.eps) / (n + self.codebook_size * self.eps) * n
        emb = embed_avg / smoothed[..., None]
        return _l2norm_np(emb) if self.use_cosine_sim else emb

    def _init_kmeans(self, flats):
        """vector-quantize-pytorch's init_embed_: k-means on the batch, then embed_avg = means * counts,
        cluster_size = counts (the last iteration's bins, 0 for an empty cluster) and the codebook
        recomputed from them as an EMA step does. The first EMA step then moves each code from its centre
        by (1 - decay) of the batch's pull, not by a factor 1 / count; a cluster left empty gets
        embed_avg 0 and count 0, so its code is 0 (and dead: restarted at once when
        threshold_ema_dead_code > 0), as in vector-quantize-pytorch."""
        avg = self.embed_avg.numpy().copy()
        cs = self.cluster_size.numpy().copy()
        for c, f in enumerate(flats):
            means, bins = _kmeans(f, self.codebook_size, self.kmeans_iters, self.use_cosine_sim)
            avg[c], cs[c] = means * bins[:, None], bins
        self._set_buffers(self._smoothed_codebook(avg.astype(np.float64), cs), avg, cs)
        self.initted.fill_(1.0)

    def _track_counts(self, parts, inds):
        """Without the EMA codebook update (learnable_codebook or ema_update=False) the dead-code restart
        still needs usage: cluster_size and embed_avg follow the same EMA of the batch's counts and sums
        (vector-quantize-pytorch's track_cluster_size_and_embed_avg), the codebook itself is left alone."""
        cs = self.cluster_size.numpy().astype(np.float64)
        avg = self.embed_avg.numpy().astype(np.float64)
        K, dec = self.codebook_size, self.decay
        dist = self._sync_world()
        synced = self._synced_batch_stats(dist, parts, inds) if dist is not None else None
        for c, (p, ind) in enumerate(zip(parts, inds)):
            if synced is not None:
                counts, sums = synced[c][0].astype(np.float64), synced[c][1].astype(np.float64)
            else:
                i = ind.numpy()
                sums = np.zeros((K, self.codebook_dim))
                np.add.at(sums, i, p.detach().numpy())
                counts = np.bincount(i, minlength=K)
            cs[c] = dec * cs[c] + (1.0 - dec) * counts
            avg[c] = dec * avg[c] + (1.0 - dec) * sums
        self._set_buffers(embed_avg=avg, cluster_size=cs)

    def _expire_codes(self, flats):
        if self.threshold_ema_dead_code <= 0:
            return
        cs = self.cluster_size.numpy().copy()
        dead = cs < self.threshold_ema_dead_code
        if not dead.any():   # cluster_size is the same on every rank: all of them agree
            return
        dist = self._sync_world()
        if dist is not None:
            flats = self._gather_flats(dist, flats)
            if dist.get_rank() != 0:
                self._broadcast_codebook(dist)
                return
        emb = self._codebook_np().copy()
        avg = self.embed_avg.numpy().copy()
        for c, f in enumerate(flats):
            m = dead[c]
            if not m.any():
                continue
            sampled = _sample_rows(f, int(m.sum())).astype(np.float32)
            emb[c][m] = sampled
            cs[c][m] = self.threshold_ema_dead_code
            avg[c][m] = sampled * self.threshold_ema_dead_code
        self._set_buffers(emb, avg, cs)
        if dist is not None:
            self._broadcast_codebook(dist)

    # ------------------------------------------------------------------ search
    def _indices(self, flat, c):
        """flat (M, d) Tensor (already normalised for cosine) -> int64 (M,) indices into codebook c."""
        emb = self.embed.detach()[c]
        if not (self.training and self.stochastic_sample_codes):
            return F.nearest_code(flat.detach(), emb, "cosine" if self.use_cosine_sim else "l2")
        # Gumbel-max sample of softmax(logits / temp): logits = -distance (l2) or cosine similarity
        x = flat.detach().numpy().astype(np.float64)
        e = emb.numpy().astype(np.float64)
        if self.use_cosine_sim:
            logits = x @ e.T
        else:
            d2 = (x * x).sum(1, keepdims=True) - 2.0 * x @ e.T + (e * e).sum(1)[None]
            logits = -np.sqrt(np.maximum(d2, 0.0))
        u = _mmu.rand(*logits.shape).numpy().astype(np.float64)
        g = -np.log(-np.log(np.clip(u, 1e-20, 1.0 - 1e-7)))
        return _mmu.tensor((logits / self.sample_codebook_temp + g).argmax(1).astype(np.int64))

    # ------------------------------------------------------------------ forward
    def forward(self, x):
        """x (B, N, dim) (or (B, dim, N) with channel_last=False, or (B, dim, H, W) with
        accept_image_fmap=True) -> (quantized, same shape as x; indices, int64 (B, N) / (B, H, W) with a
        trailing heads axis when heads > 1; loss, 0-d). In training mode the EMA codebook is updated
        and dead codes restarted; self.stats holds the usage statistics of the call.
        """
        x = _numeric(x, "VectorQuantize", "x")
        if x.dtype != _mmu.float32:
            raise TypeError(f"VectorQuantize: x must be float32, got {x.dtype}")
        image = self.accept_image_fmap
        if image:
            if x.ndim != 4 or x.shape[1] != self.dim:
                raise ValueError(f"VectorQuantize: with accept_image_fmap=True x must be (B, {self.dim}, H, W), "
                                 f"got {tuple(x.shape)}")
            B, _, H, W = x.shape
            x = x.reshape(B, self.dim, H * W).transpose(1, 2)
        elif not self.channel_last:
            if x.ndim != 3 or x.shape[1] != self.dim:
                raise ValueError(f"VectorQuantize: with channel_last=False x must be (B, {self.dim}, N), "
                                 f"got {tuple(x.shape)}")
            x = x.transpose(1, 2)
        elif x.ndim < 2 or x.shape[-1] != self.dim:
            raise ValueError(f"VectorQuantize: x must be (..., {self.dim}), got {tuple(x.shape)}")
        lead = tuple(x.shape[:-1])
        M = int(np.prod(lead))
        h, d, C = self.heads, self.codebook_dim, self.num_codebooks
        if self.project_in is not None:
            x = self.project_in(x)
        x = x.reshape(M, h * d)

        # (C, rows, d): one flat batch per codebook
        if C > 1:
            xs = x.reshape(M, h, d).transpose(0, 1)
            parts = [xs[c] for c in range(C)]
        else:
            parts = [x.reshape(M * h, d)]
        if self.use_cosine_sim:
            parts = [F.normalize(p, dim=-1) for p in parts]

        update = self.training and not self.freeze_codebook
        if update and self.kmeans_init and float(self.initted.numpy()[0]) == 0.0:
            dist = self._sync_world()
            flats = [p.detach().numpy() for p in parts]
            if dist is None:
                self._init_kmeans(flats)
            else:   # decided on rank 0 over every rank's batch, then broadcast
                flats = self._gather_flats(dist, flats)
                if dist.get_rank() == 0:
                    self._init_kmeans(flats)
                self._broadcast_codebook(dist)

        qs, inds = [], []
        for c, p in enumerate(parts):
            ind = self._indices(p, c)
            if self.learnable_codebook:
                q = F.embedding(ind, self.embed[c])
            else:
                q = F.embedding(ind, self.embed.detach()[c])
            inds.append(ind)
            qs.append(q)

        sync = self._sync_world() if update else None
        if update and self.ema_update and not self.learnable_codebook and sync is not None:
            self._ema_update_synced(sync, parts, inds)
            if self.use_cosine_sim:
                self._set_buffers(embed=_l2norm_np(self._codebook_np()))
        elif update and self.ema_update and not self.learnable_codebook:
            for c, p in enumerate(parts):
                _C._vq_ema_update(p.detach(), inds[c], self.cluster_size, self.embed_avg, self.embed, c,
                                  self.decay, self.eps)
            if self.use_cosine_sim:
                self._set_buffers(embed=_l2norm_np(self._codebook_np()))
        elif update and self.threshold_ema_dead_code > 0:
            self._track_counts(parts, inds)
        if update:
            self._expire_codes([p.detach().numpy() for p in parts])

        losses = {}
        loss = None
        flat_x = parts[0] if C == 1 else _mmu.stack(parts, 0)
        flat_q = qs[0] if C == 1 else _mmu.stack(qs, 0)
        if self.training:
            if self.commitment_weight > 0:
                commit = F.mse_loss(flat_q.detach(), flat_x)
                losses["commitment"] = commit
                loss = commit * self.commitment_weight
            if self.learnable_codebook and self.codebook_weight > 0:
                cb = F.mse_loss(flat_q, flat_x.detach())
                losses["codebook"] = cb
                loss = cb * self.codebook_weight if loss is None else loss + cb * self.codebook_weight
            if self.rotation_trick:
                out_q = rotate_to(flat_x.reshape(-1, d), flat_q.reshape(-1, d)).reshape(*flat_q.shape)
            else:
                out_q = flat_x + (flat_q - flat_x).detach()
        else:
            out_q = flat_q
        if loss is None:
            loss = _mmu.zeros(())

        # back to (M, h * d)
        if C > 1:
            q = out_q.transpose(0, 1).reshape(M, h * d)
            idx = _mmu.stack(inds, 1)  # (M, h)
        else:
            q = out_q.reshape(M, h * d)
            idx = inds[0].reshape(M, h) if h > 1 else inds[0]
        if self.project_out is not None:
            q = self.project_out(q)
        q = q.reshape(*lead, self.dim)
        idx = idx.reshape(*lead, h) if h > 1 else idx.reshape(*lead)
        if image:
            q = q.transpose(1, 2).reshape(B, self.dim, H, W)
            idx = idx.reshape(B, H, W, h) if h > 1 else idx.reshape(B, H, W)
        elif not self.channel_last:
            q = q.transpose(1, 2)

        self._set_stats(inds, losses)
        return q, idx, loss

    def _set_stats(self, inds, losses):
        K, C = self.codebook_size, self.num_codebooks
        flat = np.concatenate([i.numpy().reshape(-1) + c * K for c, i in enumerate(inds)])
        tracked = self.ema_update and not self.learnable_codebook
        self.stats = codebook_stats(flat, K * C, losses={k: v.item() for k, v in losses.items()},
                                    ema_counts=self.cluster_size.numpy().reshape(-1) if tracked else None,
                                    dead_threshold=self.threshold_ema_dead_code)
        self.stats.extra["num_codebooks"] = C

    # ------------------------------------------------------------------ decoding
    def get_codes_from_indices(self, indices):
        """indices (..., ) or (..., heads) int64 -> codes (..., heads * codebook_dim) (before project_out)."""
        ind = _numeric(indices, "VectorQuantize.get_codes_from_indices", "indices", integer=True)
        if ind.dtype != _mmu.int64:
            raise TypeError(f"VectorQuantize.get_codes_from_indices: indices must be int64, got {ind.dtype}")
        h, d, K = self.heads, self.codebook_dim, self.codebook_size
        a = ind.numpy()
        if h > 1 and (a.ndim == 0 or a.shape[-1] != h):
            raise ValueError(f"VectorQuantize.get_codes_from_indices: indices need a last axis of {h} heads, "
                             f"got {a.shape}")
        if a.size and (a.min() < 0 or a.max() >= K):
            raise IndexError(f"VectorQuantize.get_codes_from_indices: indices must lie in [0, {K})")
        lead = a.shape[:-1] if h > 1 else a.shape
        flat = ind.reshape(-1, h)
        if self.num_codebooks > 1:
            codes = _mmu.stack([F.embedding(flat[:, c], self.embed[c]) for c in range(h)], 1)
        else:
            codes = F.embedding(flat.reshape(-1), self.embed[0])
        return codes.reshape(*lead, h * d)

    def indices_to_codes(self, indices):
        """indices -> what forward returned as `quantized` for them (the same as get_output_from_indices)."""
        return self.get_output_from_indices(indices)

    def get_output_from_indices(self, indices):
        """indices -> quantized output in the input space (project_out applied; (B, dim, H, W) for
        accept_image_fmap when indices are (B, H, W[, heads]))."""
        codes = self.get_codes_from_indices(indices)
        if self.project_out is not None:
            codes = self.project_out(codes)
        if self.accept_image_fmap and codes.ndim == 4:
            codes = codes.permute(0, 3, 1, 2)
        elif not self.channel_last and codes.ndim == 3:
            codes = codes.transpose(1, 2)
        return codes
