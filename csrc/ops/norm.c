/* layer_norm, forward and backward, as C row kernels.
 *
 * x (..., *normalized_shape) is seen as (rows, cols), cols the product of the
 * normalised dims; every row is normalised on its own. A row (a few KB)
 * stays in L1 between the passes over it, so each kernel reads its inputs
 * from memory once and writes its output once.
 *
 * Why not oneDNN's layer normalization primitive: on this project's benchmark
 * (4096 x 768, Zen 5) oneDNN 3.2's jit:uni kernels were ~1.5x slower than
 * torch forward and backward; its backward reads src and diff_dst twice (one
 * pass for diff_scale/diff_shift, one for diff_src) where the kernel below
 * fuses both into one pass.
 *
 * The forward saves the per-row mean and 1/std; the backward uses them:
 *   xhat = (x - mean)·rstd,  dy = g·w (g if no weight)
 *   dx = rstd·(dy - mean(dy) - xhat·mean(dy·xhat))
 *   dw = Σ_rows g·xhat,  db = Σ_rows g
 * dw and db are summed per fixed block of rows, then the blocks are added in
 * order: the result does not depend on the thread count. */
#include <math.h>
#include <string.h>

#include "../core/vmath.h"
#include "moments.h"
#include "ops.h"

#define LANES 16
#define MAX_ROW_BLOCKS 64

enum { SAVED_X, SAVED_W, SAVED_MEAN, SAVED_RSTD };

/* The weight/bias gradients of layer_norm and rms_norm are sums over rows: each
 * block of rows adds into its own slab of partial sums, then the slabs are added
 * in block order. The blocks depend on rows alone (at most MAX_ROW_BLOCKS of
 * *per rows), so the sums do not depend on the thread count. rows > 0. */
static int64_t row_blocks(int64_t rows, int64_t *per) {
    int64_t nblk = rows < MAX_ROW_BLOCKS ? rows : MAX_ROW_BLOCKS;
    *per = (rows + nblk - 1) / nblk;
    return (rows + *per - 1) / *per;
}

// part (nblk slabs `ld` floats apart, cols sums each) -> dst (cols) += the slabs in block order,
// columns shared among threads
static void add_row_blocks(float *restrict dst, const float *restrict part, int64_t nblk, int64_t ld, int64_t cols) {
    enum { CB = 256 };
    int64_t ncb = (cols + CB - 1) / CB;
#pragma omp parallel for schedule(static) if (nblk * cols > MMU_PAR_GRAIN)
    for (int64_t c = 0; c < ncb; c++) {
        int64_t c0 = c * CB, len = cols - c0 < CB ? cols - c0 : CB;
        for (int64_t k = 0; k < nblk; k++) {
            const float *src = part + k * ld + c0;
            for (int64_t i = 0; i < len; i++) dst[c0 + i] += src[i];
        }
    }
}

/* ---------------------------------------------------------------- forward */
// x (n), w, b (n) or NULL -> y (n), *mean, *rstd
static void lnorm_row(float *restrict y, float *mean_out, float *rstd_out, const float *restrict x,
                      const float *restrict w, const float *restrict b, int64_t n, float eps) {
    /* the mean in double: with inputs offset far from 0 (1e4) a float sum loses
     * the digits the two-pass variance below depends on */
    double s[LANES] = {0}, sum = 0.0;
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) s[l] += x[i + l];
    for (; i < n; i++) sum += x[i];
    for (int l = 0; l < LANES; l++) sum += s[l];
    float mean = (float)(sum / (double)n);
    /* two-pass variance (the row is in L1): no cancellation for large means */
    float v[LANES] = {0}, var = 0.0f;
    for (i = 0; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) {
            float d = x[i + l] - mean;
            v[l] += d * d;
        }
    for (; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    for (int l = 0; l < LANES; l++) var += v[l];
    float rstd = 1.0f / sqrtf(var / (float)n + eps);
    if (w && b)
        for (i = 0; i < n; i++) y[i] = (x[i] - mean) * rstd * w[i] + b[i];
    else if (w)
        for (i = 0; i < n; i++) y[i] = (x[i] - mean) * rstd * w[i];
    else if (b)
        for (i = 0; i < n; i++) y[i] = (x[i] - mean) * rstd + b[i];
    else
        for (i = 0; i < n; i++) y[i] = (x[i] - mean) * rstd;
    *mean_out = mean;
    *rstd_out = rstd;
}

static mmu_status check_param(mmu_tensor *p, const char *op, const char *arg, mmu_tensor *x, int nd,
                              const int64_t *ns) {
    mmu_status st = mmu_check_dtype(p, MMU_FLOAT32, op, arg);
    if (st) return st;
    if (p->ndim != nd || memcmp(p->shape, ns, nd * sizeof(int64_t)))
        return mmu_fail(MMU_EVALUE, "%s: %s has shape %s but normalized_shape is %s (input %s)", op, arg,
                        mmu_shape_str(p), mmu_dims_str(nd, ns), mmu_shape_str(x));
    return MMU_OK;
}

/* The arguments of layer_norm and rms_norm (op): x (..., *S) float32, S =
 * normalized_shape (nd >= 1 dims), weight / bias (*S) or NULL -> rows (the
 * product of the leading dims) and cols (of S). */
static mmu_status check_norm_args(const char *op, mmu_tensor *x, int nd, const int64_t *ns, mmu_tensor *weight,
                                  mmu_tensor *bias, int64_t *rows, int64_t *cols) {
    mmu_status st = mmu_check_dtype(x, MMU_FLOAT32, op, "input");
    if (st) return st;
    if (nd < 1)
        return mmu_fail(MMU_EVALUE, "%s: normalized_shape must have at least one dim, got %s (input %s)", op,
                        mmu_dims_str(nd, ns), mmu_shape_str(x));
    int lead = x->ndim - nd;
    if (lead < 0 || memcmp(x->shape + lead, ns, nd * sizeof(int64_t)))
        return mmu_fail(MMU_EVALUE, "%s: normalized_shape %s does not match the trailing dims of the input of "
                        "shape %s", op, mmu_dims_str(nd, ns), mmu_shape_str(x));
    if (weight && (st = check_param(weight, op, "weight", x, nd, ns))) return st;
    if (bias && (st = check_param(bias, op, "bias", x, nd, ns))) return st;
    *cols = *rows = 1;
    for (int d = 0; d < nd; d++) *cols *= ns[d];
    for (int d = 0; d < lead; d++) *rows *= x->shape[d];
    return MMU_OK;
}

// x (..., *S), weight (*S) or NULL, bias (*S) or NULL -> out (x's shape)
mmu_status mmu_layer_norm(mmu_tensor **out, mmu_tensor *x, int norm_ndim, const int64_t *norm_shape,
                          mmu_tensor *weight, mmu_tensor *bias, double eps) {
    int64_t rows, cols;
    mmu_status st = check_norm_args("layer_norm", x, norm_ndim, norm_shape, weight, bias, &rows, &cols);
    if (st) return st;

    mmu_tensor *mean = NULL, *rstd = NULL;
    if ((st = mmu_tensor_empty(out, MMU_FLOAT32, x->ndim, x->shape)) ||
        (st = mmu_tensor_empty(&mean, MMU_FLOAT32, 1, &rows)) || (st = mmu_tensor_empty(&rstd, MMU_FLOAT32, 1, &rows)))
        goto done;
    if (cols > 0) {
        const float *px = mmu_f32(x), *pw = weight ? mmu_f32(weight) : NULL, *pb = bias ? mmu_f32(bias) : NULL;
        float *py = mmu_f32(*out), *pm = mmu_f32(mean), *pr = mmu_f32(rstd), e = (float)eps;
#pragma omp parallel for schedule(static) if (x->numel > MMU_PAR_GRAIN)
        for (int64_t r = 0; r < rows; r++) lnorm_row(py + r * cols, pm + r, pr + r, px + r * cols, pw, pb, cols, e);
    }
    mmu_node *n = NULL;
    if ((st = mmu_record(&n, *out, MMU_OP_LAYER_NORM, 3, (mmu_tensor *[]){x, weight, bias}))) goto done;
    if (n) {
        n->ctx.i[0] = rows;
        n->ctx.i[1] = cols;
        n->ctx.f[0] = eps; /* for double backward (mmu/_double_backward.py) */
        mmu_save(n, SAVED_X, x);
        if (weight) mmu_save(n, SAVED_W, weight);
        mmu_save(n, SAVED_MEAN, mean);
        mmu_save(n, SAVED_RSTD, rstd);
    }
done:
    if (st) MMU_CLEAR(*out);
    mmu_tensor_decref(mean);
    mmu_tensor_decref(rstd);
    return st;
}

