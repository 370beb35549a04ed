/* FSQ and the LFQ entropy loss (MAGVIT-v2), exact and without the 2^d codebook per sample.
 *
 * FSQ (Mentzer et al. 2023) is one fused pass: bound (tanh), round, normalise, and the code
 * index, with the straight-through backward dz = g · d(bound)/dz / (L//2).
 *
 * LFQ entropy. With codes c ∈ {±1}^d scaled by s and logits 2·τ·s·x·c (vector-quantize-pytorch:
 * -(‖x‖² − 2x·c + ‖c‖²)·τ up to per-sample constants), the softmax over the 2^d codes
 * factorises into independent bits: p(c|x) = Π_i p_i(c_i), p_i(+1) = σ(a·x_i), a = 4·τ·s.
 *  - The per-sample entropy is therefore Σ_i h(σ(a x_i)) (exact, O(d)).
 *  - The entropy of the batch mean p̄(c) = mean_n p(c|x_n) does not factorise. Split the bits
 *    into a low half (nl bits) and a high half (nh bits): p(c|x_n) = A[n, c_hi] · B[n, c_lo]
 *    with A, B the Kronecker products of the per-bit probabilities of each half (2^(d/2) each,
 *    built by doubling). Then p̄ = Aᵀ·B / N is a GEMM over the samples, streamed over chunks of
 *    rows into one (2^nh, 2^nl) accumulator: memory O(2^d + chunk·2^(d/2)), never O(N·2^d).
 *  - Gradient of H(p̄) = −Σ p̄ log p̄: with W = −log p̄ (the "+1" of d(p log p) cancels since each
 *    bit's probabilities sum to one), dH/dx_{n,i} = a·σ(1−σ)/N · (M_i⁺ − M_i⁻) where M_i^± is W
 *    contracted with every other bit's probabilities of sample n. Two GEMMs, U = A·W (each low
 *    bit still open) and V = B·Wᵀ (each high bit open), then the leave-one-out contraction of
 *    those small 2^(d/2) vectors per sample.
 * Everything is deterministic at a fixed thread count (oneDNN GEMM, static schedules, chunked
 * double reductions in a fixed order). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/vmath.h"
#include "../dnnl/mmu_dnnl.h"
#include "../ops/ops.h"

/* ------------------------------------------------------------------ FSQ */

typedef struct { float half_l, offset, shift, inv_hw, hw; int64_t basis; } fsq_lvl;

static mmu_status fsq_params(fsq_lvl *p, int d, const int64_t *levels, const char *op) {
    int64_t basis = 1;
    for (int i = 0; i < d; i++) {
        int64_t L = levels[i];
        if (L < 2 || L > 65536)
            return mmu_fail(MMU_EVALUE, "%s: every level must be in [2, 65536], got %lld", op, (long long)L);
        /* float32 like the reference: (L - 1) * (1 + 1e-3) / 2 */
        p[i].half_l = (float)(L - 1) * 1.001f / 2.0f;
        p[i].offset = (L % 2 == 0) ? 0.5f : 0.0f;
        p[i].shift = atanhf(p[i].offset / p[i].half_l);
        p[i].hw = (float)(L / 2);
        p[i].inv_hw = 1.0f / p[i].hw;
        p[i].basis = basis;
        if (basis > ((int64_t)1 << 62) / L) return mmu_fail(MMU_EVALUE, "%s: codebook size overflows int64", op);
        basis *= L;
    }
    return MMU_OK;
}

/* tanh(x) = 1 − 2/(1 + e^{2x}): vectorisable (libm's tanhf is not); ~1e-7 absolute error, which is
 * what matters here (the value is scaled by at most L/2 and rounded) */
static inline float fsq_tanh(float x) { return 1.0f - 2.0f / (1.0f + mmu_exp(2.0f * x)); }

/* The rows are processed FSQ_ROWS at a time over flat, vectorisable loops, with the per-channel
 * constants tiled to one block (channel = position % d). */
#define FSQ_ROWS 256

typedef struct { float shift[FSQ_ROWS * 64 / 8], half_l[FSQ_ROWS * 64 / 8], offset[FSQ_ROWS * 64 / 8],
                 inv_hw[FSQ_ROWS * 64 / 8]; int64_t rows; } fsq_tile;

