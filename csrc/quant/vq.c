/* Vector quantization kernels: the nearest-code search and the EMA codebook
 * update of VectorQuantize (mmu/quantizers/vq.py).
 *
 * nearest_code never forms the N x K distance matrix: rows of x go in blocks
 * of VQ_BM, codes in blocks of VQ_BK; each block's dot products come from one
 * cached oneDNN matmul into a small scratch tile (the codebook is read
 * transposed through strides, no copy), and the running argmin of
 * ||e||^2 - 2 x.e is updated from the tile while it is still in cache. ||x||^2
 * is the same for every code of a row, so it never enters the comparison.
 *
 * The EMA update sums x per code with the columns of D split across threads:
 * every output element is summed by one thread in row order, so the result is
 * bit-identical whatever the thread count, without per-thread K x D copies. */
#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "../core/mmu.h"
#include "../dnnl/mmu_dnnl.h"
#include "../ops/ops.h"

#define VQ_BM 512
#define VQ_BK 2048

static mmu_status check_2d_f32(const mmu_tensor *t, const char *op, const char *arg) {
    mmu_status st;
    if ((st = mmu_check_dtype(t, MMU_FLOAT32, op, arg))) return st;
    if (t->ndim != 2) return mmu_fail(MMU_EVALUE, "%s: %s must be 2-D, got %s", op, arg, mmu_shape_str(t));
    return MMU_OK;
}

// x (N, D) -> y (N, D) rows divided by max(||row||, 1e-12) (F.normalize)
static void normalize_rows(float *y, const float *x, int64_t N, int64_t D) {
#pragma omp parallel for schedule(static) if (N * D > MMU_PAR_GRAIN)
    for (int64_t i = 0; i < N; i++) {
        const float *xi = x + i * D;
        float *yi = y + i * D;
        double s = 0.0;
        for (int64_t d = 0; d < D; d++) s += (double)xi[d] * xi[d];
        float inv = 1.0f / fmaxf((float)sqrt(s), 1e-12f);
        for (int64_t d = 0; d < D; d++) yi[d] = xi[d] * inv;
    }
}

