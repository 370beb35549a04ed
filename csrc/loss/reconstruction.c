/* Regression losses: mean squared error, mean absolute error, smooth L1 and Huber,
 * and DALL-E's logit-Laplace negative log-likelihood.
 *
 * One fused pass over the inputs: elementwise for 'none'; for 'mean' and 'sum'
 * each fixed-size chunk is summed in double (8 lanes, so the loop vectorises)
 * and the chunk sums are combined serially, so the result is the same for any
 * thread count. The backward recomputes input - target instead of saving it:
 * both inputs are already alive, saving them costs nothing. torch runs smooth L1
 * and Huber as one kernel too, but a composition of mmu ops would be 5 passes.
 *
 * torch broadcasts a target of another shape (with a warning, as it is
 * almost always a bug); mmu requires equal shapes.
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "../core/vmath.h"
#include "../ops/ops.h"

#define CHUNK 16384

typedef enum { REG_MSE, REG_L1, REG_SMOOTH_L1, REG_HUBER } reg_kind;

static const char *const reg_names[] = {"mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss"};

/* The elementwise loss of d = input - target; p is beta (smooth L1) or delta (Huber).
 * With m = min(|d|, p) both branches are one expression (no select): smooth L1 is
 * 0.5 m^2 / beta + (|d| - m), Huber is 0.5 m^2 + delta (|d| - m). */
static inline float reg_value(float d, reg_kind k, float p, float inv_p) {
    float a = fabsf(d), m = a < p ? a : p;
    switch (k) {
    case REG_MSE: return d * d;
    case REG_L1: return a;
    case REG_SMOOTH_L1: return 0.5f * m * m * inv_p + (a - m);
    default: return 0.5f * m * m + p * (a - m);
    }
}

/* d/dd of the above: 2d, sign(d) (0 at 0 and nan, as torch's sign), clamp(d / beta, -1, 1),
 * clamp(d, -delta, delta). */
static inline float reg_grad(float d, reg_kind k, float p, float inv_p) {
    switch (k) {
    case REG_MSE: return 2.0f * d;
    case REG_L1: return d > 0.0f ? 1.0f : d < 0.0f ? -1.0f : 0.0f;
    case REG_SMOOTH_L1: return d >= p ? 1.0f : d <= -p ? -1.0f : d * inv_p;
    default: return d >= p ? p : d <= -p ? -p : d;
    }
}

/* Runs LOOP(K) with K the compile-time constant of kind k: each kernel writes its inner loop once
 * as a macro of K, and every kind gets its own vectorised copy (a runtime kind inside the loop
 * keeps GCC from vectorising it). */
#define REG_BY_KIND(k, LOOP)                         \
    switch (k) {                                     \
    case REG_MSE: LOOP(REG_MSE) break;               \
    case REG_L1: LOOP(REG_L1) break;                 \
    case REG_SMOOTH_L1: LOOP(REG_SMOOTH_L1) break;   \
    default: LOOP(REG_HUBER) break;                  \
    }

// input (...), target (same shape) -> partial sums of the elementwise loss per chunk, combined serially
static double regression_sum(const float *x, const float *y, int64_t n, reg_kind k, float p) {
    float inv_p = p > 0.0f ? 1.0f / p : 0.0f;
    int64_t nch = (n + CHUNK - 1) / CHUNK;
    double part_buf[64], *part = nch <= 64 ? part_buf : mmu_alloc(nch * sizeof(double));
    if (!part) { /* out of scratch: serial, still deterministic */
        double s = 0.0;
        for (int64_t i = 0; i < n; i++) s += reg_value(x[i] - y[i], k, p, inv_p);
        return s;
    }
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)
    for (int64_t c = 0; c < nch; c++) {
        int64_t lo = c * CHUNK, hi = lo + CHUNK < n ? lo + CHUNK : n, i = lo;
        double acc[16] = {0};
        /* the elementwise value is rounded to float first, as in 'none' (and torch); 64 values
         * are summed in float lanes, then into double lanes: full-width float vectors, and
         * no precision lost over a chunk. One loop per kind, so each vectorises. */
#define REG_LOOP(K)                                                                   \
        for (; i + 64 <= hi; i += 64) {                                               \
            float v[16];                                                              \
            for (int l = 0; l < 16; l++) v[l] = reg_value(x[i + l] - y[i + l], K, p, inv_p); \
            for (int r = 16; r < 64; r += 16)                                         \
                for (int l = 0; l < 16; l++) v[l] += reg_value(x[i + r + l] - y[i + r + l], K, p, inv_p); \
            for (int l = 0; l < 16; l++) acc[l] += v[l];                              \
        }
        REG_BY_KIND(k, REG_LOOP)
#undef REG_LOOP
        for (; i < hi; i++) acc[i % 16] += reg_value(x[i] - y[i], k, p, inv_p);
        double t = 0.0;
        for (int l = 0; l < 16; l++) t += acc[l];
        part[c] = t;
    }
    double s = 0.0;
    for (int64_t c = 0; c < nch; c++) s += part[c];
    if (part != part_buf) mmu_free(part, nch * sizeof(double));
    return s;
}

