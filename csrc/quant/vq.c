/* Vector quantization kernels: the nearest-code search and the EMA codebook
 * update of VectorQuantize (mmu/quantizers/vq.py).
 *
 * nearest_code never forms the N x K distance matrix: the codebook is packed
 * once into panels of 64 codes (D, 64); each thread takes blocks of 96 rows
 * and, panel by panel, computes 6 x 64 tiles of dot products in AVX-512
 * registers, updating the running argmin of ||e||^2 - 2 x.e from the tile
 * while it is in L1. ||x||^2 is the same for every code of a row, so it never
 * enters the comparison.
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
#include "../ops/ops.h"

#define VQ_NR 64 /* codes per packed panel: 4 vectors of 16 */
#define VQ_MR 6  /* rows per register tile: 6 x 4 accumulators + 4 code vectors + 1 broadcast */
#define VQ_RB 96 /* rows per task: 16 register tiles share each panel while it sits in L2 */

#if defined(__AVX512F__)
#include <immintrin.h>
typedef __m512 vqf;
#define VQ_LOAD(p) _mm512_loadu_ps(p)
#define VQ_STORE(p, x) _mm512_storeu_ps(p, x)
#define VQ_SET1(x) _mm512_set1_ps(x)
#define VQ_ZERO() _mm512_setzero_ps()
#define VQ_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#else /* portable builds: GCC vector extensions */
typedef float vqf __attribute__((vector_size(64)));
typedef float vqfu __attribute__((vector_size(64), aligned(4), may_alias));
#define VQ_LOAD(p) ((vqf)(*(const vqfu *)(p)))
#define VQ_STORE(p, x) (*(vqfu *)(p) = (x))
#define VQ_SET1(x) ((vqf){0} + (x))
#define VQ_ZERO() ((vqf){0})
#define VQ_FMA(a, b, c) ((a) * (b) + (c))
#endif