// x (N, D), codebook (K, D) -> idx (N,) int64: argmin_k ||x - e_k||^2 (l2) or
// argmax_k cos(x, e_k) (cosine). Ties go to the lowest k. A row whose scores
// are all NaN (a NaN in x) gets index 0; NaN codes are never chosen over a
// finite one.
mmu_status mmu_nearest_code(mmu_tensor **out, mmu_tensor *x, mmu_tensor *codebook, int cosine) {
    const char *op = "nearest_code";
    mmu_status st;
    *out = NULL;
    if ((st = check_2d_f32(x, op, "x")) || (st = check_2d_f32(codebook, op, "codebook"))) return st;
    int64_t N = x->shape[0], D = x->shape[1], K = codebook->shape[0];
    if (codebook->shape[1] != D)
        return mmu_fail(MMU_EVALUE, "%s: x %s and codebook %s must have the same last dim", op, mmu_shape_str(x),
                        mmu_dims_str(2, codebook->shape));
    if (K < 1) return mmu_fail(MMU_EVALUE, "%s: codebook must have at least one code, got %s", op, mmu_shape_str(codebook));
    if (D < 1) return mmu_fail(MMU_EVALUE, "%s: feature dim must be >= 1, got x %s", op, mmu_shape_str(x));
    if ((st = mmu_tensor_empty(out, MMU_INT64, 1, (int64_t[]){N}))) return st;
    if (N == 0) return MMU_OK;

    const float *px = mmu_f32(x), *pe = mmu_f32(codebook);
    int64_t *idx = mmu_i64(*out);
    int64_t bm = N < VQ_BM ? N : VQ_BM, bk = K < VQ_BK ? K : VQ_BK;
    size_t xbytes = cosine ? (size_t)(N * D) * sizeof(float) : 0, ebytes = cosine ? (size_t)(K * D) * sizeof(float) : 0;
    size_t nbytes = (size_t)K * sizeof(float), tbytes = (size_t)(bm * bk) * sizeof(float),
           bbytes = (size_t)bm * sizeof(float);
    float *xn = cosine ? mmu_alloc(xbytes) : NULL, *en = cosine ? mmu_alloc(ebytes) : NULL;
    float *enorm = mmu_alloc(nbytes), *tile = mmu_alloc(tbytes), *best = mmu_alloc(bbytes);
    if ((cosine && (!xn || !en)) || !enorm || !tile || !best) {
        st = mmu_fail(MMU_ENOMEM, "%s: out of memory for the search buffers", op);
        goto done;
    }
    if (cosine) {
        normalize_rows(xn, px, N, D);
        normalize_rows(en, pe, K, D);
        px = xn;
        pe = en;
    }
    /* cosine: maximise x.e == minimise 0 - 2 x.e; l2: minimise ||e||^2 - 2 x.e */
#pragma omp parallel for schedule(static) if (K * D > MMU_PAR_GRAIN)
    for (int64_t k = 0; k < K; k++) {
        float s = 0.0f;
        if (!cosine)
            for (int64_t d = 0; d < D; d++) s += pe[k * D + d] * pe[k * D + d];
        enorm[k] = s;
    }
    for (int64_t i0 = 0; i0 < N; i0 += bm) {
        int64_t m = N - i0 < bm ? N - i0 : bm;
        for (int64_t i = 0; i < m; i++) {
            best[i] = INFINITY;
            idx[i0 + i] = 0;
        }
        for (int64_t k0 = 0; k0 < K; k0 += bk) {
            int64_t n = K - k0 < bk ? K - k0 : bk;
            mmu_md ma, mb, mc;
            mmu_md_contig(&ma, 2, (int64_t[]){m, D});
            mmu_md_contig(&mc, 2, (int64_t[]){m, n});
            /* codebook rows k0..k0+n read as a (D, n) matrix: element (d, k) at k*D + d */
            mb.ndim = 2;
            mb.dims[0] = D;
            mb.dims[1] = n;
            mb.strides[0] = 1;
            mb.strides[1] = D;
            if ((st = mmu_dnnl_matmul(&ma, px + i0 * D, &mb, pe + k0 * D, NULL, NULL, &mc, tile))) goto done;
#pragma omp parallel for schedule(static) if (m * n > MMU_PAR_GRAIN)
            for (int64_t i = 0; i < m; i++) {
                /* two vectorisable passes instead of one branchy scan: the block
                 * minimum (scores written back into the tile), then its first
                 * position. -2 t is exact, so the score is the same with or
                 * without FMA contraction. */
                float *t = tile + i * n;
                const float *en2 = enorm + k0;
                float b = INFINITY;
#pragma omp simd reduction(min : b)
                for (int64_t k = 0; k < n; k++) {
                    float s = en2[k] - 2.0f * t[k];
                    t[k] = s;
                    b = s < b ? s : b; /* NaN never wins */
                }
                if (b < best[i]) {
                    int64_t k = 0;
                    while (t[k] != b) k++;
                    best[i] = b;
                    idx[i0 + i] = k0 + k;
                }
            }
        }
    }
done:
    if (xn) mmu_free(xn, xbytes);
    if (en) mmu_free(en, ebytes);
    if (enorm) mmu_free(enorm, nbytes);
    if (tile) mmu_free(tile, tbytes);
    if (best) mmu_free(best, bbytes);
    if (st) MMU_CLEAR(*out);
    return st;
}