static mmu_status check_reduction(mmu_reduction red, const char *name) {
    if (red != MMU_REDUCTION_NONE && red != MMU_REDUCTION_MEAN && red != MMU_REDUCTION_SUM)
        return mmu_fail(MMU_EVALUE, "%s: unknown reduction %d", name, (int)red);
    return MMU_OK;
}

// input (...), target (same shape) -> out (same shape) for 'none', () for 'mean' / 'sum'
static mmu_status regression_loss(mmu_tensor **out, mmu_tensor *input, mmu_tensor *target, mmu_reduction red,
                                  reg_kind k, double param) {
    const char *name = reg_names[k];
    mmu_status st;
    if ((st = mmu_check_dtype(input, MMU_FLOAT32, name, "input"))) return st;
    if ((st = mmu_check_dtype(target, MMU_FLOAT32, name, "target"))) return st;
    if ((st = check_reduction(red, name))) return st;
    if (!mmu_same_shape(input, target))
        return mmu_fail(MMU_EVALUE, "%s: input has shape %s but target has shape %s; they must be equal "
                        "(mmu does not broadcast loss targets)", name, mmu_shape_str(input), mmu_shape_str(target));
    if ((k == REG_SMOOTH_L1 && !(param > 0.0)) || (k == REG_HUBER && !(param > 0.0)) || !isfinite(param))
        return mmu_fail(MMU_EVALUE, "%s: %s must be a finite number > 0, got %g", name,
                        k == REG_HUBER ? "delta" : "beta", param);
    mmu_sync_threads();
    const float *x = mmu_f32(input), *y = mmu_f32(target);
    /* a delta beyond float range would round to inf, and Huber's delta·(|d| - m) be inf·0 = nan */
    float p = param < FLT_MAX ? (float)param : FLT_MAX, inv_p = p > 0.0f ? 1.0f / p : 0.0f;
    int64_t n = input->numel;
    if (red == MMU_REDUCTION_NONE) {
        if ((st = mmu_tensor_empty_like(out, input))) return st;
        float *o = mmu_f32(*out);
        int64_t nch = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)
        for (int64_t c = 0; c < nch; c++) {
            int64_t lo = c * CHUNK, hi = lo + CHUNK < n ? lo + CHUNK : n;
            /* the kind is switched per chunk so that each inner loop vectorises */
#define REG_LOOP(K) for (int64_t i = lo; i < hi; i++) o[i] = reg_value(x[i] - y[i], K, p, inv_p);
            REG_BY_KIND(k, REG_LOOP)
#undef REG_LOOP
        }
    } else {
        if ((st = mmu_tensor_empty(out, MMU_FLOAT32, 0, NULL))) return st;
        double s = regression_sum(x, y, n, k, p);
        /* 'mean' of nothing is 0/0 = nan, as torch */
        mmu_f32(*out)[0] = (float)(red == MMU_REDUCTION_MEAN ? s / (double)n : s);
    }
    static const mmu_op ops[] = {MMU_OP_MSE_LOSS, MMU_OP_L1_LOSS, MMU_OP_SMOOTH_L1_LOSS, MMU_OP_HUBER_LOSS};
    mmu_node *nd = NULL;
    mmu_tensor *ins[2] = {input, target};
    if ((st = mmu_record(&nd, *out, ops[k], 2, ins))) {
        MMU_CLEAR(*out);
        return st;
    }
    if (nd) {
        mmu_save(nd, 0, input);
        mmu_save(nd, 1, target);
        nd->ctx.i[0] = red;
        nd->ctx.i[1] = k;
        nd->ctx.f[0] = param;
    }
    return MMU_OK;
}