static void fsq_tile_of(fsq_tile *t, const fsq_lvl *p, int d) {
    t->rows = (FSQ_ROWS * 64 / 8) / d; /* fits the tile for any d <= 64 */
    for (int64_t j = 0; j < t->rows * d; j++) {
        const fsq_lvl *q = &p[j % d];
        t->shift[j] = q->shift;
        t->half_l[j] = q->half_l;
        t->offset[j] = q->offset;
        t->inv_hw[j] = q->inv_hw;
    }
}

// z (M, d), levels (d) -> zhat (M, d) in [-1, 1], idx (M) int64 (or NULL)
mmu_status mmu_fsq(mmu_tensor **out, mmu_tensor **idx, mmu_tensor *z, int nlev, const int64_t *levels) {
    const char *op = "fsq";
    mmu_status st;
    *out = NULL;
    if (idx) *idx = NULL;
    if ((st = mmu_check_dtype(z, MMU_FLOAT32, op, "z"))) return st;
    if (nlev < 1 || nlev > 64) return mmu_fail(MMU_EVALUE, "%s: need 1..64 levels, got %d", op, nlev);
    if (z->ndim < 1 || z->shape[z->ndim - 1] != nlev)
        return mmu_fail(MMU_EVALUE, "%s: z %s must end in len(levels) = %d", op, mmu_shape_str(z), nlev);
    fsq_lvl p[64];
    if ((st = fsq_params(p, nlev, levels, op))) return st;
    int64_t M = z->numel / nlev;
    if ((st = mmu_tensor_empty(out, MMU_FLOAT32, z->ndim, z->shape))) return st;
    if (idx && (st = mmu_tensor_empty(idx, MMU_INT64, z->ndim - 1, z->shape))) { MMU_CLEAR(*out); return st; }
    static _Thread_local fsq_tile t;
    fsq_tile_of(&t, p, nlev);
    const float *zp = mmu_f32(z);
    float *o = mmu_f32(*out);
    int64_t *ip = idx ? mmu_i64(*idx) : NULL, R = t.rows, nb = (M + R - 1) / R;
    const fsq_tile *tp = &t;
#pragma omp parallel for schedule(static) if (z->numel > MMU_PAR_GRAIN)
    for (int64_t b = 0; b < nb; b++) {
        int64_t m0 = b * R, rows = M - m0 < R ? M - m0 : R, n = rows * nlev;
        const float *zb = zp + m0 * nlev;
        float *ob = o + m0 * nlev;
        for (int64_t j = 0; j < n; j++) {
            float v = fsq_tanh(zb[j] + tp->shift[j]) * tp->half_l[j] - tp->offset[j];
            ob[j] = nearbyintf(v) * tp->inv_hw[j]; /* round half to even, like torch.round */
        }
        if (ip)
            for (int64_t r = 0; r < rows; r++) {
                int64_t code = 0;
                for (int i = 0; i < nlev; i++)
                    code += (lrintf(ob[r * nlev + i] * p[i].hw) + (int64_t)p[i].hw) * p[i].basis;
                ip[m0 + r] = code;
            }
    }
    mmu_node *node;
    if ((st = mmu_record(&node, *out, MMU_OP_FSQ, 1, &z))) goto fail;
    if (node) {
        mmu_save(node, 0, z);
        int64_t *ex = malloc(sizeof(int64_t) * nlev);
        if (!ex) { st = mmu_fail(MMU_ENOMEM, "%s: out of memory", op); goto fail; }
        memcpy(ex, levels, sizeof(int64_t) * nlev);
        node->extra = ex;
        node->ctx.i[0] = nlev;
    }
    return MMU_OK;
fail:
    MMU_CLEAR(*out);
    if (idx) MMU_CLEAR(*idx);
    return st;
}

// straight-through round: dz = g · (1 − tanh²(z + shift)) · half_l / (L//2)
mmu_status mmu_fsq_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    mmu_tensor *z = n->saved[0];
    int nlev = (int)n->ctx.i[0];
    fsq_lvl p[64];
    mmu_status st;
    if ((st = fsq_params(p, nlev, n->extra, "fsq_backward"))) return st;
    if ((st = mmu_tensor_empty(&gin[0], MMU_FLOAT32, z->ndim, z->shape))) return st;
    static _Thread_local fsq_tile t;
    fsq_tile_of(&t, p, nlev);
    for (int64_t j = 0; j < t.rows * nlev; j++) t.half_l[j] *= t.inv_hw[j]; /* the chain factor */
    const fsq_tile *tp = &t;
    const float *zp = mmu_f32(z), *gp = mmu_f32(g);
    float *dz = mmu_f32(gin[0]);
    int64_t M = z->numel / nlev, R = t.rows, nb = (M + R - 1) / R;