/* --------------------------------------------------------------- backward */
/* One row: dx (if wanted), and the row's g·xhat and g added into pw and pb
 * (if wanted). x, g, w (n); w may be NULL (then dy = g). The first pass
 * reads x and g from memory and does all the sums; the second finds them in
 * L1. */
static void lnorm_row_backward(float *restrict dx, float *restrict pw, float *restrict pb, const float *restrict x,
                               const float *restrict g, const float *restrict w, float mean, float rstd,
                               int64_t n) {
    float sa[LANES] = {0}, sb[LANES] = {0}, a = 0.0f, b = 0.0f;
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) {
            float gi = g[i + l], xh = (x[i + l] - mean) * rstd, dy = w ? gi * w[i + l] : gi;
            sa[l] += dy;
            sb[l] += dy * xh;
            if (pw) pw[i + l] += gi * xh;
            if (pb) pb[i + l] += gi;
        }
    for (; i < n; i++) {
        float gi = g[i], xh = (x[i] - mean) * rstd, dy = w ? gi * w[i] : gi;
        a += dy;
        b += dy * xh;
        if (pw) pw[i] += gi * xh;
        if (pb) pb[i] += gi;
    }
    if (!dx) return;
    for (int l = 0; l < LANES; l++) a += sa[l], b += sb[l];
    a /= (float)n;
    b /= (float)n;
    if (w)
        for (i = 0; i < n; i++) dx[i] = rstd * (g[i] * w[i] - a - (x[i] - mean) * rstd * b);
    else
        for (i = 0; i < n; i++) dx[i] = rstd * (g[i] - a - (x[i] - mean) * rstd * b);
}

// g (x's shape) -> dx (x's shape), dweight (*S), dbias (*S)
mmu_status mmu_layer_norm_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    int64_t rows = n->ctx.i[0], cols = n->ctx.i[1];
    int want_x = n->inputs[0].needs_grad, want_w = n->inputs[1].needs_grad, want_b = n->inputs[2].needs_grad;
    mmu_status st = MMU_OK;
    if (want_x) st = mmu_tensor_empty(&gin[0], MMU_FLOAT32, n->inputs[0].ndim, n->inputs[0].shape);
    if (!st && want_w) st = mmu_tensor_zeros(&gin[1], MMU_FLOAT32, n->inputs[1].ndim, n->inputs[1].shape);
    if (!st && want_b) st = mmu_tensor_zeros(&gin[2], MMU_FLOAT32, n->inputs[2].ndim, n->inputs[2].shape);
    if (st || rows * cols == 0) return st;

    /* dw/db partial sums: one (2, cols) slab per block of rows */
    int64_t per, nblk = row_blocks(rows, &per);
    size_t pbytes = (want_w || want_b) ? (size_t)nblk * 2 * cols * sizeof(float) : 0;
    float *part = pbytes ? mmu_alloc(pbytes) : NULL;
    if (pbytes && !part)
        return mmu_fail(MMU_ENOMEM, "layer_norm backward: out of memory for %lld x %lld partial sums",
                        (long long)nblk, (long long)cols);
    if (part) memset(part, 0, pbytes);
    const float *px = mmu_f32(n->saved[SAVED_X]), *pg = mmu_f32(g);
    const float *pw = n->saved[SAVED_W] ? mmu_f32(n->saved[SAVED_W]) : NULL;
    const float *pm = mmu_f32(n->saved[SAVED_MEAN]), *pr = mmu_f32(n->saved[SAVED_RSTD]);
    float *pdx = want_x ? mmu_f32(gin[0]) : NULL;
#pragma omp parallel for schedule(static) if (rows * cols > MMU_PAR_GRAIN)
    for (int64_t k = 0; k < nblk; k++) {
        float *bw = want_w ? part + (k * 2) * cols : NULL, *bb = want_b ? part + (k * 2 + 1) * cols : NULL;
        int64_t r1 = (k + 1) * per < rows ? (k + 1) * per : rows;
        for (int64_t r = k * per; r < r1; r++)
            lnorm_row_backward(pdx ? pdx + r * cols : NULL, bw, bb, px + r * cols, pg + r * cols, pw, pm[r], pr[r],
                               cols);
    }
    if (part) {
        if (want_w) add_row_blocks(mmu_f32(gin[1]), part, nblk, 2 * cols, cols);
        if (want_b) add_row_blocks(mmu_f32(gin[2]), part + cols, nblk, 2 * cols, cols);
        mmu_free(part, pbytes);
    }
    return MMU_OK;
}

/* ============================================================ group_norm
 *
 * x (N, C, *) is seen as (N, C, S), S the product of the spatial dims; the G
 * groups of C/G channels are normalised on their own. The statistics are
 * built per channel (the channel's mean, then the sum of squared deviations
 * from it in a second pass that finds the channel in L1/L2) and merged per
 * group in channel order (Chan et al.) in double: no cancellation for large
 * means, and the same numbers however the work is split among threads.
 *
 * When there are enough groups to keep every thread busy, one task does a
 * whole group: statistics, then the normalisation while the group is still
 * in L2 (a VQGAN group, 4 x 64 x 64 floats, is 64 KB), so x is read from
 * memory once. Otherwise the channels are spread over the threads in two
 * parallel loops (statistics, normalisation).
 *
 * Backward, with xhat = (x - mean)·rstd, dy = g·w_c, D = S·C/G:
 *   dx = rstd·(dy - mean_D(dy) - xhat·mean_D(dy·xhat))
 * is affine in g and x per channel, dx = (rstd·w_c)·g + c2·(x - mean) + c3, and needs
 * only the per-channel sums Σg and Σg·(x - mean) (one pass); dweight_c and dbias_c are
 * the same per-channel sums added over n in order. The backward splits the work
 * as the forward: a group per task (its sums, then dx while its x and g are in
 * L2), or two parallel loops over the channels.
 *
 * group_norm_act fuses an activation into the normalise + affine pass: act 1 is
 * SiLU, y = z·sigmoid(z) with z the affine output, as every taming ResnetBlock
 * runs silu(norm(x)); torch runs it as two passes over memory forward and two
 * backward. The backward recomputes z from x and the saved statistics (z is not
 * saved), dz = g·silu'(z), silu'(z) = s·(1 + z·(1 - s)), s = sigmoid(z), and runs
 * the GroupNorm backward above on dz. dz is written into the dx buffer while the
 * channel's sums are taken (it is in L1 for them), and dx overwrites it in place
 * in the second pass: no buffer beyond the output. */

enum { GN_SAVED_X, GN_SAVED_W, GN_SAVED_MEAN, GN_SAVED_RSTD, GN_SAVED_B, GN_SAVED_MEAN_LO };

// per-channel (mean, m2) of cpg channels of S values -> the group's mean and rstd
static void merge_moments(const double *cmean, const double *cm2, int64_t cpg, int64_t S, double eps, float *mean,
                          float *mean_lo, float *rstd) {
    double m, q;
    moments_merge(cmean, cm2, cpg, 1, S, &m, &q);
    *mean = (float)m;
    *mean_lo = (float)(m - (double)*mean); /* what float32 drops of the mean, for the centring */
    *rstd = (float)(1.0 / sqrt(q / (double)(cpg * S) + eps));
}