mmu_status mmu_mse_loss(mmu_tensor **out, mmu_tensor *input, mmu_tensor *target, mmu_reduction red) {
    return regression_loss(out, input, target, red, REG_MSE, 0.0);
}

mmu_status mmu_l1_loss(mmu_tensor **out, mmu_tensor *input, mmu_tensor *target, mmu_reduction red) {
    return regression_loss(out, input, target, red, REG_L1, 0.0);
}

mmu_status mmu_smooth_l1_loss(mmu_tensor **out, mmu_tensor *input, mmu_tensor *target, mmu_reduction red,
                              double beta) {
    /* beta = 0 is exactly l1 (torch takes the same shortcut); so is a beta below FLT_MIN up to beta/2
     * (its 1/beta would overflow to inf, and 0.5·m²·inf be nan) */
    if (beta >= 0.0 && (float)beta < FLT_MIN) return regression_loss(out, input, target, red, REG_L1, 0.0);
    return regression_loss(out, input, target, red, REG_SMOOTH_L1, beta);
}

mmu_status mmu_huber_loss(mmu_tensor **out, mmu_tensor *input, mmu_tensor *target, mmu_reduction red,
                          double delta) {
    return regression_loss(out, input, target, red, REG_HUBER, delta);
}

// g (...) for 'none', () otherwise -> gin[0] (input's shape), gin[1] (target's shape); the target's
// gradient is the negative of the input's
mmu_status mmu_regression_loss_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    int need_x = n->inputs[0].needs_grad, need_y = n->inputs[1].needs_grad;
    if (!need_x && !need_y) return MMU_OK;
    mmu_tensor *input = n->saved[0], *target = n->saved[1];
    mmu_reduction red = (mmu_reduction)n->ctx.i[0];
    reg_kind k = (reg_kind)n->ctx.i[1];
    float p = (float)n->ctx.f[0], inv_p = p > 0.0f ? 1.0f / p : 0.0f;
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
    /* a reduced loss's gradient is one scalar: read it through a stride-0 pointer */
    int64_t gstride = red == MMU_REDUCTION_NONE ? 1 : 0;
    float s = red == MMU_REDUCTION_MEAN ? 1.0f / (float)len : 1.0f;
    int64_t nch = (len + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (len > MMU_PAR_GRAIN)
    for (int64_t c = 0; c < nch; c++) {
        int64_t lo = c * CHUNK, hi = lo + CHUNK < len ? lo + CHUNK : len;
        /* one vectorised loop per (kind, which grads) */
#define REG_LOOP(K)                                                                            \
        if (gx && gy)                                                                          \
            for (int64_t i = lo; i < hi; i++) {                                                \
                float v = reg_grad(x[i] - y[i], K, p, inv_p) * (pg[i * gstride] * s);          \
                gx[i] = v;                                                                     \
                gy[i] = -v;                                                                    \
            }                                                                                  \
        else if (gx)                                                                           \
            for (int64_t i = lo; i < hi; i++) gx[i] = reg_grad(x[i] - y[i], K, p, inv_p) * (pg[i * gstride] * s); \
        else                                                                                   \
            for (int64_t i = lo; i < hi; i++) gy[i] = -reg_grad(x[i] - y[i], K, p, inv_p) * (pg[i * gstride] * s);
        REG_BY_KIND(k, REG_LOOP)
#undef REG_LOOP
    }
    return MMU_OK;
}