#pragma omp parallel for schedule(static) if (z->numel > MMU_PAR_GRAIN)
    for (int64_t b = 0; b < nb; b++) {
        int64_t m0 = b * R, rows = M - m0 < R ? M - m0 : R, cnt = rows * nlev;
        const float *zb = zp + m0 * nlev, *gb = gp + m0 * nlev;
        float *db = dz + m0 * nlev;
        for (int64_t j = 0; j < cnt; j++) {
            float th = fsq_tanh(zb[j] + tp->shift[j]);
            db[j] = gb[j] * (1.0f - th * th) * tp->half_l[j];
        }
    }
    return MMU_OK;
}

/* ------------------------------------------------------------ LFQ entropy */

#define LFQ_MAX_BITS 24
/* floor on p̄ inside the log of the gradient weight: a code whose mean probability underflowed
 * contributes p·log p ≈ 0, and its weight times an underflowed σ(1−σ) must stay 0, not 0·inf */
#define LFQ_TINY 1e-37f

typedef struct {
    int64_t N, K, d;   /* x (N, K, d) */
    int nl, nh;        /* low / high bit counts, nl + nh = d */
    int64_t SL, SH;    /* 2^nl, 2^nh */
    int64_t chunk;     /* rows per GEMM chunk */
    float a;           /* 4·τ·s */
} lfq_geom;

static void lfq_geom_of(lfq_geom *g, const mmu_tensor *x, double a, int64_t chunk) {
    g->N = x->shape[0];
    g->K = x->shape[1];
    g->d = x->shape[2];
    g->nl = (int)(g->d / 2);
    g->nh = (int)g->d - g->nl;
    g->SL = (int64_t)1 << g->nl;
    g->SH = (int64_t)1 << g->nh;
    /* ~4 MiB of A and B per chunk */
    int64_t c = ((int64_t)1 << 20) / (g->SL + g->SH);
    if (c < 64) c = 64;
    if (chunk > 0) c = chunk;
    g->chunk = c < g->N ? c : g->N;
    g->a = (float)a;
}

static inline float sigmoidf_(float z) {
    return z >= 0 ? 1.0f / (1.0f + expf(-z)) : expf(z) / (1.0f + expf(z));
}

// probabilities p (nb) of bit = +1 -> v (2^nb): Kronecker product, bit j of the index = bit j
static inline void kron_bits(float *restrict v, const float *restrict p, int nb) {
    v[0] = 1.0f;
    int64_t len = 1;
    for (int j = 0; j < nb; j++) {
        float pp = p[j], pm = 1.0f - p[j];
        for (int64_t k = 0; k < len; k++) {
            v[k + len] = v[k] * pp;
            v[k] *= pm;
        }
        len <<= 1;
    }
}

// rows [r0, r0+S) of x (N, K, d), codebook k -> sig (S, d), A (S, SH), B (S, SL)
static void lfq_build(const lfq_geom *g, const float *x, int64_t r0, int64_t S, int64_t k, float *sig, float *A,
                      float *B) {
#pragma omp parallel for schedule(static) if (S * (g->SL + g->SH) > MMU_PAR_GRAIN)
    for (int64_t r = 0; r < S; r++) {
        const float *xr = x + ((r0 + r) * g->K + k) * g->d;
        float *s = sig + r * g->d;
        for (int64_t i = 0; i < g->d; i++) s[i] = sigmoidf_(g->a * xr[i]);
        kron_bits(B + r * g->SL, s, g->nl);
        kron_bits(A + r * g->SH, s + g->nl, g->nh);
    }
}

// a (r, c) -> t (c, r), in 32 x 32 blocks
static void transpose(float *restrict t, const float *restrict a, int64_t r, int64_t c) {
    int64_t nbr = (r + 31) / 32, nbc = (c + 31) / 32;
#pragma omp parallel for schedule(static) if (r * c > MMU_PAR_GRAIN)
    for (int64_t bb = 0; bb < nbr * nbc; bb++) {
        int64_t i0 = (bb / nbc) * 32, j0 = (bb % nbc) * 32;
        int64_t i1 = i0 + 32 < r ? i0 + 32 : r, j1 = j0 + 32 < c ? j0 + 32 : c;
        for (int64_t j = j0; j < j1; j++)
            for (int64_t i = i0; i < i1; i++) t[j * r + i] = a[i * c + j];
    }
}