// x (N, D), idx (N,) int64 in [0, K), cluster_size (C, K), embed_avg (C, K, D),
// embed (C, K, D): codebook c of the three updated in place (buffers, no autograd):
//   cluster_size = decay * cluster_size + (1 - decay) * count_k
//   embed_avg    = decay * embed_avg    + (1 - decay) * sum_{i: idx_i = k} x_i
//   embed        = embed_avg / ((cluster_size + eps) / (n + K eps) * n), n = sum cluster_size
// (vector-quantize-pytorch's EMA with Laplace smoothing).
mmu_status mmu_vq_ema_update(mmu_tensor *x, mmu_tensor *idx, mmu_tensor *cluster_size, mmu_tensor *embed_avg,
                             mmu_tensor *embed, int64_t c, double decay, double eps) {
    const char *op = "vq_ema_update";
    mmu_status st;
    if ((st = check_2d_f32(x, op, "x")) || (st = mmu_check_dtype(embed_avg, MMU_FLOAT32, op, "embed_avg")) ||
        (st = mmu_check_dtype(embed, MMU_FLOAT32, op, "embed")) || (st = mmu_check_dtype(idx, MMU_INT64, op, "indices")) ||
        (st = mmu_check_dtype(cluster_size, MMU_FLOAT32, op, "cluster_size")))
        return st;
    if (embed->ndim != 3 || cluster_size->ndim != 2)
        return mmu_fail(MMU_EVALUE, "%s: embed must be (C, K, D) and cluster_size (C, K), got %s and %s", op,
                        mmu_shape_str(embed), mmu_dims_str(cluster_size->ndim, cluster_size->shape));
    int64_t N = x->shape[0], D = x->shape[1], C = embed->shape[0], K = embed->shape[1];
    if (idx->ndim != 1 || idx->shape[0] != N)
        return mmu_fail(MMU_EVALUE, "%s: indices %s must be (N,) for x %s", op, mmu_shape_str(idx),
                        mmu_dims_str(2, x->shape));
    if (embed->shape[2] != D || !mmu_same_shape(embed, embed_avg) || cluster_size->shape[0] != C ||
        cluster_size->shape[1] != K)
        return mmu_fail(MMU_EVALUE, "%s: embed %s, embed_avg %s, cluster_size %s do not match x %s", op,
                        mmu_shape_str(embed), mmu_dims_str(embed_avg->ndim, embed_avg->shape),
                        mmu_dims_str(cluster_size->ndim, cluster_size->shape), mmu_dims_str(2, x->shape));
    if (c < 0 || c >= C) return mmu_fail(MMU_EINDEX, "%s: codebook %lld out of range for %lld codebooks", op, (long long)c, (long long)C);
    if (!(decay >= 0.0 && decay <= 1.0)) return mmu_fail(MMU_EVALUE, "%s: decay must be in [0, 1], got %g", op, decay);
    const float *px = mmu_f32(x);
    const int64_t *pi = mmu_i64(idx);
    float *cs = mmu_f32(cluster_size) + c * K, *avg = mmu_f32(embed_avg) + c * K * D, *emb = mmu_f32(embed) + c * K * D;
    for (int64_t i = 0; i < N; i++)
        if (pi[i] < 0 || pi[i] >= K)
            return mmu_fail(MMU_EINDEX, "%s: index %lld at position %lld is out of range for %lld codes", op,
                            (long long)pi[i], (long long)i, (long long)K);
    size_t cbytes = (size_t)K * sizeof(float);
    float *cnt = mmu_alloc(cbytes);
    if (!cnt) return mmu_fail(MMU_ENOMEM, "%s: out of memory", op);
    memset(cnt, 0, cbytes);
    for (int64_t i = 0; i < N; i++) cnt[pi[i]] += 1.0f;
    float dec = (float)decay, one_m = (float)(1.0 - decay);
    double total = 0.0;
    for (int64_t k = 0; k < K; k++) {
        cs[k] = dec * cs[k] + one_m * cnt[k];
        total += cs[k];
    }
    /* embed_avg *= decay first, then (1 - decay) x is added row by row: each
     * thread owns a slice of the D columns for all K codes (column split keeps
     * the sums in row order for every element). */
    int nt = 1;
#ifdef _OPENMP
    nt = (N * D > MMU_PAR_GRAIN) ? omp_get_max_threads() : 1;
#endif
    if (nt > D) nt = (int)D;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int t = 0, T = 1;
#ifdef _OPENMP
        t = omp_get_thread_num();
        T = omp_get_num_threads();
#endif
        int64_t d0 = D * t / T, d1 = D * (t + 1) / T;
        for (int64_t k = 0; k < K; k++)
            for (int64_t d = d0; d < d1; d++) avg[k * D + d] *= dec;
        for (int64_t i = 0; i < N; i++) {
            const float *xi = px + i * D;
            float *a = avg + pi[i] * D;
            for (int64_t d = d0; d < d1; d++) a[d] += one_m * xi[d];
        }
    }
    float n = (float)total, denom = (float)(total + (double)K * eps);
#pragma omp parallel for schedule(static) if (K * D > MMU_PAR_GRAIN)
    for (int64_t k = 0; k < K; k++) {
        float smoothed = (cs[k] + (float)eps) / denom * n;
        float inv = 1.0f / smoothed;
        for (int64_t d = 0; d < D; d++) emb[k * D + d] = avg[k * D + d] * inv;
    }
    mmu_free(cnt, cbytes);
    return MMU_OK;
}