/* ------------------------------------------------------------ logit-Laplace
 * DALL-E's dVAE likelihood (Ramesh et al. 2021, appendix A.3). Per element, with
 * x' = (1 - 2 eps) x + eps, y = logit(x'), r = |y - mu|, ib = exp(-log_b):
 *   loss = log_b + log 2 + r ib + log x' + log(1 - x')
 *   d/dmu = -sign(y - mu) ib,  d/dlog_b = 1 - r ib,
 *   d/dx = (1 - 2 eps) [sign(y - mu) ib (1/x' + 1/(1 - x')) + 1/x' - 1/(1 - x')].
 * torch has no such op: a composition is 9 passes and 6 temporaries. */
static inline float ll_value(float x, float mu, float lb, float a, float e) {
    float xp = a * x + e, lx = mmu_log(xp), l1x = mmu_log(1.0f - xp);
    return lb + (float)M_LN2 + fabsf(lx - l1x - mu) * mmu_exp(-lb) + lx + l1x;
}

// x, mu, log_b (...) -> out (same shape) for 'none', () for 'mean' / 'sum'
mmu_status mmu_logit_laplace_loss(mmu_tensor **out, mmu_tensor *x, mmu_tensor *mu, mmu_tensor *log_b, double eps,
                                  mmu_reduction red) {
    const char *name = "logit_laplace_loss";
    mmu_status st;
    if ((st = mmu_check_dtype(x, MMU_FLOAT32, name, "x"))) return st;
    if ((st = mmu_check_dtype(mu, MMU_FLOAT32, name, "mu"))) return st;
    if ((st = mmu_check_dtype(log_b, MMU_FLOAT32, name, "log_b"))) return st;
    if ((st = check_reduction(red, name))) return st;
    if (!mmu_same_shape(x, mu) || !mmu_same_shape(x, log_b))
        return mmu_fail(MMU_EVALUE, "%s: x %s, mu %s and log_b %s must have the same shape", name, mmu_shape_str(x),
                        mmu_shape_str(mu), mmu_shape_str(log_b));
    if (!(eps > 0.0 && eps < 0.5))
        return mmu_fail(MMU_EVALUE, "%s: eps must be in (0, 0.5), got %g", name, eps);
    mmu_sync_threads();
    const float *px = mmu_f32(x), *pm = mmu_f32(mu), *pb = mmu_f32(log_b);
    float a = (float)(1.0 - 2.0 * eps), e = (float)eps;
    int64_t n = x->numel;
    if (red == MMU_REDUCTION_NONE) {
        if ((st = mmu_tensor_empty_like(out, x))) return st;
        float *o = mmu_f32(*out);
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN / 8)
        for (int64_t i = 0; i < n; i++) o[i] = ll_value(px[i], pm[i], pb[i], a, e);
    } else {
        if ((st = mmu_tensor_empty(out, MMU_FLOAT32, 0, NULL))) return st;
        int64_t nch = (n + CHUNK - 1) / CHUNK;
        double part_buf[64], *part = nch <= 64 ? part_buf : mmu_alloc(nch * sizeof(double));
        if (!part) {
            MMU_CLEAR(*out);
            return mmu_fail(MMU_ENOMEM, "%s: out of memory", name);
        }
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN / 8)
        for (int64_t c = 0; c < nch; c++) {
            int64_t lo = c * CHUNK, hi = lo + CHUNK < n ? lo + CHUNK : n, i = lo;
            double acc[16] = {0};
            for (; i + 16 <= hi; i += 16) /* float lanes, then double: see regression_sum */
                for (int l = 0; l < 16; l++) acc[l] += ll_value(px[i + l], pm[i + l], pb[i + l], a, e);
            for (; i < hi; i++) acc[i % 16] += ll_value(px[i], pm[i], pb[i], a, e);
            double t = 0.0;
            for (int l = 0; l < 16; l++) t += acc[l];
            part[c] = t;
        }
        double s = 0.0;
        for (int64_t c = 0; c < nch; c++) s += part[c];
        if (part != part_buf) mmu_free(part, nch * sizeof(double));
        mmu_f32(*out)[0] = (float)(red == MMU_REDUCTION_MEAN ? s / (double)n : s);
    }
    mmu_node *nd = NULL;
    mmu_tensor *ins[3] = {x, mu, log_b};
    if ((st = mmu_record(&nd, *out, MMU_OP_LOGIT_LAPLACE_LOSS, 3, ins))) {
        MMU_CLEAR(*out);
        return st;
    }
    if (nd) {
        mmu_save(nd, 0, x);
        mmu_save(nd, 1, mu);
        mmu_save(nd, 2, log_b);
        nd->ctx.i[0] = red;
        nd->ctx.f[0] = eps;
    }
    return MMU_OK;
}

