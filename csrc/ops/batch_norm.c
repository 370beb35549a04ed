/* batch_norm, forward (training and eval) and backward, as C kernels.
 *
 * x (N, C, *) is seen as (N, C, S), S the product of the spatial dims (S = 1
 * for (N, C)); channel c is N segments of S contiguous floats, M = N·S values.
 *
 * Training: per-channel batch mean and biased variance, normalise with them,
 * and update the running statistics in place (torch's rule, momentum m):
 *   running_mean = (1 - m)·running_mean + m·mean
 *   running_var  = (1 - m)·running_var  + m·var·M/(M - 1)   (unbiased)
 * Eval: normalise with the running statistics.
 *   y = (x - mean)·rstd·w + b,  rstd = 1/sqrt(var + eps)
 *
 * Statistics: per segment a shifted float sum then the squared deviations
 * from the segment mean (the segment is in L1 for the second pass), merged per
 * channel in segment order in double (Chan et al.): no cancellation for large
 * means, and the same numbers however the work is split among threads. Short
 * segments (S < SHORT_S: (N, C) or (N, C, L) with small L) are summed by
 * columns instead: a vector loop over the C·S columns of a row rather than
 * over S; rows in fixed blocks (float sums over 16 rows, then double per
 * block, the blocks added in order), the first row as the shift.
 *
 * With C >= 2 x threads, one task does a whole channel: its statistics and
 * then its normalisation while the channel is still in L2 (8 x 32 x 32 floats
 * is 32 KB), so x is read from memory once; with fewer channels the segments
 * are spread over the threads in two parallel loops.
 *
 * Backward, with mean/rstd the statistics the forward used and
 *   sg_c = Σ g,  sgx_c = Σ g·(x - mean)   (over N and S)
 *   dbias_c = sg_c,  dweight_c = rstd·sgx_c
 *   training: dx = w·rstd·(g - sg/M - (x - mean)·rstd²·sgx/M)
 *   eval:     dx = w·rstd·g
 * dx is affine in g and (x - mean) per channel, so one pass of sums and one
 * pass writing dx (the channel in L2 between them when split by channel). */
#include <math.h>
#include <string.h>

#include "moments.h"
#include "ops.h"

enum { BN_SAVED_X, BN_SAVED_W, BN_SAVED_MEAN, BN_SAVED_RSTD, BN_SAVED_MEAN_LO };

#define SHORT_S 32
#define MAX_ROW_BLOCKS 64
#define COL_CHUNK 16

/* Per-channel constants shared by the passes. */
typedef struct {
    float *mean, *mean_lo, *rstd; /* (C) each: the statistics normalised with */
    double *dmean, *dm2;          /* (C) each, training: the batch mean and m2 in double */
} bn_stats;

// one channel's statistics (training) -> mean/mean_lo/rstd, and the running stats updated
static void finish_channel(bn_stats *s, int64_t c, double mean, double m2, int64_t M, double eps, float *rm,
                           float *rv, double momentum) {
    s->dmean[c] = mean;
    s->dm2[c] = m2;
    s->mean[c] = (float)mean;
    s->mean_lo[c] = (float)(mean - (double)s->mean[c]);
    s->rstd[c] = (float)(1.0 / sqrt(m2 / (double)M + eps));
    if (rm) rm[c] = (float)((1.0 - momentum) * rm[c] + momentum * mean);
    if (rv) rv[c] = (float)((1.0 - momentum) * rv[c] + momentum * (m2 / (double)(M - 1)));
}

/* Fixed blocks of rows for the column sums: at most MAX_ROW_BLOCKS, at least COL_CHUNK rows each
 * (fewer, fuller blocks keep the partial sums small); they depend on rows alone, not on threads. */
static int64_t row_blocks(int64_t rows, int64_t *per) {
    int64_t nblk = (rows + COL_CHUNK - 1) / COL_CHUNK;
    if (nblk > MAX_ROW_BLOCKS) nblk = MAX_ROW_BLOCKS;
    if (nblk < 1) nblk = 1;
    *per = (rows + nblk - 1) / nblk;
    return (rows + *per - 1) / *per;
}