// x (S) -> y (S) = silu(z), z = (x - m - m_lo)·a + b; mmu_exp keeps the loop vectorised, and
// z / (1 + e^-z) stays finite at both ends (e^-z is clamped below float's max, flushed to 0 above)
static void scale_shift_silu(float *restrict y, const float *restrict x, float m, float m_lo, float a, float b,
                             int64_t S) {
    for (int64_t i = 0; i < S; i++) {
        float z = ((x[i] - m) - m_lo) * a + b;
        y[i] = z / (1.0f + mmu_exp(-z));
    }
}

// one channel of the normalise + affine (+ act) pass
static inline void gn_apply(int act, float *y, const float *x, float m, float m_lo, float a, float b, int64_t S) {
    if (act == MMU_GN_ACT_SILU)
        scale_shift_silu(y, x, m, m_lo, a, b, S);
    else
        scale_shift(y, x, m, m_lo, a, b, S);
}

static mmu_status gn_check_param(const char *op, mmu_tensor *p, const char *arg, mmu_tensor *x, int64_t C) {
    mmu_status st = mmu_check_dtype(p, MMU_FLOAT32, op, arg);
    if (st) return st;
    if (p->ndim != 1 || p->shape[0] != C)
        return mmu_fail(MMU_EVALUE, "%s: %s must have shape (%lld,) for an input of shape %s, got %s", op, arg,
                        (long long)C, mmu_shape_str(x), mmu_shape_str(p));
    return MMU_OK;
}

// x (N, C, *), weight (C) or NULL, bias (C) or NULL, act (MMU_GN_ACT_*) -> out (x's shape)
mmu_status mmu_group_norm_act(mmu_tensor **out, mmu_tensor *x, int64_t groups, mmu_tensor *weight,
                              mmu_tensor *bias, double eps, int act) {
    const char *op = act == MMU_GN_ACT_SILU ? "group_norm_silu" : "group_norm";
    if (act != MMU_GN_ACT_NONE && act != MMU_GN_ACT_SILU)
        return mmu_fail(MMU_EVALUE, "group_norm: unknown activation %d (0 none, 1 silu)", act);
    mmu_status st = mmu_check_dtype(x, MMU_FLOAT32, op, "input");
    if (st) return st;
    if (x->ndim < 2)
        return mmu_fail(MMU_EVALUE, "%s: expected an input with at least 2 dims (N, C, *), got %s", op,
                        mmu_shape_str(x));
    int64_t N = x->shape[0], C = x->shape[1], S = 1;
    for (int d = 2; d < x->ndim; d++) S *= x->shape[d];
    if (groups < 1 || C % groups)
        return mmu_fail(MMU_EVALUE, "%s: num_groups (%lld) must be positive and divide the %lld channels "
                        "of the input %s", op, (long long)groups, (long long)C, mmu_shape_str(x));
    if (weight && (st = gn_check_param(op, weight, "weight", x, C))) return st;
    if (bias && (st = gn_check_param(op, bias, "bias", x, C))) return st;
    int64_t G = groups, cpg = C / G, NG = N * G;

    mmu_tensor *mean = NULL, *rstd = NULL, *mean_lo = NULL;
    double *cmom = NULL;
    size_t cbytes = 0;
    if ((st = mmu_tensor_empty(out, MMU_FLOAT32, x->ndim, x->shape)) ||
        (st = mmu_tensor_empty(&mean, MMU_FLOAT32, 1, &NG)) || (st = mmu_tensor_empty(&rstd, MMU_FLOAT32, 1, &NG)))
        goto done;
    /* with an activation the backward recomputes z exactly as here: it needs the mean's low part */
    if (act && (st = mmu_tensor_empty(&mean_lo, MMU_FLOAT32, 1, &NG))) goto done;
    if (x->numel > 0) {
        const float *px = mmu_f32(x), *pw = weight ? mmu_f32(weight) : NULL, *pb = bias ? mmu_f32(bias) : NULL;
        float *py = mmu_f32(*out), *pm = mmu_f32(mean), *pr = mmu_f32(rstd);
        cbytes = (size_t)N * C * 2 * sizeof(double) + (size_t)NG * sizeof(float);
        if (!(cmom = mmu_alloc(cbytes))) {
            st = mmu_fail(MMU_ENOMEM, "%s: out of memory (input %s)", op, mmu_shape_str(x));
            goto done;
        }
        double *cmean = cmom, *cm2 = cmom + N * C;
        float *mlo = mean_lo ? mmu_f32(mean_lo) : (float *)(cmom + 2 * N * C);
        int fused = NG >= 2 * mmu_get_num_threads();
        if (fused) {
#pragma omp parallel for schedule(static) if (x->numel > MMU_PAR_GRAIN)
            for (int64_t ng = 0; ng < NG; ng++) {
                int64_t c0 = (ng % G) * cpg, nc0 = ng * cpg;
                for (int64_t c = 0; c < cpg; c++)
                    seg_moments(px + (nc0 + c) * S, S, cmean + nc0 + c, cm2 + nc0 + c);
                merge_moments(cmean + nc0, cm2 + nc0, cpg, S, eps, pm + ng, mlo + ng, pr + ng);
                for (int64_t c = 0; c < cpg; c++) {
                    float a = pr[ng] * (pw ? pw[c0 + c] : 1.0f), b = pb ? pb[c0 + c] : 0.0f;
                    gn_apply(act, py + (nc0 + c) * S, px + (nc0 + c) * S, pm[ng], mlo[ng], a, b, S);
                }
            }
        } else {
#pragma omp parallel for schedule(static) if (x->numel > MMU_PAR_GRAIN)
            for (int64_t nc = 0; nc < N * C; nc++) seg_moments(px + nc * S, S, cmean + nc, cm2 + nc);
            for (int64_t ng = 0; ng < NG; ng++)
                merge_moments(cmean + ng * cpg, cm2 + ng * cpg, cpg, S, eps, pm + ng, mlo + ng, pr + ng);
#pragma omp parallel for schedule(static) if (x->numel > MMU_PAR_GRAIN)
            for (int64_t nc = 0; nc < N * C; nc++) {
                int64_t ng = nc / cpg, c = nc % C;
                float a = pr[ng] * (pw ? pw[c] : 1.0f), b = pb ? pb[c] : 0.0f;
                gn_apply(act, py + nc * S, px + nc * S, pm[ng], mlo[ng], a, b, S);
            }
        }
    }
    mmu_node *n = NULL;
    mmu_op opc = act == MMU_GN_ACT_SILU ? MMU_OP_GROUP_NORM_SILU : MMU_OP_GROUP_NORM;
    if ((st = mmu_record(&n, *out, opc, 3, (mmu_tensor *[]){x, weight, bias}))) goto done;
    if (n) {
        n->ctx.i[0] = N;
        n->ctx.i[1] = C;
        n->ctx.i[2] = S;
        n->ctx.i[3] = G;
        n->ctx.i[4] = act;
        n->ctx.f[0] = eps; /* for double backward (mmu/_double_backward.py) */
        mmu_save(n, GN_SAVED_X, x);
        if (weight) mmu_save(n, GN_SAVED_W, weight);
        mmu_save(n, GN_SAVED_MEAN, mean);
        mmu_save(n, GN_SAVED_RSTD, rstd);
        if (act) { /* z = xhat·w + b is recomputed from these */
            if (bias) mmu_save(n, GN_SAVED_B, bias);
            mmu_save(n, GN_SAVED_MEAN_LO, mean_lo);
        }
    }
done:
    if (cmom) mmu_free(cmom, cbytes);
    if (st) MMU_CLEAR(*out);
    mmu_tensor_decref(mean);
    mmu_tensor_decref(rstd);
    mmu_tensor_decref(mean_lo);
    return st;
}

