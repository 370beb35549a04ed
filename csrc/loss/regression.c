/* Regression losses: mean squared error and mean absolute error.
 *
 * One fused pass over input and target: elementwise for 'none'; for 'mean'
 * and 'sum' each fixed-size chunk is summed in double (8 lanes, so the loop
 * vectorises) and the chunk sums are combined serially, so the result is the
 * same for any thread count. The backward recomputes input - target instead
 * of saving it: both inputs are already alive, saving them costs nothing.
 *
 * torch broadcasts a target of another shape (with a warning, as it is
 * almost always a bug); mmu requires equal shapes.
 */
#include <math.h>
#include <string.h>

#include "../ops/ops.h"

#define CHUNK 16384

// input (...), target (same shape) -> partial sums of |d| or d^2 per chunk, combined serially
static double regression_sum(const float *x, const float *y, int64_t n, int l1) {
    int64_t nch = (n + CHUNK - 1) / CHUNK;
    double part_buf[64], *part = nch <= 64 ? part_buf : mmu_alloc(nch * sizeof(double));
    if (!part) { /* out of scratch: serial, still deterministic */
        double s = 0.0;
        for (int64_t i = 0; i < n; i++) {
            float d = x[i] - y[i];
            s += l1 ? fabsf(d) : d * d;
        }
        return s;
    }
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)
    for (int64_t c = 0; c < nch; c++) {
        int64_t lo = c * CHUNK, hi = lo + CHUNK < n ? lo + CHUNK : n, i = lo;
        double acc[8] = {0};
        /* the elementwise value is rounded to float first, as in 'none' (and torch) */
        if (l1) {
            for (; i + 8 <= hi; i += 8)
                for (int l = 0; l < 8; l++) acc[l] += fabsf(x[i + l] - y[i + l]);
        } else {
            for (; i + 8 <= hi; i += 8)
                for (int l = 0; l < 8; l++) {
                    float d = x[i + l] - y[i + l];
                    acc[l] += d * d;
                }
        }
        for (; i < hi; i++) {
            float d = x[i] - y[i];
            acc[i % 8] += l1 ? fabsf(d) : d * d;
        }
        part[c] = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    }
    double s = 0.0;
    for (int64_t c = 0; c < nch; c++) s += part[c];
    if (part != part_buf) mmu_free(part, nch * sizeof(double));
    return s;
}

// input (...), target (same shape) -> out (same shape) for 'none', () for 'mean' / 'sum'
static mmu_status regression_loss(mmu_tensor **out, mmu_tensor *input, mmu_tensor *target, mmu_reduction red,
                                  int l1) {
    const char *name = l1 ? "l1_loss" : "mse_loss";
    mmu_status st;
    if ((st = mmu_check_dtype(input, MMU_FLOAT32, name, "input"))) return st;
    if ((st = mmu_check_dtype(target, MMU_FLOAT32, name, "target"))) return st;
    if (red != MMU_REDUCTION_NONE && red != MMU_REDUCTION_MEAN && red != MMU_REDUCTION_SUM)
        return mmu_fail(MMU_EVALUE, "%s: unknown reduction %d", name, (int)red);
    if (!mmu_same_shape(input, target))
        return mmu_fail(MMU_EVALUE, "%s: input has shape %s but target has shape %s; they must be equal "
                        "(mmu does not broadcast loss targets)", name, mmu_shape_str(input), mmu_shape_str(target));
    mmu_sync_threads();
    const float *x = mmu_f32(input), *y = mmu_f32(target);
    int64_t n = input->numel;
    if (red == MMU_REDUCTION_NONE) {
        if ((st = mmu_tensor_empty_like(out, input))) return st;
        float *o = mmu_f32(*out);
        if (l1) {
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)
            for (int64_t i = 0; i < n; i++) o[i] = fabsf(x[i] - y[i]);
        } else {
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)
            for (int64_t i = 0; i < n; i++) {
                float d = x[i] - y[i];
                o[i] = d * d;
            }
        }
    } else {
        if ((st = mmu_tensor_empty(out, MMU_FLOAT32, 0, NULL))) return st;
        double s = regression_sum(x, y, n, l1);
        /* 'mean' of nothing is 0/0 = nan, as torch */
        mmu_f32(*out)[0] = (float)(red == MMU_REDUCTION_MEAN ? s / (double)n : s);
    }
    mmu_node *nd = NULL;
    mmu_tensor *ins[2] = {input, target};
    if ((st = mmu_record(&nd, *out, l1 ? MMU_OP_L1_LOSS : MMU_OP_MSE_LOSS, 2, ins))) {
        MMU_CLEAR(*out);
        return st;
    }
    if (nd) {
        mmu_save(nd, 0, input);
        mmu_save(nd, 1, target);
        nd->ctx.i[0] = red;
    }
    return MMU_OK;
}

mmu_status mmu_mse_loss(mmu_tensor **out, mmu_tensor *input, mmu_tensor *target, mmu_reduction red) {
    return regression_loss(out, input, target, red, 0);
}

mmu_status mmu_l1_loss(mmu_tensor **out, mmu_tensor *input, mmu_tensor *target, mmu_reduction red) {
    return regression_loss(out, input, target, red, 1);
}

/* d/dx of d^2 is 2d, of |d| is sign(d), 0 at d == 0 and (as torch's sign)
 * at d == nan; the target's gradient is the negative of the input's. */
static inline float regression_dloss(float d, int l1) {
    if (!l1) return 2.0f * d;
    return d > 0.0f ? 1.0f : d < 0.0f ? -1.0f : 0.0f;
}

// g (...) for 'none', () otherwise -> gin[0] (input's shape), gin[1] (target's shape)
mmu_status mmu_regression_loss_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    int need_x = n->inputs[0].needs_grad, need_y = n->inputs[1].needs_grad;
    if (!need_x && !need_y) return MMU_OK;
    mmu_tensor *input = n->saved[0], *target = n->saved[1];
    int l1 = n->op == MMU_OP_L1_LOSS;
    mmu_reduction red = (mmu_reduction)n->ctx.i[0];
    mmu_status st;
    if (need_x && (st = mmu_tensor_empty_like(&gin[0], input))) return st;
    if (need_y && (st = mmu_tensor_empty_like(&gin[1], target))) {
        MMU_CLEAR(gin[0]);
        return st;
    }
    mmu_sync_threads();
    const float *x = mmu_f32(input), *y = mmu_f32(target), *pg = mmu_f32(g);
    float *gx = need_x ? mmu_f32(gin[0]) : NULL, *gy = need_y ? mmu_f32(gin[1]) : NULL;
    int64_t len = input->numel;
    if (red == MMU_REDUCTION_NONE) {
#pragma omp parallel for schedule(static) if (len > MMU_PAR_GRAIN)
        for (int64_t i = 0; i < len; i++) {
            float v = regression_dloss(x[i] - y[i], l1) * pg[i];
            if (gx) gx[i] = v;
            if (gy) gy[i] = -v;
        }
        return MMU_OK;
    }
    float s = red == MMU_REDUCTION_MEAN ? pg[0] / (float)len : pg[0];
#pragma omp parallel for schedule(static) if (len > MMU_PAR_GRAIN)
    for (int64_t i = 0; i < len; i++) {
        float v = regression_dloss(x[i] - y[i], l1) * s;
        if (gx) gx[i] = v;
        if (gy) gy[i] = -v;
    }
    return MMU_OK;
}