// part (nblk rows of K doubles) -> dst (K) = Σ over blocks in order
static void add_blocks(double *restrict dst, const double *restrict part, int64_t nblk, int64_t K) {
#pragma omp parallel for schedule(static) if (nblk * K > MMU_PAR_GRAIN)
    for (int64_t k = 0; k < K; k++) {
        double a = 0;
        for (int64_t b = 0; b < nblk; b++) a += part[b * K + k];
        dst[k] = a;
    }
}

/* Column sums over a block of rows [r0, r1) of K columns (the short-segment layout), for:
 *   COL_SHIFTED: a += x - ref            (ref: the first row: a shifted sum, no digits lost to |mean|)
 *   COL_SQDEV:   a += (x - ref)²         (ref: the per-column float mean)
 *   COL_GRAD:    a += g, b += g·(x - ref)
 * Rows are added in float over chunks of COL_CHUNK rows (vector loops over K), each chunk then into
 * the double sums a, b (K each): float rounding stays at a few ulps of 16 terms. fa, fb: K floats. */
enum { COL_SHIFTED, COL_SQDEV, COL_GRAD };

#define COL_TILE 2048

// rows [r0, r1) (`ld` floats apart) of the K columns starting at x, g, ref, a, b, fa, fb
static void col_block(double *restrict a, double *restrict b, float *restrict fa, float *restrict fb,
                      const float *restrict x, const float *restrict g, const float *restrict ref, int64_t r0,
                      int64_t r1, int64_t K, int64_t ld, int mode) {
    memset(a, 0, K * sizeof(double));
    if (b) memset(b, 0, K * sizeof(double));
    for (int64_t r = r0; r < r1; r += COL_CHUNK) {
        int64_t re = r + COL_CHUNK < r1 ? r + COL_CHUNK : r1;
        memset(fa, 0, K * sizeof(float));
        if (fb) memset(fb, 0, K * sizeof(float));
        for (int64_t q = r; q < re; q++) {
            const float *xr = x + q * ld;
            if (mode == COL_SHIFTED) {
#pragma omp simd
                for (int64_t k = 0; k < K; k++) fa[k] += xr[k] - ref[k];
            } else if (mode == COL_SQDEV) {
#pragma omp simd
                for (int64_t k = 0; k < K; k++) {
                    float d = xr[k] - ref[k];
                    fa[k] += d * d;
                }
            } else {
                const float *gr = g + q * ld;
#pragma omp simd
                for (int64_t k = 0; k < K; k++) {
                    fa[k] += gr[k];
                    fb[k] += gr[k] * (xr[k] - ref[k]);
                }
            }
        }
#pragma omp simd
        for (int64_t k = 0; k < K; k++) a[k] += fa[k];
        if (b)
#pragma omp simd
            for (int64_t k = 0; k < K; k++) b[k] += fb[k];
    }
}

static mmu_status check_vec(mmu_tensor *p, const char *arg, mmu_tensor *x, int64_t C) {
    mmu_status st = mmu_check_dtype(p, MMU_FLOAT32, "batch_norm", arg);
    if (st) return st;
    if (p->ndim != 1 || p->shape[0] != C)
        return mmu_fail(MMU_EVALUE, "batch_norm: %s must have shape (%lld,) for an input of shape %s, got %s", arg,
                        (long long)C, mmu_shape_str(x), mmu_shape_str(p));
    return MMU_OK;
}