static void md2(mmu_md *m, int64_t r, int64_t c, int64_t sr, int64_t sc) {
    m->ndim = 2;
    m->dims[0] = r;
    m->dims[1] = c;
    m->strides[0] = sr;
    m->strides[1] = sc;
}

// per-bit binary entropy of σ(z): log(1 + e^−|z|) + |z|·σ(−|z|)
static inline double bit_entropy(float z) {
    float az = fabsf(z), e = expf(-az);
    return (double)(log1pf(e) + az * e / (1.0f + e));
}

// x (N, K, d) -> out (2): [mean over (n, k) of H(p(·|x_nk)), mean over k of H(p̄_k)]
// w (K, 2^d) = −log max(p̄, tiny) for the backward (NULL when not needed)
static mmu_status lfq_entropy_impl(double out[2], float *w, const mmu_tensor *x, const lfq_geom *g) {
    const char *op = "lfq_entropy";
    int64_t C = g->SL * g->SH, S = g->chunk;
    size_t abytes = (size_t)S * (g->SL + 2 * g->SH + g->d) * sizeof(float), cbytes = (size_t)C * sizeof(float);
    float *buf = mmu_alloc(abytes), *acc = mmu_alloc(cbytes), *tmp = mmu_alloc(cbytes);
    mmu_status st = MMU_OK;
    if (!buf || !acc || !tmp) { st = mmu_fail(MMU_ENOMEM, "%s: out of memory", op); goto done; }
    float *A = buf, *B = A + S * g->SH, *sig = B + S * g->SL, *AT = sig + S * g->d;
    const float *xp = mmu_f32(x);
    /* per-sample entropy: sum of bit entropies, in double, fixed-order chunks */
    double hs = 0.0;
    int64_t tot = x->numel;
    enum { NCH = 64 };
    double part[NCH] = {0};
#pragma omp parallel for schedule(static) if (tot > MMU_PAR_GRAIN)
    for (int c = 0; c < NCH; c++) {
        int64_t lo = tot * c / NCH, hi = tot * (c + 1) / NCH;
        double s = 0.0;
        for (int64_t i = lo; i < hi; i++) s += bit_entropy(g->a * xp[i]);
        part[c] = s;
    }
    for (int c = 0; c < NCH; c++) hs += part[c];
    out[0] = hs / (double)(g->N * g->K);
    double hc = 0.0;
    for (int64_t k = 0; k < g->K; k++) {
        for (int64_t r0 = 0; r0 < g->N; r0 += S) {
            int64_t s = g->N - r0 < S ? g->N - r0 : S;
            lfq_build(g, xp, r0, s, k, sig, A, B);
            /* Aᵀ materialised: oneDNN's matmul with a transposed-strided A runs several times slower */
            transpose(AT, A, s, g->SH);
            mmu_md ma, mb, mc;
            md2(&ma, g->SH, s, s, 1);
            md2(&mb, s, g->SL, g->SL, 1);
            md2(&mc, g->SH, g->SL, g->SL, 1);
            if ((st = mmu_dnnl_matmul(&ma, AT, &mb, B, NULL, NULL, &mc, r0 == 0 ? acc : tmp))) goto done;
            if (r0) {
#pragma omp parallel for schedule(static) if (C > MMU_PAR_GRAIN)
                for (int64_t c = 0; c < C; c++) acc[c] += tmp[c];
            }
        }
        float invN = 1.0f / (float)g->N;
        double hp[NCH] = {0};
        float *wk = w ? w + k * C : NULL;
#pragma omp parallel for schedule(static) if (C > MMU_PAR_GRAIN)
        for (int c = 0; c < NCH; c++) {
            int64_t lo = C * c / NCH, hi = C * (c + 1) / NCH;
            double s = 0.0;
            for (int64_t i = lo; i < hi; i++) {
                float p = acc[i] * invN;
                float lp = logf(p > LFQ_TINY ? p : LFQ_TINY);
                if (p > 0.0f) s -= (double)p * (double)lp;
                if (wk) wk[i] = -lp;
            }
            hp[c] = s;
        }
        double h = 0.0;
        for (int c = 0; c < NCH; c++) h += hp[c];
        hc += h;
    }
    out[1] = hc / (double)g->K;
done:
    if (buf) mmu_free(buf, abytes);
    if (acc) mmu_free(acc, cbytes);
    if (tmp) mmu_free(tmp, cbytes);
    return st;
}