// x (N, C, *), weight (C) or NULL, bias (C) or NULL -> out (x's shape)
mmu_status mmu_group_norm(mmu_tensor **out, mmu_tensor *x, int64_t groups, mmu_tensor *weight, mmu_tensor *bias,
                          double eps) {
    return mmu_group_norm_act(out, x, groups, weight, bias, eps, MMU_GN_ACT_NONE);
}

// one group's per-channel sums -> the coefficients c2, c3 of dx = (rstd·w_c)·g + c2·(x - mean) + c3
static void gn_dx_coeffs(const double *sg, const double *sgx, const float *w, int64_t cpg, int64_t S, float rstd,
                         float *c2, float *c3) {
    double A = 0, Bp = 0;
    for (int64_t c = 0; c < cpg; c++) {
        double wc = w ? w[c] : 1.0;
        A += wc * sg[c];
        Bp += wc * sgx[c];
    }
    double D = (double)cpg * S, r = rstd, B = r * Bp;
    *c2 = (float)(-r * r * B / D);
    *c3 = (float)(-r * A / D);
}

// g, x, dx (S): dx = a·g + b·(x - m) + c
static void gn_dx_channel(float *restrict dx, const float *restrict g, const float *restrict x, float m, float a,
                          float b, float c, int64_t S) {
#pragma omp simd
    for (int64_t i = 0; i < S; i++) dx[i] = a * g[i] + b * (x[i] - m) + c;
}

// g, x, dx (S): dx = a·dx + b·(x - m) + c, dx holding dz (the silu variant's GN input gradient)
static void gn_dx_channel_inplace(float *restrict dx, const float *restrict x, float m, float a, float b, float c,
                                  int64_t S) {
#pragma omp simd
    for (int64_t i = 0; i < S; i++) dx[i] = a * dx[i] + b * (x[i] - m) + c;
}

// g, x (S) -> dz (S) = g·silu'(z), z = (x - m - m_lo)·a + b as the forward computed it
static void silu_grad_channel(float *restrict dz, const float *restrict g, const float *restrict x, float m,
                              float m_lo, float a, float b, int64_t S) {
    for (int64_t i = 0; i < S; i++) {
        float z = ((x[i] - m) - m_lo) * a + b;
        float sg = 1.0f / (1.0f + mmu_exp(-z));
        dz[i] = g[i] * (sg * (1.0f + z * (1.0f - sg)));
    }
}

// g (N, C, *) -> dx (x's shape), dweight (C), dbias (C)
mmu_status mmu_group_norm_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    int64_t N = n->ctx.i[0], C = n->ctx.i[1], S = n->ctx.i[2], G = n->ctx.i[3], cpg = C / G, NG = N * G;
    int act = (int)n->ctx.i[4];
    int want_x = n->inputs[0].needs_grad, want_w = n->inputs[1].needs_grad, want_b = n->inputs[2].needs_grad;
    mmu_status st = MMU_OK;
    if (want_x) st = mmu_tensor_empty(&gin[0], MMU_FLOAT32, n->inputs[0].ndim, n->inputs[0].shape);
    if (!st && want_w) st = mmu_tensor_zeros(&gin[1], MMU_FLOAT32, n->inputs[1].ndim, n->inputs[1].shape);
    if (!st && want_b) st = mmu_tensor_zeros(&gin[2], MMU_FLOAT32, n->inputs[2].ndim, n->inputs[2].shape);
    if (st || N * C * S == 0) return st;
    float *pdx = want_x ? mmu_f32(gin[0]) : NULL;
    /* with silu, dz goes where dx will be; only when dx is not wanted does it need a buffer of its own */
    size_t sbytes = (size_t)N * C * 2 * sizeof(double), zbytes = act && !pdx ? (size_t)N * C * S * sizeof(float) : 0;
    double *sums = mmu_alloc(sbytes);
    float *zbuf = zbytes ? mmu_alloc(zbytes) : NULL;
    if (!sums || (zbytes && !zbuf)) {
        if (sums) mmu_free(sums, sbytes);
        return mmu_fail(MMU_ENOMEM, "group_norm backward: out of memory");
    }
    float *pdz = act ? (pdx ? pdx : zbuf) : NULL;
    double *sg = sums, *sgx = sums + N * C;
    const float *px = mmu_f32(n->saved[GN_SAVED_X]), *pg = mmu_f32(g);
    const float *pw = n->saved[GN_SAVED_W] ? mmu_f32(n->saved[GN_SAVED_W]) : NULL;
    const float *pb = act && n->saved[GN_SAVED_B] ? mmu_f32(n->saved[GN_SAVED_B]) : NULL;
    const float *pm = mmu_f32(n->saved[GN_SAVED_MEAN]), *pr = mmu_f32(n->saved[GN_SAVED_RSTD]);
    const float *pmlo = act ? mmu_f32(n->saved[GN_SAVED_MEAN_LO]) : NULL;
    /* the gradient GroupNorm sees for channel nc: g itself, or dz (written in L1 just before its sums) */
#define GN_GRAD_IN(nc) (pdz ? pdz + (nc) * S : pg + (nc) * S)
#define GN_CHANNEL_SUMS(nc, ng, c)                                                                               \
    do {                                                                                                         \
        if (pdz)                                                                                                 \
            silu_grad_channel(pdz + (nc) * S, pg + (nc) * S, px + (nc) * S, pm[ng], pmlo[ng],                    \
                              pr[ng] * (pw ? pw[c] : 1.0f), pb ? pb[c] : 0.0f, S);                               \
        seg_grad_sums(GN_GRAD_IN(nc), px + (nc) * S, pm[ng], S, sg + (nc), sgx + (nc));                      \
    } while (0)
#define GN_CHANNEL_DX(nc, ng, c, c2, c3)                                                                         \
    do {                                                                                                         \
        if (pdz)                                                                                                 \
            gn_dx_channel_inplace(pdx + (nc) * S, px + (nc) * S, pm[ng], pr[ng] * (pw ? pw[c] : 1.0f), c2, c3, S); \
        else                                                                                                     \
            gn_dx_channel(pdx + (nc) * S, pg + (nc) * S, px + (nc) * S, pm[ng], pr[ng] * (pw ? pw[c] : 1.0f),    \
                          c2, c3, S);                                                                            \
    } while (0)
    int64_t work = N * C * S;
    if (NG >= 2 * mmu_get_num_threads()) { /* a group per task, its x and g still in L2 for dx */
#pragma omp parallel for schedule(static) if (work > MMU_PAR_GRAIN)
        for (int64_t ng = 0; ng < NG; ng++) {
            int64_t c0 = (ng % G) * cpg, nc0 = ng * cpg;
            for (int64_t c = 0; c < cpg; c++) GN_CHANNEL_SUMS(nc0 + c, ng, c0 + c);
            if (!pdx) continue;
            float c2, c3;
            gn_dx_coeffs(sg + nc0, sgx + nc0, pw ? pw + c0 : NULL, cpg, S, pr[ng], &c2, &c3);
            for (int64_t c = 0; c < cpg; c++) GN_CHANNEL_DX(nc0 + c, ng, c0 + c, c2, c3);
        }
    } else {
#pragma omp parallel for schedule(static) if (work > MMU_PAR_GRAIN)
        for (int64_t nc = 0; nc < N * C; nc++) GN_CHANNEL_SUMS(nc, nc / cpg, nc % C);
        if (pdx) {
#pragma omp parallel for schedule(static) if (work > MMU_PAR_GRAIN)
            for (int64_t nc = 0; nc < N * C; nc++) {
                int64_t ng = nc / cpg, c = nc % C, c0 = (ng % G) * cpg;
                float c2, c3; /* recomputed per channel: O(C/G) next to O(S) */
                gn_dx_coeffs(sg + ng * cpg, sgx + ng * cpg, pw ? pw + c0 : NULL, cpg, S, pr[ng], &c2, &c3);
                GN_CHANNEL_DX(nc, ng, c, c2, c3);
            }
        }
    }