/* ---------------------------------------------------------------- forward */
// x (N, C, *), running_mean/var (C) or NULL (updated in place when training), weight/bias (C) or NULL
// -> out (x's shape). momentum: the running-stat factor (the caller turns momentum=None into 1/num_batches)
mmu_status mmu_batch_norm(mmu_tensor **out, mmu_tensor *x, mmu_tensor *running_mean, mmu_tensor *running_var,
                          mmu_tensor *weight, mmu_tensor *bias, int training, double momentum, double eps) {
    mmu_status st = mmu_check_dtype(x, MMU_FLOAT32, "batch_norm", "input");
    if (st) return st;
    if (x->ndim < 2)
        return mmu_fail(MMU_EVALUE, "batch_norm: expected an input with at least 2 dims (N, C, *), got %s",
                        mmu_shape_str(x));
    int64_t N = x->shape[0], C = x->shape[1], S = 1;
    for (int d = 2; d < x->ndim; d++) S *= x->shape[d];
    int64_t M = N * S;
    if ((running_mean == NULL) != (running_var == NULL))
        return mmu_fail(MMU_EVALUE, "batch_norm: running_mean and running_var must both be given or both be None "
                        "(input %s)", mmu_shape_str(x));
    if (!training && !running_mean)
        return mmu_fail(MMU_EVALUE, "batch_norm: running_mean and running_var must be given in evaluation mode "
                        "(training=False), input %s", mmu_shape_str(x));
    if (running_mean && ((st = check_vec(running_mean, "running_mean", x, C)) ||
                         (st = check_vec(running_var, "running_var", x, C))))
        return st;
    if (weight && (st = check_vec(weight, "weight", x, C))) return st;
    if (bias && (st = check_vec(bias, "bias", x, C))) return st;
    if (training && M == 1)
        return mmu_fail(MMU_EVALUE, "batch_norm: expected more than 1 value per channel when training, got input %s",
                        mmu_shape_str(x));
    if (!(eps >= 0))
        return mmu_fail(MMU_EVALUE, "batch_norm: eps must be >= 0, got %g (input %s)", eps, mmu_shape_str(x));
    if (running_mean && C > 0 && mmu_f32(running_mean) < mmu_f32(running_var) + C &&
        mmu_f32(running_var) < mmu_f32(running_mean) + C)
        return mmu_fail(MMU_EVALUE, "batch_norm: running_mean and running_var must not share memory (input %s)",
                        mmu_shape_str(x));

    mmu_tensor *tmean = NULL, *tlo = NULL, *trstd = NULL;
    double *dbuf = NULL;
    size_t dbytes = 0;
    if ((st = mmu_tensor_empty(out, MMU_FLOAT32, x->ndim, x->shape)) ||
        (st = mmu_tensor_empty(&tmean, MMU_FLOAT32, 1, &C)) || (st = mmu_tensor_empty(&tlo, MMU_FLOAT32, 1, &C)) ||
        (st = mmu_tensor_empty(&trstd, MMU_FLOAT32, 1, &C)))
        goto done;
    bn_stats s = {mmu_f32(tmean), mmu_f32(tlo), mmu_f32(trstd), NULL, NULL};
    const float *px = mmu_f32(x), *pw = weight ? mmu_f32(weight) : NULL, *pb = bias ? mmu_f32(bias) : NULL;
    float *py = mmu_f32(*out);
    float *rm = running_mean ? mmu_f32(running_mean) : NULL, *rv = running_var ? mmu_f32(running_var) : NULL;
    int64_t K = C * S;
    if (x->numel == 0) goto record;

    if (!training) {
        for (int64_t c = 0; c < C; c++) {
            s.mean[c] = rm[c];
            s.mean_lo[c] = 0.0f;
            s.rstd[c] = (float)(1.0 / sqrt((double)rv[c] + eps));
        }
    } else {
        /* per-segment / per-column moments (2·N·C or 2·K doubles) + the channel results (2·C) */
        int64_t per = 1, nblk = 1;
        int shortS = S < SHORT_S;
        if (shortS) nblk = row_blocks(N, &per);
        /* short: nblk + 1 rows of K doubles, nblk + 1 rows of K floats; else 2·N·C doubles */
        dbytes = (size_t)(shortS ? (nblk + 1) * K * (sizeof(double) + sizeof(float)) : 2 * N * C * sizeof(double)) +
                 2 * (size_t)C * sizeof(double);
        if (!(dbuf = mmu_alloc(dbytes))) {
            st = mmu_fail(MMU_ENOMEM, "batch_norm: out of memory (input %s)", mmu_shape_str(x));
            goto done;
        }
        s.dmean = dbuf;
        s.dm2 = dbuf + C;
        double *work = dbuf + 2 * C;
        double rmom = momentum;
        if (shortS) {
            /* columns k = c·S + s: Σ(x - x[0]) per block of rows, then Σ(x - mean_c)² the same way; the
             * blocks added in order (the sums do not depend on the thread count) */
            double *part = work, *col = work + nblk * K;
            float *fs = (float *)(col + K), *cm = fs + nblk * K;
            for (int pass = 0; pass < 2; pass++) {
                /* tasks: (block of rows, tile of columns), so that few rows still give parallel work */
                int64_t nt = (K + COL_TILE - 1) / COL_TILE;
#pragma omp parallel for schedule(static) if (N * K > MMU_PAR_GRAIN)
                for (int64_t bt = 0; bt < nblk * nt; bt++) {
                    int64_t b = bt / nt, k0 = (bt % nt) * COL_TILE, kn = K - k0 < COL_TILE ? K - k0 : COL_TILE;
                    int64_t r1 = (b + 1) * per < N ? (b + 1) * per : N;
                    col_block(part + b * K + k0, NULL, fs + b * K + k0, NULL, px + k0, NULL, (pass == 0 ? px : cm) + k0,
                              b * per, r1, kn, K, pass == 0 ? COL_SHIFTED : COL_SQDEV);
                }
                add_blocks(col, part, nblk, K);
                for (int64_t c = 0; c < C; c++) {
                    double a = 0;
                    if (pass == 0) {
                        for (int64_t j = 0; j < S; j++) a += (double)px[c * S + j] + col[c * S + j] / (double)N;
                        s.dmean[c] = a / (double)S;
                        for (int64_t j = 0; j < S; j++) cm[c * S + j] = (float)s.dmean[c];
                    } else {
                        for (int64_t j = 0; j < S; j++) a += col[c * S + j];
                        double dm = s.dmean[c] - (double)(float)s.dmean[c]; /* deviations from the float mean */
                        a -= (double)M * dm * dm;
                        finish_channel(&s, c, s.dmean[c], a > 0 ? a : 0, M, eps, rm, rv, rmom);
                    }
                }
            }
        } else if (C >= 2 * mmu_get_num_threads()) {
            /* a channel per task: statistics, then the normalisation while it is in L2 */
            double *smean = work, *sm2 = work + N * C;
#pragma omp parallel for schedule(static) if (x->numel > MMU_PAR_GRAIN)
            for (int64_t c = 0; c < C; c++) {
                for (int64_t n = 0; n < N; n++) seg_moments(px + (n * C + c) * S, S, smean + n * C + c, sm2 + n * C + c);
                double mean, m2;
                moments_merge(smean + c, sm2 + c, N, C, S, &mean, &m2);
                finish_channel(&s, c, mean, m2, M, eps, rm, rv, rmom);
                float a = s.rstd[c] * (pw ? pw[c] : 1.0f), b = pb ? pb[c] : 0.0f;
                for (int64_t n = 0; n < N; n++)
                    scale_shift(py + (n * C + c) * S, px + (n * C + c) * S, s.mean[c], s.mean_lo[c], a, b, S);
            }
            goto record;
        } else {
            double *smean = work, *sm2 = work + N * C;
#pragma omp parallel for schedule(static) if (x->numel > MMU_PAR_GRAIN)
            for (int64_t nc = 0; nc < N * C; nc++) seg_moments(px + nc * S, S, smean + nc, sm2 + nc);
            for (int64_t c = 0; c < C; c++) {
                double mean, m2;
                moments_merge(smean + c, sm2 + c, N, C, S, &mean, &m2);
                finish_channel(&s, c, mean, m2, M, eps, rm, rv, rmom);
            }
        }
    }

    /* normalise + affine with the per-channel constants */
    if (S < SHORT_S) {
        /* per-column constants (4·K floats, K = C·S short rows): the row loop vectorises over K */
        size_t cb = 4 * (size_t)K * sizeof(float);
        float *cc = K ? mmu_alloc(cb) : NULL;
        if (K && !cc) {
            st = mmu_fail(MMU_ENOMEM, "batch_norm: out of memory (input %s)", mmu_shape_str(x));
            goto done;
        }
        float *cm = cc, *cl = cc + K, *ca = cc + 2 * K, *cbias = cc + 3 * K;
        for (int64_t c = 0; c < C; c++)
            for (int64_t j = 0; j < S; j++) {
                cm[c * S + j] = s.mean[c];
                cl[c * S + j] = s.mean_lo[c];
                ca[c * S + j] = s.rstd[c] * (pw ? pw[c] : 1.0f);
                cbias[c * S + j] = pb ? pb[c] : 0.0f;
            }
#pragma omp parallel for schedule(static) if (x->numel > MMU_PAR_GRAIN)
        for (int64_t r = 0; r < N; r++) {
            const float *xr = px + r * K;
            float *yr = py + r * K;
#pragma omp simd
            for (int64_t k = 0; k < K; k++) yr[k] = ((xr[k] - cm[k]) - cl[k]) * ca[k] + cbias[k];
        }
        if (cc) mmu_free(cc, cb);
    } else {
#pragma omp parallel for schedule(static) if (x->numel > MMU_PAR_GRAIN)
        for (int64_t nc = 0; nc < N * C; nc++) {
            int64_t c = nc % C;
            scale_shift(py + nc * S, px + nc * S, s.mean[c], s.mean_lo[c], s.rstd[c] * (pw ? pw[c] : 1.0f),
                        pb ? pb[c] : 0.0f, S);
        }
    }

record:;
    if (training && running_mean && x->numel) { /* the running statistics were written in place */
        mmu_bump_version(running_mean);
        mmu_bump_version(running_var);
    }
    mmu_node *n = NULL;
    if ((st = mmu_record(&n, *out, MMU_OP_BATCH_NORM, 3, (mmu_tensor *[]){x, weight, bias}))) goto done;
    if (n) {
        n->ctx.i[0] = N;
        n->ctx.i[1] = C;
        n->ctx.i[2] = S;
        n->ctx.i[3] = training;
        n->ctx.f[0] = eps; /* for double backward (mmu/_double_backward.py) */
        mmu_save(n, BN_SAVED_X, x);
        if (weight) mmu_save(n, BN_SAVED_W, weight);
        mmu_save(n, BN_SAVED_MEAN, tmean);
        mmu_save(n, BN_SAVED_RSTD, trstd);
        mmu_save(n, BN_SAVED_MEAN_LO, tlo);
    }
done:
    if (dbuf) mmu_free(dbuf, dbytes);
    if (st) MMU_CLEAR(*out);
    mmu_tensor_decref(tmean);
    mmu_tensor_decref(tlo);
    mmu_tensor_decref(trstd);
    return st;
}