static mmu_status lfq_check(const mmu_tensor *x, double inv_temperature, double scale, const char *op) {
    mmu_status st;
    if ((st = mmu_check_dtype(x, MMU_FLOAT32, op, "x"))) return st;
    if (x->ndim != 3)
        return mmu_fail(MMU_EVALUE, "%s: x must be (N, num_codebooks, bits), got %s", op, mmu_shape_str(x));
    if (x->shape[0] < 1 || x->shape[1] < 1)
        return mmu_fail(MMU_EVALUE, "%s: x %s must have at least one sample and one codebook", op, mmu_shape_str(x));
    if (x->shape[2] < 1 || x->shape[2] > LFQ_MAX_BITS)
        return mmu_fail(MMU_EVALUE, "%s: bits per codebook must be in [1, %d], got x %s", op, LFQ_MAX_BITS,
                        mmu_shape_str(x));
    if (!(inv_temperature > 0.0) || !isfinite(inv_temperature))
        return mmu_fail(MMU_EVALUE, "%s: inv_temperature must be positive and finite, got %g", op, inv_temperature);
    if (!(scale > 0.0) || !isfinite(scale))
        return mmu_fail(MMU_EVALUE, "%s: codebook_scale must be positive and finite, got %g", op, scale);
    return MMU_OK;
}

// x (N, K, d) -> out (2): [per-sample entropy, codebook entropy] of softmax(2·τ·s·x·c) over c ∈ {±1}^d
mmu_status mmu_lfq_entropy(mmu_tensor **out, mmu_tensor *x, double inv_temperature, double codebook_scale,
                           int64_t chunk) {
    const char *op = "lfq_entropy";
    mmu_status st;
    *out = NULL;
    if ((st = lfq_check(x, inv_temperature, codebook_scale, op))) return st;
    lfq_geom g;
    if (chunk < 0) return mmu_fail(MMU_EVALUE, "%s: chunk must be >= 0 (0: automatic), got %lld", op, (long long)chunk);
    lfq_geom_of(&g, x, 4.0 * inv_temperature * codebook_scale, chunk);
    int need = mmu_grad_enabled() && (x->requires_grad || x->grad_fn);
    mmu_tensor *w = NULL;
    int64_t C = g.SL * g.SH;
    if (need && (st = mmu_tensor_empty(&w, MMU_FLOAT32, 2, (int64_t[]){g.K, C}))) return st;
    double h[2];
    if ((st = lfq_entropy_impl(h, w ? mmu_f32(w) : NULL, x, &g))) goto fail;
    if ((st = mmu_tensor_empty(out, MMU_FLOAT32, 1, (int64_t[]){2}))) goto fail;
    mmu_f32(*out)[0] = (float)h[0];
    mmu_f32(*out)[1] = (float)h[1];
    mmu_node *node;
    if ((st = mmu_record(&node, *out, MMU_OP_LFQ_ENTROPY, 1, &x))) goto fail;
    if (node) {
        mmu_save(node, 0, x);
        mmu_save(node, 1, w);
        node->ctx.f[0] = inv_temperature;
        node->ctx.f[1] = codebook_scale;
        node->ctx.i[0] = chunk;
    }
    mmu_tensor_decref(w);
    return MMU_OK;
fail:
    mmu_tensor_decref(w);
    MMU_CLEAR(*out);
    return st;
}

// u (2^nb), bit probabilities p (nb) -> mdiff (nb): for each bit j, u contracted with every other
// bit's probabilities, at bit j = +1 minus at bit j = −1. A forward-backward over the doubling tree,
// O(2^nb) instead of O(nb·2^nb): q holds Q_j = ⊗_{i<j} p_i for every j (bottom-up, 2^nb − 1 floats),
// t the contraction of u over the bits above j (top-down, 2^nb floats), whose two halves are then
// the bit-j = ∓ slices to dot with Q_j.
static void leave_one_out(float *restrict mdiff, const float *restrict u, const float *restrict p, int nb,
                          float *restrict q, float *restrict t) {
    q[0] = 1.0f; /* Q_j lives at q + 2^j − 1 */
    for (int j = 0; j + 1 < nb; j++) {
        int64_t len = (int64_t)1 << j;
        const float *qj = q + len - 1;
        float *qn = q + 2 * len - 1, pp = p[j], pm = 1.0f - p[j];
        for (int64_t k = 0; k < len; k++) {
            qn[k] = qj[k] * pm;
            qn[k + len] = qj[k] * pp;
        }
    }
    int64_t n = (int64_t)1 << nb;
    memcpy(t, u, sizeof(float) * n);
    for (int j = nb - 1; j >= 0; j--) {
        int64_t len = (int64_t)1 << j;
        const float *qj = q + len - 1, *lo = t, *hi = t + len;
        float sp = 0.0f, sm = 0.0f, pp = p[j], pm = 1.0f - p[j];
        for (int64_t k = 0; k < len; k++) {
            sm += lo[k] * qj[k];
            sp += hi[k] * qj[k];
        }
        mdiff[j] = sp - sm;
        for (int64_t k = 0; k < len; k++) t[k] = lo[k] * pm + hi[k] * pp;
    }
}