#undef GN_GRAD_IN
#undef GN_CHANNEL_SUMS
#undef GN_CHANNEL_DX
    /* dweight_c = Σ_n rstd·Σg·(x - mean), dbias_c = Σ_n Σg, added over n in order */
    float *dw = want_w ? mmu_f32(gin[1]) : NULL, *db = want_b ? mmu_f32(gin[2]) : NULL;
    for (int64_t c = 0; c < C && (dw || db); c++) {
        double aw = 0, ab = 0;
        for (int64_t i = 0; i < N; i++) {
            int64_t nc = i * C + c, ng = i * G + c / cpg;
            aw += (double)pr[ng] * sgx[nc];
            ab += sg[nc];
        }
        if (dw) dw[c] = (float)aw;
        if (db) db[c] = (float)ab;
    }
    mmu_free(sums, sbytes);
    if (zbuf) mmu_free(zbuf, zbytes);
    return MMU_OK;
}

/* ============================================================== rms_norm
 * y = x·rstd·w, rstd = 1/sqrt(mean(x²) + eps) per row of the normalised dims.
 * Backward, with dy = g·w: dx = rstd·dy - x·rstd³·mean(dy·x), dw = Σ_rows g·x·rstd
 * (per fixed block of rows, the blocks added in order, as layer_norm). */

enum { RMS_SAVED_X, RMS_SAVED_W, RMS_SAVED_RSTD };

// x (n), w (n) or NULL -> y (n), *rstd
static void rms_row(float *restrict y, float *rstd_out, const float *restrict x, const float *restrict w, int64_t n,
                    float eps) {
    float s[LANES] = {0}, t = 0.0f;
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) s[l] += x[i + l] * x[i + l];
    for (; i < n; i++) t += x[i] * x[i];
    double q = t;
    for (int l = 0; l < LANES; l++) q += s[l];
    float r = (float)(1.0 / sqrt(q / (double)n + (double)eps));
    if (w)
        for (i = 0; i < n; i++) y[i] = x[i] * r * w[i];
    else
        for (i = 0; i < n; i++) y[i] = x[i] * r;
    *rstd_out = r;
}

// x (..., *S), weight (*S) or NULL -> out (x's shape)
mmu_status mmu_rms_norm(mmu_tensor **out, mmu_tensor *x, int norm_ndim, const int64_t *norm_shape,
                        mmu_tensor *weight, double eps) {
    int64_t rows, cols;
    mmu_status st = check_norm_args("rms_norm", x, norm_ndim, norm_shape, weight, NULL, &rows, &cols);
    if (st) return st;
    mmu_tensor *rstd = NULL;
    if ((st = mmu_tensor_empty(out, MMU_FLOAT32, x->ndim, x->shape)) ||
        (st = mmu_tensor_empty(&rstd, MMU_FLOAT32, 1, &rows)))
        goto done;
    if (cols > 0) {
        const float *px = mmu_f32(x), *pw = weight ? mmu_f32(weight) : NULL;
        float *py = mmu_f32(*out), *pr = mmu_f32(rstd), e = (float)eps;
#pragma omp parallel for schedule(static) if (x->numel > MMU_PAR_GRAIN)
        for (int64_t r = 0; r < rows; r++) rms_row(py + r * cols, pr + r, px + r * cols, pw, cols, e);
    }
    mmu_node *n = NULL;
    if ((st = mmu_record(&n, *out, MMU_OP_RMS_NORM, 2, (mmu_tensor *[]){x, weight}))) goto done;
    if (n) {
        n->ctx.i[0] = rows;
        n->ctx.i[1] = cols;
        n->ctx.f[0] = eps; /* for double backward (mmu/_double_backward.py) */
        mmu_save(n, RMS_SAVED_X, x);
        if (weight) mmu_save(n, RMS_SAVED_W, weight);
        mmu_save(n, RMS_SAVED_RSTD, rstd);
    }
done:
    if (st) MMU_CLEAR(*out);
    mmu_tensor_decref(rstd);
    return st;
}

// one row: dx (or NULL) and g·x·rstd added into pw (or NULL)
static void rms_row_backward(float *restrict dx, float *restrict pw, const float *restrict x, const float *restrict g,
                             const float *restrict w, float rstd, int64_t n) {
    float s[LANES] = {0}, t = 0.0f;
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) {
            float gi = g[i + l], dy = w ? gi * w[i + l] : gi;
            s[l] += dy * x[i + l];
            if (pw) pw[i + l] += gi * x[i + l] * rstd;
        }
    for (; i < n; i++) {
        float dy = w ? g[i] * w[i] : g[i];
        t += dy * x[i];
        if (pw) pw[i] += g[i] * x[i] * rstd;
    }
    if (!dx) return;
    for (int l = 0; l < LANES; l++) t += s[l];
    float k = rstd * rstd * rstd * t / (float)n;
    if (w)
        for (i = 0; i < n; i++) dx[i] = rstd * g[i] * w[i] - x[i] * k;
    else
        for (i = 0; i < n; i++) dx[i] = rstd * g[i] - x[i] * k;
}

mmu_status mmu_rms_norm_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    int64_t rows = n->ctx.i[0], cols = n->ctx.i[1];
    int want_x = n->inputs[0].needs_grad, want_w = n->inputs[1].needs_grad;
    mmu_status st = MMU_OK;
    if (want_x) st = mmu_tensor_empty(&gin[0], MMU_FLOAT32, n->inputs[0].ndim, n->inputs[0].shape);
    if (!st && want_w) st = mmu_tensor_zeros(&gin[1], MMU_FLOAT32, n->inputs[1].ndim, n->inputs[1].shape);
    if (st || rows * cols == 0) return st;
    int64_t per, nblk = row_blocks(rows, &per);
    size_t pbytes = want_w ? (size_t)nblk * cols * sizeof(float) : 0;
    float *part = pbytes ? mmu_alloc(pbytes) : NULL;
    if (pbytes && !part) return mmu_fail(MMU_ENOMEM, "rms_norm backward: out of memory");
    if (part) memset(part, 0, pbytes);
    const float *px = mmu_f32(n->saved[RMS_SAVED_X]), *pg = mmu_f32(g), *pr = mmu_f32(n->saved[RMS_SAVED_RSTD]);
    const float *pw = n->saved[RMS_SAVED_W] ? mmu_f32(n->saved[RMS_SAVED_W]) : NULL;
    float *pdx = want_x ? mmu_f32(gin[0]) : NULL;
#pragma omp parallel for schedule(static) if (rows * cols > MMU_PAR_GRAIN)
    for (int64_t k = 0; k < nblk; k++) {
        int64_t r1 = (k + 1) * per < rows ? (k + 1) * per : rows;
        for (int64_t r = k * per; r < r1; r++)
            rms_row_backward(pdx ? pdx + r * cols : NULL, part ? part + k * cols : NULL, px + r * cols,
                             pg + r * cols, pw, pr[r], cols);
    }
    if (part) {
        add_row_blocks(mmu_f32(gin[1]), part, nblk, cols, cols);
        mmu_free(part, pbytes);
    }
    return MMU_OK;
}

/* ============================================================= normalize
 * y = x / max(||x||_p, eps) along one dim. x is seen as (outer, C, inner); the
 * norms (outer, inner) are accumulated in double, vectorised over inner when
 * the dim is not the last one. Backward, d = max(n, eps), s = Σ_c g·x:
 *   dx = g/d - [n >= eps]·(s/d²)·∂n/∂x,  ∂n/∂x = sign(x)·|x|^(p-1)/n^(p-1)
 * (torch's clamp_min passes the gradient where n >= eps). */

enum { NZ_SAVED_X, NZ_SAVED_NORM };

static inline double pnorm_term(float x, double p) {
    double a = fabs((double)x);
    return p == 2.0 ? a * a : p == 1.0 ? a : pow(a, p);
}