/* --------------------------------------------------------------- backward */
/* dx = a·g + b·((x - m) - m_lo) + c per channel */
typedef struct { float a, b, c; } bn_coef;

// the channel's sums -> dx coefficients; dweight/dbias
static bn_coef channel_coef(double sg, double sgx, float mlo, float rstd, float w, int64_t M, int training,
                            float *dw, float *db) {
    double r = rstd;
    sgx -= (double)mlo * sg; /* the sums were centred at the float mean */
    if (dw) *dw = (float)(r * sgx);
    if (db) *db = (float)sg;
    bn_coef k = {(float)(w * r), 0.0f, 0.0f};
    if (training) {
        k.b = (float)(-w * r * r * r * sgx / (double)M);
        k.c = (float)(-w * r * sg / (double)M);
    }
    return k;
}

static void seg_dx(float *restrict dx, const float *restrict g, const float *restrict x, float m, float mlo,
                   bn_coef k, int64_t S) {
    if (k.b == 0.0f && k.c == 0.0f) {
#pragma omp simd
        for (int64_t i = 0; i < S; i++) dx[i] = k.a * g[i];
    } else {
#pragma omp simd
        for (int64_t i = 0; i < S; i++) dx[i] = k.a * g[i] + k.b * ((x[i] - m) - mlo) + k.c;
    }
}