// g (...) or () -> gin[0] (x), gin[1] (mu), gin[2] (log_b), one pass
mmu_status mmu_logit_laplace_loss_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    mmu_tensor *x = n->saved[0], *mu = n->saved[1], *log_b = n->saved[2];
    mmu_reduction red = (mmu_reduction)n->ctx.i[0];
    double eps = n->ctx.f[0];
    mmu_status st;
    for (int k = 0; k < 3; k++)
        if (n->inputs[k].needs_grad && (st = mmu_tensor_empty_like(&gin[k], x))) {
            for (int j = 0; j < k; j++) MMU_CLEAR(gin[j]);
            return st;
        }
    mmu_sync_threads();
    const float *px = mmu_f32(x), *pm = mmu_f32(mu), *pb = mmu_f32(log_b), *pg = mmu_f32(g);
    /* mu's and log_b's gradients are always written (one loop shape); one that is not
     * wanted goes to scratch (rare: both are the decoder's outputs) */
    size_t scratch_bytes = (size_t)(!gin[1] + !gin[2]) * (size_t)x->numel * sizeof(float);
    float *scratch = scratch_bytes ? mmu_alloc(scratch_bytes) : NULL;
    if (scratch_bytes && !scratch) {
        for (int k = 0; k < 3; k++) MMU_CLEAR(gin[k]);
        return mmu_fail(MMU_ENOMEM, "logit_laplace_loss backward: out of memory");
    }
    float *gx = gin[0] ? mmu_f32(gin[0]) : NULL, *gm = gin[1] ? mmu_f32(gin[1]) : scratch,
          *gb = gin[2] ? mmu_f32(gin[2]) : (gin[1] ? scratch : scratch + x->numel);
    float a = (float)(1.0 - 2.0 * eps), e = (float)eps;
    int64_t len = x->numel;
    /* g is a scalar only when reduced: for 'none' it may be empty (pg[0] would read past it) */
    float s = red == MMU_REDUCTION_NONE ? 0.0f : red == MMU_REDUCTION_MEAN ? pg[0] / (float)len : pg[0];
    int64_t nch = (len + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (len > MMU_PAR_GRAIN / 8)
    for (int64_t c = 0; c < nch; c++) {
        int64_t lo = c * CHUNK, hi = lo + CHUNK < len ? lo + CHUNK : len;
        /* one vectorised loop per case: the common one (x is data, the loss reduced) has no
         * per-element tests and reads no gradient array */
#define LL_BWD(GI, GX)                                                                           \
        for (int64_t i = lo; i < hi; i++) {                                                      \
            float gi = GI;                                                                       \
            float xp = a * px[i] + e, lx = mmu_log(xp), l1x = mmu_log(1.0f - xp);                \
            float d = lx - l1x - pm[i], ib = mmu_exp(-pb[i]);                                    \
            float sg = d > 0.0f ? 1.0f : d < 0.0f ? -1.0f : 0.0f;                                \
            gm[i] = -sg * ib * gi;                                                               \
            gb[i] = (1.0f - fabsf(d) * ib) * gi;                                                 \
            if (GX) gx[i] = a * (sg * ib * (1.0f / xp + 1.0f / (1.0f - xp)) + 1.0f / xp - 1.0f / (1.0f - xp)) * gi; \
        }
        if (red != MMU_REDUCTION_NONE) {
            if (gx) LL_BWD(s, 1) else LL_BWD(s, 0)
        } else {
            if (gx) LL_BWD(pg[i], 1) else LL_BWD(pg[i], 0)
        }
#undef LL_BWD
    }
    if (scratch) mmu_free(scratch, scratch_bytes);
    return MMU_OK;
}