static inline double pnorm_root(double acc, double p) {
    return p == 2.0 ? sqrt(acc) : p == 1.0 ? acc : pow(acc, 1.0 / p);
}

/* The dim is the last one (inner == 1: the l2-normalised codebooks and the q/k
 * heads of TiTok and OmniTokenizer, rows of 8-64 channels): a row at a time.
 * The column path below would run its 64-wide double blocks at width 1 there,
 * zeroing and walking them per row, several times the cost of the row itself.
 * p = 2 sums squares in float lanes (a vector register) and the lanes in
 * double; other p keep the double terms. */
#define NZ_LANES 8

// x (C) -> y (C) = x / max(||x||_p, eps), *nrm = ||x||_p
static void nz_row(float *restrict y, float *restrict nrm, const float *restrict x, int64_t C, double p, double eps) {
    double q = 0.0;
    int64_t i = 0;
    if (p == 2.0) {
        float s[NZ_LANES] = {0};
        for (; i + NZ_LANES <= C; i += NZ_LANES)
            for (int l = 0; l < NZ_LANES; l++) s[l] += x[i + l] * x[i + l];
        for (int l = 0; l < NZ_LANES; l++) q += s[l];
    }
    for (; i < C; i++) q += pnorm_term(x[i], p);
    double nv = pnorm_root(q, p);
    *nrm = (float)nv;
    float inv = (float)(1.0 / (nv > eps ? nv : eps));
    for (i = 0; i < C; i++) y[i] = x[i] * inv;
}

// x, g (C), n = ||x||_p -> dx (C), the backward of nz_row (see the formula above)
static void nz_row_backward(float *restrict dx, const float *restrict x, const float *restrict g, float n, int64_t C,
                            double p, double eps) {
    double s = 0.0;
    int64_t i = 0;
    float t[NZ_LANES] = {0};
    for (; i + NZ_LANES <= C; i += NZ_LANES)
        for (int l = 0; l < NZ_LANES; l++) t[l] += g[i + l] * x[i + l];
    for (int l = 0; l < NZ_LANES; l++) s += t[l];
    for (; i < C; i++) s += (double)g[i] * x[i];
    double nv = n, dv = nv > eps ? nv : eps;
    float inv = (float)(1.0 / dv);
    double k = nv >= eps && nv > 0 ? s / (dv * dv) / (p == 1.0 ? 1.0 : p == 2.0 ? nv : pow(nv, p - 1.0)) : 0.0;
    if (p == 2.0) {
        float kf = (float)k;
        for (i = 0; i < C; i++) dx[i] = g[i] * inv - kf * x[i];
        return;
    }
    for (i = 0; i < C; i++) {
        float xv = x[i];
        double dn = p == 1.0 ? (xv > 0) - (xv < 0) : xv == 0 ? 0.0 : copysign(pow(fabs((double)xv), p - 1.0), xv);
        dx[i] = (float)(g[i] * inv - k * dn);
    }
}

// x (outer, C, inner), p > 0 -> out (x's shape)
mmu_status mmu_normalize(mmu_tensor **out, mmu_tensor *x, double p, int64_t dim, double eps) {
    mmu_status st = mmu_check_dtype(x, MMU_FLOAT32, "normalize", "input");
    if (st) return st;
    if (!(p > 0) || isinf(p))
        return mmu_fail(MMU_EVALUE, "normalize: p must be a finite number > 0, got %g", p);
    int d;
    if (x->ndim == 0) return mmu_fail(MMU_EINDEX, "normalize: input must have at least one dim, got %s", mmu_shape_str(x));
    if ((st = mmu_wrap_dim(&d, dim, x->ndim, "normalize"))) return st;
    int64_t outer = 1, C = x->shape[d], inner = 1;
    for (int k = 0; k < d; k++) outer *= x->shape[k];
    for (int k = d + 1; k < x->ndim; k++) inner *= x->shape[k];
    int64_t nn = outer * inner;
    mmu_tensor *norm = NULL;
    if ((st = mmu_tensor_empty(out, MMU_FLOAT32, x->ndim, x->shape)) ||
        (st = mmu_tensor_empty(&norm, MMU_FLOAT32, 1, &nn)))
        goto done;
    if (x->numel > 0 && inner == 1) {
        const float *px = mmu_f32(x);
        float *py = mmu_f32(*out), *pn = mmu_f32(norm);
#pragma omp parallel for schedule(static) if (x->numel > MMU_PAR_GRAIN)
        for (int64_t o = 0; o < outer; o++) nz_row(py + o * C, pn + o, px + o * C, C, p, eps);
    } else if (x->numel > 0) {
        const float *px = mmu_f32(x);
        float *py = mmu_f32(*out), *pn = mmu_f32(norm);
#pragma omp parallel for schedule(static) if (x->numel > MMU_PAR_GRAIN)
        for (int64_t o = 0; o < outer; o++) {
            const float *xo = px + o * C * inner;
            float *yo = py + o * C * inner, *no = pn + o * inner;
            for (int64_t i0 = 0; i0 < inner; i0 += 64) { /* 64 columns of doubles at a time */
                int64_t len = inner - i0 < 64 ? inner - i0 : 64;
                double acc[64] = {0};
                for (int64_t c = 0; c < C; c++)
                    for (int64_t i = 0; i < len; i++) acc[i] += pnorm_term(xo[c * inner + i0 + i], p);
                float inv[64];
                for (int64_t i = 0; i < len; i++) {
                    double nv = pnorm_root(acc[i], p);
                    no[i0 + i] = (float)nv;
                    inv[i] = (float)(1.0 / (nv > eps ? nv : eps));
                }
                for (int64_t c = 0; c < C; c++)
                    for (int64_t i = 0; i < len; i++) yo[c * inner + i0 + i] = xo[c * inner + i0 + i] * inv[i];
            }
        }
    }
    mmu_node *n = NULL;
    if ((st = mmu_record(&n, *out, MMU_OP_NORMALIZE, 1, (mmu_tensor *[]){x}))) goto done;
    if (n) {
        n->ctx.i[0] = outer;
        n->ctx.i[1] = C;
        n->ctx.i[2] = inner;
        n->ctx.f[0] = p;
        n->ctx.f[1] = eps;
        mmu_save(n, NZ_SAVED_X, x);
        mmu_save(n, NZ_SAVED_NORM, norm);
    }
done:
    if (st) MMU_CLEAR(*out);
    mmu_tensor_decref(norm);
    return st;
}

mmu_status mmu_normalize_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    int64_t outer = n->ctx.i[0], C = n->ctx.i[1], inner = n->ctx.i[2];
    double p = n->ctx.f[0], eps = n->ctx.f[1];
    mmu_status st = mmu_tensor_empty(&gin[0], MMU_FLOAT32, n->inputs[0].ndim, n->inputs[0].shape);
    if (st || outer * C * inner == 0) return st;
    const float *px = mmu_f32(n->saved[NZ_SAVED_X]), *pn = mmu_f32(n->saved[NZ_SAVED_NORM]), *pg = mmu_f32(g);
    float *pdx = mmu_f32(gin[0]);
    if (inner == 1) {
#pragma omp parallel for schedule(static) if (outer * C > MMU_PAR_GRAIN)
        for (int64_t o = 0; o < outer; o++) nz_row_backward(pdx + o * C, px + o * C, pg + o * C, pn[o], C, p, eps);
        return MMU_OK;
    }
