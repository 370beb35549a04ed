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

#include "ops.h"

#define LANES 16
#define MAX_ROW_BLOCKS 64

enum { SAVED_X, SAVED_W, SAVED_MEAN, SAVED_RSTD };

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

static mmu_status check_param(mmu_tensor *p, const char *arg, mmu_tensor *x, int nd, const int64_t *ns) {
    mmu_status st = mmu_check_dtype(p, MMU_FLOAT32, "layer_norm", arg);
    if (st) return st;
    if (p->ndim != nd || memcmp(p->shape, ns, nd * sizeof(int64_t)))
        return mmu_fail(MMU_EVALUE, "layer_norm: %s has shape %s but normalized_shape is %s (input %s)", arg,
                        mmu_shape_str(p), mmu_dims_str(nd, ns), mmu_shape_str(x));
    return MMU_OK;
}

// x (..., *S), weight (*S) or NULL, bias (*S) or NULL -> out (x's shape)
mmu_status mmu_layer_norm(mmu_tensor **out, mmu_tensor *x, int norm_ndim, const int64_t *norm_shape,
                          mmu_tensor *weight, mmu_tensor *bias, double eps) {
    mmu_status st = mmu_check_dtype(x, MMU_FLOAT32, "layer_norm", "input");
    if (st) return st;
    if (norm_ndim < 1)
        return mmu_fail(MMU_EVALUE, "layer_norm: normalized_shape must have at least one dim, got %s (input %s)",
                        mmu_dims_str(norm_ndim, norm_shape), mmu_shape_str(x));
    int lead = x->ndim - norm_ndim;
    if (lead < 0 || memcmp(x->shape + lead, norm_shape, norm_ndim * sizeof(int64_t)))
        return mmu_fail(MMU_EVALUE, "layer_norm: normalized_shape %s does not match the trailing dims of the "
                        "input of shape %s", mmu_dims_str(norm_ndim, norm_shape), mmu_shape_str(x));
    if (weight && (st = check_param(weight, "weight", x, norm_ndim, norm_shape))) return st;
    if (bias && (st = check_param(bias, "bias", x, norm_ndim, norm_shape))) return st;
    int64_t cols = 1, rows = 1;
    for (int d = 0; d < norm_ndim; d++) cols *= norm_shape[d];
    for (int d = 0; d < lead; d++) rows *= x->shape[d];

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
    int64_t nblk = rows < MAX_ROW_BLOCKS ? rows : MAX_ROW_BLOCKS, per = (rows + nblk - 1) / nblk;
    nblk = (rows + per - 1) / per;
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
    if (part) { /* add the blocks in order, columns shared among threads */
        float *dw = want_w ? mmu_f32(gin[1]) : NULL, *db = want_b ? mmu_f32(gin[2]) : NULL;
        enum { CB = 256 };
        int64_t ncb = (cols + CB - 1) / CB;
#pragma omp parallel for schedule(static) if (nblk * cols > MMU_PAR_GRAIN)
        for (int64_t c = 0; c < ncb; c++) {
            int64_t c0 = c * CB, len = cols - c0 < CB ? cols - c0 : CB;
            for (int64_t k = 0; k < nblk; k++) {
                const float *sw = part + (k * 2) * cols + c0, *sb = part + (k * 2 + 1) * cols + c0;
                if (dw)
                    for (int64_t i = 0; i < len; i++) dw[c0 + i] += sw[i];
                if (db)
                    for (int64_t i = 0; i < len; i++) db[c0 + i] += sb[i];
            }
        }
        mmu_free(part, pbytes);
    }
    return MMU_OK;
}