// g (N, C, *) -> dx (x's shape), dweight (C), dbias (C)
mmu_status mmu_batch_norm_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    int64_t N = n->ctx.i[0], C = n->ctx.i[1], S = n->ctx.i[2], M = N * S, K = C * S;
    int training = (int)n->ctx.i[3];
    int want_x = n->inputs[0].needs_grad, want_w = n->inputs[1].needs_grad, want_b = n->inputs[2].needs_grad;
    mmu_status st = MMU_OK;
    if (want_x) st = mmu_tensor_empty(&gin[0], MMU_FLOAT32, n->inputs[0].ndim, n->inputs[0].shape);
    if (!st && want_w) st = mmu_tensor_zeros(&gin[1], MMU_FLOAT32, n->inputs[1].ndim, n->inputs[1].shape);
    if (!st && want_b) st = mmu_tensor_zeros(&gin[2], MMU_FLOAT32, n->inputs[2].ndim, n->inputs[2].shape);
    if (st || M * C == 0) return st;

    const float *px = mmu_f32(n->saved[BN_SAVED_X]), *pg = mmu_f32(g);
    const float *pw = n->saved[BN_SAVED_W] ? mmu_f32(n->saved[BN_SAVED_W]) : NULL;
    const float *pm = mmu_f32(n->saved[BN_SAVED_MEAN]), *pr = mmu_f32(n->saved[BN_SAVED_RSTD]);
    const float *pl = mmu_f32(n->saved[BN_SAVED_MEAN_LO]);
    float *pdx = want_x ? mmu_f32(gin[0]) : NULL, *dw = want_w ? mmu_f32(gin[1]) : NULL;
    float *db = want_b ? mmu_f32(gin[2]) : NULL;
    int need_sums = training || dw || db;
    int shortS = S < SHORT_S;
    int64_t per = 1, nblk = 1;
    if (shortS) nblk = row_blocks(N, &per);
    size_t cbytes = (size_t)C * sizeof(bn_coef);
    size_t wbytes = shortS ? (size_t)(nblk + 1) * 2 * K * sizeof(double) + ((size_t)nblk * 2 + 1) * K * sizeof(float)
                          : (size_t)2 * N * C * sizeof(double);
    double *work = mmu_alloc(wbytes);
    bn_coef *coef = mmu_alloc(cbytes);
    if (!work || !coef) {
        if (work) mmu_free(work, wbytes);
        if (coef) mmu_free(coef, cbytes);
        return mmu_fail(MMU_ENOMEM, "batch_norm backward: out of memory");
    }

    if (!need_sums) { /* eval, only dx: dx = w·rstd·g */
        for (int64_t c = 0; c < C; c++) coef[c] = (bn_coef){pr[c] * (pw ? pw[c] : 1.0f), 0.0f, 0.0f};
    } else if (shortS) {
        /* columns k = c·S + s: Σg and Σg·(x - mean_c) per block of rows, added in block order */
        double *part = work, *col = work + nblk * 2 * K;
        float *fs = (float *)(col + 2 * K), *cm = fs + nblk * 2 * K;
        for (int64_t c = 0; c < C; c++)
            for (int64_t j = 0; j < S; j++) cm[c * S + j] = pm[c];
        int64_t nt = (K + COL_TILE - 1) / COL_TILE;
#pragma omp parallel for schedule(static) if (N * K > MMU_PAR_GRAIN)
        for (int64_t bt = 0; bt < nblk * nt; bt++) {
            int64_t b = bt / nt, k0 = (bt % nt) * COL_TILE, kn = K - k0 < COL_TILE ? K - k0 : COL_TILE;
            int64_t r1 = (b + 1) * per < N ? (b + 1) * per : N;
            double *pa = part + b * 2 * K + k0;
            float *fa = fs + b * 2 * K + k0;
            col_block(pa, pa + K, fa, fa + K, px + k0, pg + k0, cm + k0, b * per, r1, kn, K, COL_GRAD);
        }
        add_blocks(col, part, nblk, 2 * K);
        for (int64_t c = 0; c < C; c++) {
            double sg = 0, sgx = 0;
            for (int64_t j = 0; j < S; j++) sg += col[c * S + j], sgx += col[K + c * S + j];
            coef[c] = channel_coef(sg, sgx, pl[c], pr[c], pw ? pw[c] : 1.0f, M, training, dw ? dw + c : NULL,
                                   db ? db + c : NULL);
        }
    } else if (C >= 2 * mmu_get_num_threads()) {
        /* a channel per task: its sums, then dx while its x and g are in L2 */
        double *sg = work, *sgx = work + N * C;
#pragma omp parallel for schedule(static) if (M * C > MMU_PAR_GRAIN)
        for (int64_t c = 0; c < C; c++) {
            double a = 0, b = 0;
            for (int64_t i = 0; i < N; i++) {
                int64_t nc = i * C + c;
                seg_grad_sums(pg + nc * S, px + nc * S, pm[c], S, sg + nc, sgx + nc);
                a += sg[nc];
                b += sgx[nc];
            }
            coef[c] = channel_coef(a, b, pl[c], pr[c], pw ? pw[c] : 1.0f, M, training, dw ? dw + c : NULL,
                                   db ? db + c : NULL);
            if (pdx)
                for (int64_t i = 0; i < N; i++)
                    seg_dx(pdx + (i * C + c) * S, pg + (i * C + c) * S, px + (i * C + c) * S, pm[c], pl[c], coef[c],
                           S);
        }
        goto out;
    } else {
        double *sg = work, *sgx = work + N * C;
#pragma omp parallel for schedule(static) if (M * C > MMU_PAR_GRAIN)
        for (int64_t nc = 0; nc < N * C; nc++) seg_grad_sums(pg + nc * S, px + nc * S, pm[nc % C], S, sg + nc, sgx + nc);
        for (int64_t c = 0; c < C; c++) {
            double a = 0, b = 0;
            for (int64_t i = 0; i < N; i++) a += sg[i * C + c], b += sgx[i * C + c];
            coef[c] = channel_coef(a, b, pl[c], pr[c], pw ? pw[c] : 1.0f, M, training, dw ? dw + c : NULL,
                                   db ? db + c : NULL);
        }
    }

    if (pdx) {
        size_t eb = 5 * (size_t)K * sizeof(float);
        float *ex = shortS ? mmu_alloc(eb) : NULL;
        if (ex) {
            /* per-column coefficients: the row loop vectorises over the K = C·S columns */
            float *ea = ex, *ebb = ex + K, *ec = ex + 2 * K, *em = ex + 3 * K, *el = ex + 4 * K;
            for (int64_t c = 0; c < C; c++)
                for (int64_t j = 0; j < S; j++) {
                    int64_t k = c * S + j;
                    ea[k] = coef[c].a, ebb[k] = coef[c].b, ec[k] = coef[c].c, em[k] = pm[c], el[k] = pl[c];
                }
#pragma omp parallel for schedule(static) if (M * C > MMU_PAR_GRAIN)
            for (int64_t r = 0; r < N; r++) {
                const float *gr = pg + r * K, *xr = px + r * K;
                float *dr = pdx + r * K;
#pragma omp simd
                for (int64_t k = 0; k < K; k++) dr[k] = ea[k] * gr[k] + ebb[k] * ((xr[k] - em[k]) - el[k]) + ec[k];
            }
            mmu_free(ex, eb);
        } else if (shortS) {
            mmu_free(work, wbytes);
            mmu_free(coef, cbytes);
            return mmu_fail(MMU_ENOMEM, "batch_norm backward: out of memory");
        } else {
#pragma omp parallel for schedule(static) if (M * C > MMU_PAR_GRAIN)
            for (int64_t nc = 0; nc < N * C; nc++) {
                int64_t c = nc % C;
                seg_dx(pdx + nc * S, pg + nc * S, px + nc * S, pm[c], pl[c], coef[c], S);
            }
        }
    }
out:
    mmu_free(work, wbytes);
    mmu_free(coef, cbytes);
    return MMU_OK;
}