#pragma omp parallel for schedule(static) if (outer * C * inner > MMU_PAR_GRAIN)
    for (int64_t o = 0; o < outer; o++) {
        const float *xo = px + o * C * inner, *go = pg + o * C * inner, *no = pn + o * inner;
        float *dxo = pdx + o * C * inner;
        for (int64_t i0 = 0; i0 < inner; i0 += 64) {
            int64_t len = inner - i0 < 64 ? inner - i0 : 64;
            double s[64] = {0}, k[64];
            float inv[64];
            for (int64_t c = 0; c < C; c++)
                for (int64_t i = 0; i < len; i++) s[i] += (double)go[c * inner + i0 + i] * xo[c * inner + i0 + i];
            for (int64_t i = 0; i < len; i++) {
                double nv = no[i0 + i], dv = nv > eps ? nv : eps;
                inv[i] = (float)(1.0 / dv);
                /* s/d² · 1/n^(p-1), the part of ∂n/∂x common to the column */
                k[i] = nv >= eps && nv > 0 ? s[i] / (dv * dv) / (p == 1.0 ? 1.0 : p == 2.0 ? nv : pow(nv, p - 1.0))
                                           : 0.0;
            }
            for (int64_t c = 0; c < C; c++)
                for (int64_t i = 0; i < len; i++) {
                    float xv = xo[c * inner + i0 + i];
                    double dn = p == 2.0 ? xv : p == 1.0 ? (xv > 0) - (xv < 0)
                                : xv == 0 ? 0.0 : copysign(pow(fabs((double)xv), p - 1.0), xv);
                    dxo[c * inner + i0 + i] = (float)(go[c * inner + i0 + i] * inv[i] - k[i] * dn);
                }
        }
    }
    return MMU_OK;
}

/* ============================================================= qkv_heads
 * The fused projection output of an attention layer -> its heads, with the
 * QK-norm and the (partial) rotary embedding of queries and keys in the same
 * pass (Show-o / Phi with qk_layernorm, OLMo, Qwen3-style layers):
 *
 *   y (B, L, (Hq + 2 Hkv)·D), rows [q heads; k heads; v heads] of D each
 *   -> z (B, Hq + 2 Hkv, L, D),  z[b, j, l] = rope_l(norm_j(y[b, l, j])) for the
 *      q heads (norm = q_norm) and the k heads (k_norm), y[b, l, j] for v,
 *
 * norm: 0 none, 1 LayerNorm (weight, bias over D or NULL), 2 RMSNorm (weight);
 * rope: rotate-half on the first R dims with cos/sin (L, R) or (B, 1, L, R) as
 * apply_rotary (R = 0: none). Unfused, this is a permute copy, a norm pass and
 * a rotation pass each for q and k, and the same three backwards; here one
 * pass each way, the row of each head in L1 throughout. The backward applies
 * the inverse rotation, then the norm's row backward (norm.c's row kernels),
 * the weight/bias sums in fixed row blocks as layer_norm's (the same numbers
 * for any thread count). */

enum { QH_SAVED_Y, QH_SAVED_QW, QH_SAVED_KW, QH_SAVED_STATS, QH_SAVED_COS, QH_SAVED_SIN };

/* x (D) -> o (D): out[:R] = x·cos + rotate_half(x)·sin, out[R:] = x (inverse: the transposed map) */
static void qh_rotate(float *restrict o, const float *restrict x, const float *restrict c, const float *restrict s,
                      int64_t D, int64_t R, int inverse) {
    int64_t h = R / 2;
    if (!inverse) {
        for (int64_t j = 0; j < h; j++) o[j] = x[j] * c[j] - x[j + h] * s[j];
        for (int64_t j = h; j < R; j++) o[j] = x[j] * c[j] + x[j - h] * s[j];
    } else {
        for (int64_t j = 0; j < h; j++) o[j] = x[j] * c[j] + x[j + h] * s[j + h];
        for (int64_t j = h; j < R; j++) o[j] = x[j] * c[j] - x[j - h] * s[j - h];
    }
    for (int64_t j = R; j < D; j++) o[j] = x[j];
}

static mmu_status qh_check_vec(mmu_tensor *p, const char *arg, int64_t D, mmu_tensor *y) {
    if (!p) return MMU_OK;
    mmu_status st = mmu_check_dtype(p, MMU_FLOAT32, "qkv_heads", arg);
    if (st) return st;
    if (p->ndim != 1 || p->shape[0] != D)
        return mmu_fail(MMU_EVALUE, "qkv_heads: %s must be (head_dim=%lld,), got %s (qkv %s)", arg, (long long)D,
                        mmu_shape_str(p), mmu_shape_str(y));
    return MMU_OK;
}

// y (B, L, (hq + 2 hkv) D), q/k norm weight and bias (D) or NULL, cos/sin (L, R) or (B, 1, L, R) or NULL
// -> out (B, hq + 2 hkv, L, D)
mmu_status mmu_qkv_heads(mmu_tensor **out, mmu_tensor *y, int64_t hq, int64_t hkv, int norm, mmu_tensor *qw,
                         mmu_tensor *qb, mmu_tensor *kw, mmu_tensor *kb, double eps, mmu_tensor *cos_t,
                         mmu_tensor *sin_t) {
    const char *op = "qkv_heads";
    mmu_status st = mmu_check_dtype(y, MMU_FLOAT32, op, "qkv");
    if (st) return st;
    if (hq < 1 || hkv < 1)
        return mmu_fail(MMU_EVALUE, "%s: num_heads and num_kv_heads must be >= 1, got %lld and %lld", op,
                        (long long)hq, (long long)hkv);
    if (norm < 0 || norm > 2) return mmu_fail(MMU_EVALUE, "%s: norm must be 0 (none), 1 (layernorm) or 2 (rmsnorm)", op);
    int64_t H = hq + 2 * hkv;
    if (y->ndim != 3 || y->shape[2] % H || y->shape[2] == 0)
        return mmu_fail(MMU_EVALUE, "%s: qkv must be (B, L, (num_heads + 2 num_kv_heads)·head_dim) = (B, L, %lld·D), "
                        "got %s", op, (long long)H, mmu_shape_str(y));
    int64_t B = y->shape[0], L = y->shape[1], D = y->shape[2] / H, R = 0, cb = 0;
    if (norm == 0 && (qw || qb || kw || kb))
        return mmu_fail(MMU_EVALUE, "%s: norm weights are given without a norm", op);
    if (norm == 2 && (qb || kb)) return mmu_fail(MMU_EVALUE, "%s: rmsnorm takes no bias", op);
    if ((st = qh_check_vec(qw, "q_weight", D, y)) || (st = qh_check_vec(qb, "q_bias", D, y)) ||
        (st = qh_check_vec(kw, "k_weight", D, y)) || (st = qh_check_vec(kb, "k_bias", D, y)))
        return st;
    if (!cos_t != !sin_t) return mmu_fail(MMU_EVALUE, "%s: give both cos and sin, or neither", op);
    if (cos_t) {
        if ((st = mmu_check_dtype(cos_t, MMU_FLOAT32, op, "cos")) || (st = mmu_check_dtype(sin_t, MMU_FLOAT32, op, "sin")))
            return st;
        if (!mmu_same_shape(cos_t, sin_t))
            return mmu_fail(MMU_EVALUE, "%s: cos %s and sin %s must have the same shape", op, mmu_shape_str(cos_t),
                            mmu_shape_str(sin_t));
        R = cos_t->shape[cos_t->ndim - 1];
        int ok = cos_t->ndim == 2 ? cos_t->shape[0] == L
                 : cos_t->ndim == 4 && (cos_t->shape[0] == B || cos_t->shape[0] == 1) && cos_t->shape[1] == 1 &&
                   cos_t->shape[2] == L;
        if (!ok || R % 2 || R > D || R == 0)
            return mmu_fail(MMU_EVALUE, "%s: cos/sin must be (L=%lld, R) or (B|1, 1, L, R) with R even in [2, head_dim="
                            "%lld], got %s", op, (long long)L, (long long)D, mmu_shape_str(cos_t));
        cb = cos_t->ndim == 4 && cos_t->shape[0] == B && B > 1; /* a table per batch row */
    }
    int64_t NQK = hq + hkv, rows = B * L;
    mmu_tensor *stats = NULL; /* (2, rows·NQK): the mean (layernorm) and rstd of every q / k head row */
    int64_t sshape[2] = {2, rows * NQK};
    if ((st = mmu_tensor_empty(out, MMU_FLOAT32, 4, (int64_t[]){B, H, L, D})) ||
        (norm && (st = mmu_tensor_empty(&stats, MMU_FLOAT32, 2, sshape))))
        goto done;
    {
        const float *py = mmu_f32(y), *pqw = qw ? mmu_f32(qw) : NULL, *pqb = qb ? mmu_f32(qb) : NULL;
        const float *pkw = kw ? mmu_f32(kw) : NULL, *pkb = kb ? mmu_f32(kb) : NULL;
        const float *pc = cos_t ? mmu_f32(cos_t) : NULL, *ps = sin_t ? mmu_f32(sin_t) : NULL;
        float *pz = mmu_f32(*out), *pm = stats ? mmu_f32(stats) : NULL, *pr = stats ? pm + rows * NQK : NULL;
        float e = (float)eps;
#pragma omp parallel for schedule(static) if (y->numel > MMU_PAR_GRAIN)
        for (int64_t r = 0; r < rows; r++) {
            int64_t b = r / L, l = r % L;
            const float *c = pc ? pc + ((cb ? b : 0) * L + l) * R : NULL, *s = ps ? ps + ((cb ? b : 0) * L + l) * R : NULL;
            float tmp[D > 0 ? D : 1];
            for (int64_t j = 0; j < H; j++) {
                const float *x = py + r * H * D + j * D;
                float *o = pz + ((b * H + j) * L + l) * D;
                if (j >= NQK) {
                    memcpy(o, x, D * sizeof(float));
                    continue;
                }
                const float *w = j < hq ? pqw : pkw, *bb = j < hq ? pqb : pkb;
                const float *src = x;
                if (norm == 1) {
                    lnorm_row(tmp, pm + r * NQK + j, pr + r * NQK + j, x, w, bb, D, e);
                    src = tmp;
                } else if (norm == 2) {
                    rms_row(tmp, pr + r * NQK + j, x, w, D, e);
                    src = tmp;
                }
                if (c) qh_rotate(o, src, c, s, D, R, 0);
                else if (src != o) memcpy(o, src, D * sizeof(float));
            }
        }
    }
    mmu_node *n = NULL;
    if ((st = mmu_record(&n, *out, MMU_OP_QKV_HEADS, 5, (mmu_tensor *[]){y, qw, qb, kw, kb}))) goto done;
    if (n) {
        n->ctx.i[0] = hq;
        n->ctx.i[1] = hkv;
        n->ctx.i[2] = norm;
        n->ctx.i[3] = R;
        n->ctx.i[4] = cb;
        n->ctx.f[0] = eps;
        if (norm) mmu_save(n, QH_SAVED_Y, y); /* without a norm the backward is linear: y is not needed */
        if (qw) mmu_save(n, QH_SAVED_QW, qw);
        if (kw) mmu_save(n, QH_SAVED_KW, kw);
        if (stats) mmu_save(n, QH_SAVED_STATS, stats);
        if (cos_t) {
            mmu_save(n, QH_SAVED_COS, cos_t);
            mmu_save(n, QH_SAVED_SIN, sin_t);
        }
    }
done:
    if (st) MMU_CLEAR(*out);
    mmu_tensor_decref(stats);
    return st;
}