// g (2) -> dx (N, K, d)
mmu_status mmu_lfq_entropy_backward(mmu_node *n, mmu_tensor *gout, mmu_tensor **gin) {
    const char *op = "lfq_entropy_backward";
    mmu_tensor *x = n->saved[0], *w = n->saved[1];
    lfq_geom g;
    lfq_geom_of(&g, x, 4.0 * n->ctx.f[0] * n->ctx.f[1], n->ctx.i[0]);
    float g0 = mmu_f32(gout)[0], g1 = mmu_f32(gout)[1];
    mmu_status st;
    if ((st = mmu_tensor_empty(&gin[0], MMU_FLOAT32, 3, x->shape))) return st;
    int64_t S = g.chunk, C = g.SL * g.SH, d = g.d;
    size_t bytes = (size_t)S * 2 * (g.SL + g.SH + d) * sizeof(float);
    float *buf = mmu_alloc(bytes);
    if (!buf) { MMU_CLEAR(gin[0]); return mmu_fail(MMU_ENOMEM, "%s: out of memory", op); }
    float *A = buf, *B = A + S * g.SH, *U = B + S * g.SL, *V = U + S * g.SL, *sig = V + S * g.SH;
    const float *xp = mmu_f32(x);
    float *dx = mmu_f32(gin[0]);
    float cs = g0 / (float)(g.N * g.K), cc = g1 / (float)(g.N * g.K);
    for (int64_t k = 0; k < g.K; k++) {
        const float *W = mmu_f32(w) + k * C; /* (SH, SL) */
        for (int64_t r0 = 0; r0 < g.N; r0 += S) {
            int64_t s = g.N - r0 < S ? g.N - r0 : S;
            lfq_build(&g, xp, r0, s, k, sig, A, B);
            mmu_md ma, mb, mw, mwt, mu, mv;
            if (g1 != 0.0f) {
                md2(&ma, s, g.SH, g.SH, 1);
                md2(&mw, g.SH, g.SL, g.SL, 1);
                md2(&mu, s, g.SL, g.SL, 1);
                if ((st = mmu_dnnl_matmul(&ma, A, &mw, W, NULL, NULL, &mu, U))) goto done;
                md2(&mb, s, g.SL, g.SL, 1);
                md2(&mwt, g.SL, g.SH, 1, g.SL); /* Wᵀ through strides */
                md2(&mv, s, g.SH, g.SH, 1);
                if ((st = mmu_dnnl_matmul(&mb, B, &mwt, W, NULL, NULL, &mv, V))) goto done;
            }
#pragma omp parallel for schedule(static) if (s * (g.SL + g.SH) > MMU_PAR_GRAIN)
            for (int64_t r = 0; r < s; r++) {
                float md[LFQ_MAX_BITS], q[1 << (LFQ_MAX_BITS / 2)], t[1 << (LFQ_MAX_BITS / 2)];
                const float *sr = sig + r * d, *xr = xp + ((r0 + r) * g.K + k) * d;
                float *dr = dx + ((r0 + r) * g.K + k) * d;
                if (g1 != 0.0f) {
                    leave_one_out(md, U + r * g.SL, sr, g.nl, q, t);
                    leave_one_out(md + g.nl, V + r * g.SH, sr + g.nl, g.nh, q, t);
                } else
                    for (int64_t i = 0; i < d; i++) md[i] = 0.0f;
                for (int64_t i = 0; i < d; i++) {
                    float si = sr[i], ds = g.a * si * (1.0f - si); /* dσ/dx */
                    /* dh/dx = −z·dσ/dx; dH(p̄)/dx = dσ/dx · (M⁺ − M⁻) / N */
                    dr[i] = ds * (-cs * g.a * xr[i] + cc * md[i]);
                }
            }
        }
    }
done:
    mmu_free(buf, bytes);
    if (st) MMU_CLEAR(gin[0]);
    return st;
}