// rows r[0..5] (each D floats), panel (D, 64) -> tile (6, 64) of dot products.
// The 24 accumulators are named so GCC keeps them in registers; every dot is
// one FMA chain over d in order, so a row's scores do not depend on which
// thread or which tile computed them.
static inline void vq_tile(const float *const *r, const float *panel, int64_t D, float *tile) {
    vqf c00 = VQ_ZERO(), c01 = VQ_ZERO(), c02 = VQ_ZERO(), c03 = VQ_ZERO();
    vqf c10 = VQ_ZERO(), c11 = VQ_ZERO(), c12 = VQ_ZERO(), c13 = VQ_ZERO();
    vqf c20 = VQ_ZERO(), c21 = VQ_ZERO(), c22 = VQ_ZERO(), c23 = VQ_ZERO();
    vqf c30 = VQ_ZERO(), c31 = VQ_ZERO(), c32 = VQ_ZERO(), c33 = VQ_ZERO();
    vqf c40 = VQ_ZERO(), c41 = VQ_ZERO(), c42 = VQ_ZERO(), c43 = VQ_ZERO();
    vqf c50 = VQ_ZERO(), c51 = VQ_ZERO(), c52 = VQ_ZERO(), c53 = VQ_ZERO();
    const float *r0 = r[0], *r1 = r[1], *r2 = r[2], *r3 = r[3], *r4 = r[4], *r5 = r[5];
    for (int64_t d = 0; d < D; d++) {
        const float *b = panel + d * VQ_NR;
        vqf b0 = VQ_LOAD(b), b1 = VQ_LOAD(b + 16), b2 = VQ_LOAD(b + 32), b3 = VQ_LOAD(b + 48), a;
#define VQ_ROW(i)                     \
    a = VQ_SET1(r##i[d]);             \
    c##i##0 = VQ_FMA(a, b0, c##i##0); \
    c##i##1 = VQ_FMA(a, b1, c##i##1); \
    c##i##2 = VQ_FMA(a, b2, c##i##2); \
    c##i##3 = VQ_FMA(a, b3, c##i##3);
        VQ_ROW(0) VQ_ROW(1) VQ_ROW(2) VQ_ROW(3) VQ_ROW(4) VQ_ROW(5)
#undef VQ_ROW
    }
#define VQ_OUT(i)                                  \
    VQ_STORE(tile + i * VQ_NR, c##i##0);           \
    VQ_STORE(tile + i * VQ_NR + 16, c##i##1);      \
    VQ_STORE(tile + i * VQ_NR + 32, c##i##2);      \
    VQ_STORE(tile + i * VQ_NR + 48, c##i##3);
    VQ_OUT(0) VQ_OUT(1) VQ_OUT(2) VQ_OUT(3) VQ_OUT(4) VQ_OUT(5)
#undef VQ_OUT
}

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
    int64_t NP = (K + VQ_NR - 1) / VQ_NR, KP = NP * VQ_NR;
    size_t xbytes = cosine ? (size_t)(N * D) * sizeof(float) : 0, ebytes = cosine ? (size_t)(K * D) * sizeof(float) : 0;
    size_t nbytes = (size_t)KP * sizeof(float), pbytes = (size_t)(KP * D) * sizeof(float);
    float *xn = cosine ? mmu_alloc(xbytes) : NULL, *en = cosine ? mmu_alloc(ebytes) : NULL;
    float *enorm = mmu_alloc(nbytes), *packed = mmu_alloc(pbytes);
    if ((cosine && (!xn || !en)) || !enorm || !packed) {
        st = mmu_fail(MMU_ENOMEM, "%s: out of memory for the search buffers", op);
        goto done;
    }
    if (cosine) {
        normalize_rows(xn, px, N, D);
        normalize_rows(en, pe, K, D);
        px = xn;
        pe = en;
    }
    /* panels (NP, D, 64): code j of panel p at [p][d][j]; padded codes are zero
     * with an infinite norm, so they never win. cosine: maximise x.e ==
     * minimise 0 - 2 x.e; l2: minimise ||e||^2 - 2 x.e */
#pragma omp parallel for schedule(static) if (KP * D > MMU_PAR_GRAIN)
    for (int64_t p = 0; p < NP; p++) {
        float *dst = packed + p * D * VQ_NR;
        for (int64_t j = 0; j < VQ_NR; j++) {
            int64_t k = p * VQ_NR + j;
            float s = 0.0f;
            if (k < K) {
                const float *e = pe + k * D;
                for (int64_t d = 0; d < D; d++) {
                    dst[d * VQ_NR + j] = e[d];
                    s += e[d] * e[d];
                }
                enorm[k] = cosine ? 0.0f : s;
            } else {
                for (int64_t d = 0; d < D; d++) dst[d * VQ_NR + j] = 0.0f;
                enorm[k] = INFINITY;
            }
        }
    }
    int64_t nblocks = (N + VQ_RB - 1) / VQ_RB;
    /* one parallel region over row blocks: no barrier inside the search, and
     * each row's result is computed by one thread in code order */
#pragma omp parallel for schedule(static) if (N * K * D > MMU_PAR_GRAIN)
    for (int64_t blk = 0; blk < nblocks; blk++) {
        int64_t i0 = blk * VQ_RB, m = N - i0 < VQ_RB ? N - i0 : VQ_RB;
        float best[VQ_RB], tile[VQ_MR * VQ_NR];
        for (int64_t i = 0; i < m; i++) {
            best[i] = INFINITY;
            idx[i0 + i] = 0;
        }
        for (int64_t p = 0; p < NP; p++) {
            const float *panel = packed + p * D * VQ_NR, *en2 = enorm + p * VQ_NR;
            for (int64_t g = 0; g < m; g += VQ_MR) {
                int64_t mr = m - g < VQ_MR ? m - g : VQ_MR;
                const float *rows[VQ_MR];
                /* a short last tile repeats its last row; the copies are ignored */
                for (int64_t r = 0; r < VQ_MR; r++) rows[r] = px + (i0 + g + (r < mr ? r : mr - 1)) * D;
                vq_tile(rows, panel, D, tile);
                for (int64_t r = 0; r < mr; r++) {
                    /* block minimum first (vectorised; scores written back into
                     * the tile), then its first position: ties go to the lowest
                     * index, NaN never wins. -2 t is exact, so FMA contraction
                     * cannot change a score. */
                    float *t = tile + r * VQ_NR, b = INFINITY;
#pragma omp simd reduction(min : b)
                    for (int64_t j = 0; j < VQ_NR; j++) {
                        float s = en2[j] - 2.0f * t[j];
                        t[j] = s;
                        b = s < b ? s : b;
                    }
                    int64_t i = g + r;
                    if (b < best[i]) {
                        int64_t j = 0;
                        while (t[j] != b) j++;
                        best[i] = b;
                        idx[i0 + i] = p * VQ_NR + j;
                    }
                }
            }
        }
    }
done:
    if (xn) mmu_free(xn, xbytes);
    if (en) mmu_free(en, ebytes);
    if (enorm) mmu_free(enorm, nbytes);
    if (packed) mmu_free(packed, pbytes);
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
    /* in-place writes (the version counter): a graph that saved the codebook sees it changed */
    mmu_bump_version(cluster_size);
    mmu_bump_version(embed_avg);
    mmu_bump_version(embed);
    return MMU_OK;
}