// g (B, H, L, D) -> dy (B, L, H·D), and the four norm parameters' gradients
mmu_status mmu_qkv_heads_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    int64_t hq = n->ctx.i[0], hkv = n->ctx.i[1], R = n->ctx.i[3], cb = n->ctx.i[4];
    int norm = (int)n->ctx.i[2];
    int64_t B = g->shape[0], H = g->shape[1], L = g->shape[2], D = g->shape[3], NQK = hq + hkv, rows = B * L;
    mmu_status st = MMU_OK;
    int want[5];
    for (int i = 0; i < 5; i++) {
        want[i] = n->n_inputs > i && n->inputs[i].needs_grad;
        if (!want[i] || st) continue;
        st = i == 0 ? mmu_tensor_empty(&gin[0], MMU_FLOAT32, n->inputs[0].ndim, n->inputs[0].shape)
                    : mmu_tensor_zeros(&gin[i], MMU_FLOAT32, n->inputs[i].ndim, n->inputs[i].shape);
    }
    if (st || rows * D == 0) return st;
    int params = want[1] || want[2] || want[3] || want[4];
    int64_t per, nblk = row_blocks(rows, &per);
    size_t pbytes = params ? (size_t)nblk * 4 * D * sizeof(float) : 0; /* slabs [qw, qb, kw, kb] per block */
    float *part = pbytes ? mmu_alloc(pbytes) : NULL;
    if (pbytes && !part) return mmu_fail(MMU_ENOMEM, "qkv_heads backward: out of memory");
    if (part) memset(part, 0, pbytes);
    const float *py = n->saved[QH_SAVED_Y] ? mmu_f32(n->saved[QH_SAVED_Y]) : NULL, *pg = mmu_f32(g);
    const float *pqw = n->saved[QH_SAVED_QW] ? mmu_f32(n->saved[QH_SAVED_QW]) : NULL;
    const float *pkw = n->saved[QH_SAVED_KW] ? mmu_f32(n->saved[QH_SAVED_KW]) : NULL;
    const float *pm = n->saved[QH_SAVED_STATS] ? mmu_f32(n->saved[QH_SAVED_STATS]) : NULL;
    const float *pr = pm ? pm + rows * NQK : NULL;
    const float *pc = n->saved[QH_SAVED_COS] ? mmu_f32(n->saved[QH_SAVED_COS]) : NULL;
    const float *ps = n->saved[QH_SAVED_SIN] ? mmu_f32(n->saved[QH_SAVED_SIN]) : NULL;
    float *pdy = want[0] ? mmu_f32(gin[0]) : NULL;
#pragma omp parallel for schedule(static) if (rows * H * D > MMU_PAR_GRAIN)
    for (int64_t k = 0; k < nblk; k++) {
        float *slab = part ? part + k * 4 * D : NULL, tmp[D > 0 ? D : 1];
        int64_t r1 = (k + 1) * per < rows ? (k + 1) * per : rows;
        for (int64_t r = k * per; r < r1; r++) {
            int64_t b = r / L, l = r % L;
            const float *c = pc ? pc + ((cb ? b : 0) * L + l) * R : NULL, *s = ps ? ps + ((cb ? b : 0) * L + l) * R : NULL;
            for (int64_t j = 0; j < H; j++) {
                const float *gz = pg + ((b * H + j) * L + l) * D;
                float *dy = pdy ? pdy + r * H * D + j * D : NULL;
                if (j >= NQK) {
                    if (dy) memcpy(dy, gz, D * sizeof(float));
                    continue;
                }
                const float *gn = gz;
                if (c) {
                    qh_rotate(tmp, gz, c, s, D, R, 1);
                    gn = tmp;
                }
                int isq = j < hq;
                float *sw = slab ? slab + (isq ? 0 : 2) * D : NULL, *sb = slab ? slab + (isq ? 1 : 3) * D : NULL;
                if (norm == 1)
                    lnorm_row_backward(dy, want[isq ? 1 : 3] ? sw : NULL, want[isq ? 2 : 4] ? sb : NULL,
                                       py + r * H * D + j * D, gn, isq ? pqw : pkw, pm[r * NQK + j], pr[r * NQK + j], D);
                else if (norm == 2)
                    rms_row_backward(dy, want[isq ? 1 : 3] ? sw : NULL, py + r * H * D + j * D, gn, isq ? pqw : pkw,
                                     pr[r * NQK + j], D);
                else if (dy)
                    memcpy(dy, gn, D * sizeof(float));
            }
        }
    }
    if (part) {
        for (int i = 1; i < 5; i++)
            if (want[i]) add_row_blocks(mmu_f32(gin[i]), part + (i - 1) * D, nblk, 4 * D, D);
        mmu_free(part, pbytes);
    }
    return MMU_OK;
}
