/* Cross-entropy of class logits against int64 class indices, fused.
 *
 * torch runs log_softmax then nll_loss: it writes the (N, C) log-probs in the
 * forward and, in the backward, a dense one-hot gradient that log_softmax's
 * backward reads again. Here the forward reads each row of logits twice (max,
 * then sum of exponentials, the target's logit and the row sum for label
 * smoothing, both from cache) and keeps two floats per row: the max and
 * log(sum exp(x - max)). The backward recomputes the softmax from the logits
 * and those two floats and writes the gradient in the same pass.
 *
 * Layout: logits are seen as (N, C, S) with S = d1 * ... * dk (S == 1 for
 * (N, C) and (C,)); a "row" is one (n, s) and its C logits sit S floats apart.
 * S == 1: rows are contiguous and the vector runs along C. S > 1: a block of
 * positions along S is handled together and the vector runs across S (the
 * contiguous axis), so the class axis never needs a transposed copy.
 *
 * Per row, with m the max, ls = log sum exp(x - m), t the target, eps the
 * label smoothing:
 *   nll    = (m - x_t) + ls              (= -log_softmax(x)_t, torch's order)
 *   smooth = (m - mean_c x_c) + ls       (= -mean_c log_softmax(x)_c)
 *   loss   = (1 - eps) nll + eps smooth  (torch: nll*(1-eps) + sum(-logp)*eps/C)
 * Rows whose target is ignore_index give 0 and are left out of the 'mean'
 * denominator (torch divides both terms by the count of kept rows; all rows
 * ignored: 0/0 = nan, with a zero gradient).
 *
 * exp: mmu_exp (core/vmath.h), vectorisable; glibc's expf is not.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../core/vmath.h"
#include "../ops/ops.h"

#define LANES 16
#define SBLK 64 /* positions along S per block when S > 1 */

/* ------------------------------------------------ contiguous rows (S == 1) */

static float lanes_sum(float *acc) {
    for (int w = LANES / 2; w > 0; w /= 2)
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    return acc[0];
}

/* sum exp(x - m); also sum x into *sx when sx != NULL (label smoothing) */
static float row_sumexp(const float *x, int64_t C, float m, float *sx) {
    float acc[LANES] = {0}, accx[LANES] = {0};
    int64_t c = 0;
    if (sx) {
        for (; c + LANES <= C; c += LANES)
            for (int l = 0; l < LANES; l++) {
                acc[l] += mmu_exp(x[c + l] - m);
                accx[l] += x[c + l];
            }
        for (; c < C; c++) {
            acc[c % LANES] += mmu_exp(x[c] - m);
            accx[c % LANES] += x[c];
        }
        *sx = lanes_sum(accx);
    } else {
        for (; c + LANES <= C; c += LANES)
            for (int l = 0; l < LANES; l++) acc[l] += mmu_exp(x[c + l] - m);
        for (; c < C; c++) acc[c % LANES] += mmu_exp(x[c] - m);
    }
    return lanes_sum(acc);
}

/* x (R, C), tgt (R) -> stats (R, 2) = (max, log-sum-exp - max), loss (R) */
static void ce_fwd_rows(float *stats, float *loss, const float *x, const int64_t *tgt, int64_t R, int64_t C,
                        int64_t ignore, float eps) {
#pragma omp parallel for schedule(static) if (R * C > MMU_PAR_GRAIN)
    for (int64_t r = 0; r < R; r++) {
        int64_t t = tgt[r];
        if (t == ignore) {
            stats[2 * r] = stats[2 * r + 1] = 0.0f;
            loss[r] = 0.0f;
            continue;
        }
        const float *row = x + r * C;
        float m = mmu_row_max(row, C), sx = 0.0f;
        float ls = logf(row_sumexp(row, C, m, eps > 0.0f ? &sx : NULL));
        float nll = (m - row[t]) + ls;
        stats[2 * r] = m;
        stats[2 * r + 1] = ls;
        loss[r] = eps > 0.0f ? (1.0f - eps) * nll + eps * ((m - sx / (float)C) + ls) : nll;
    }
}

/* x (R, C), tgt (R), stats (R, 2), scale (R) or one value -> gx (R, C) */
static void ce_bwd_rows(float *gx, const float *x, const int64_t *tgt, const float *stats, const float *gscale,
                        int per_row, float scale0, int64_t R, int64_t C, int64_t ignore, float eps) {
    float k = eps / (float)C, on = 1.0f - eps;
#pragma omp parallel for schedule(static) if (R * C > MMU_PAR_GRAIN)
    for (int64_t r = 0; r < R; r++) {
        float *restrict g = gx + r * C;
        int64_t t = tgt[r];
        if (t == ignore) {
            memset(g, 0, C * sizeof(float));
            continue;
        }
        const float *restrict row = x + r * C;
        float m = stats[2 * r], ls = stats[2 * r + 1], s = per_row ? gscale[r] : scale0;
        for (int64_t c = 0; c < C; c++) g[c] = (mmu_exp((row[c] - m) - ls) - k) * s;
        g[t] = ((mmu_exp((row[t] - m) - ls) - on) - k) * s;
    }
}

/* ------------------------------------------------ strided class axis (S > 1) */

/* x (N, C, S), tgt (N, S) -> stats (N*S, 2), loss (N*S) */
static void ce_fwd_strided(float *stats, float *loss, const float *x, const int64_t *tgt, int64_t N, int64_t C,
                           int64_t S, int64_t ignore, float eps) {
    int64_t nblk = (S + SBLK - 1) / SBLK;
#pragma omp parallel for schedule(static) if (N * C * S > MMU_PAR_GRAIN)
    for (int64_t task = 0; task < N * nblk; task++) {
        int64_t n = task / nblk, s0 = (task % nblk) * SBLK, len = S - s0 < SBLK ? S - s0 : SBLK;
        const float *base = x + n * C * S + s0;
        float m[SBLK], se[SBLK], sx[SBLK];
        for (int64_t j = 0; j < len; j++) {
            m[j] = -INFINITY;
            se[j] = sx[j] = 0.0f;
        }
        for (int64_t c = 0; c < C; c++) {
            const float *row = base + c * S;
            for (int64_t j = 0; j < len; j++) m[j] = row[j] > m[j] ? row[j] : m[j];
        }
        for (int64_t c = 0; c < C; c++) {
            const float *row = base + c * S;
            for (int64_t j = 0; j < len; j++) se[j] += mmu_exp(row[j] - m[j]);
            if (eps > 0.0f)
                for (int64_t j = 0; j < len; j++) sx[j] += row[j];
        }
        for (int64_t j = 0; j < len; j++) {
            int64_t r = n * S + s0 + j, t = tgt[r];
            if (t == ignore) {
                stats[2 * r] = stats[2 * r + 1] = 0.0f;
                loss[r] = 0.0f;
                continue;
            }
            float ls = logf(se[j]), nll = (m[j] - base[t * S + j]) + ls;
            stats[2 * r] = m[j];
            stats[2 * r + 1] = ls;
            loss[r] = eps > 0.0f ? (1.0f - eps) * nll + eps * ((m[j] - sx[j] / (float)C) + ls) : nll;
        }
    }
}

/* x (N, C, S), tgt (N, S), stats (N*S, 2), scale (N*S) or one value -> gx (N, C, S) */
static void ce_bwd_strided(float *gx, const float *x, const int64_t *tgt, const float *stats, const float *gscale,
                           int per_row, float scale0, int64_t N, int64_t C, int64_t S, int64_t ignore, float eps) {
    float k = eps / (float)C, on = 1.0f - eps;
    int64_t nblk = (S + SBLK - 1) / SBLK;
#pragma omp parallel for schedule(static) if (N * C * S > MMU_PAR_GRAIN)
    for (int64_t task = 0; task < N * nblk; task++) {
        int64_t n = task / nblk, s0 = (task % nblk) * SBLK, len = S - s0 < SBLK ? S - s0 : SBLK;
        const float *base = x + n * C * S + s0;
        float *gbase = gx + n * C * S + s0;
        float m[SBLK], ls[SBLK], sc[SBLK];
        int keep[SBLK];
        for (int64_t j = 0; j < len; j++) {
            int64_t r = n * S + s0 + j;
            keep[j] = tgt[r] != ignore;
            m[j] = stats[2 * r];
            ls[j] = stats[2 * r + 1];
            sc[j] = per_row ? gscale[r] : scale0;
        }
        for (int64_t c = 0; c < C; c++) {
            const float *restrict row = base + c * S;
            float *restrict g = gbase + c * S;
            for (int64_t j = 0; j < len; j++) {
                float v = (mmu_exp((row[j] - m[j]) - ls[j]) - k) * sc[j];
                g[j] = keep[j] ? v : 0.0f; /* ignored rows: 0 even for nan logits */
            }
        }
        for (int64_t j = 0; j < len; j++) {
            int64_t t = tgt[n * S + s0 + j];
            if (t == ignore) continue;
            float p = mmu_exp((base[t * S + j] - m[j]) - ls[j]);
            gbase[t * S + j] = ((p - on) - k) * sc[j];
        }
    }
}

/* Deterministic sum of n floats: fixed chunks summed in double, then a serial
 * combine, so the result does not depend on the thread count. */
static double ce_sum(const float *v, int64_t n) {
    enum { CH = 8192 };
    int64_t nch = (n + CH - 1) / CH;
    double part_buf[64], *part = nch <= 64 ? part_buf : mmu_alloc(nch * sizeof(double));
    if (!part) { /* out of scratch: serial, still deterministic */
        double s = 0.0;
        for (int64_t i = 0; i < n; i++) s += v[i];
        return s;
    }
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)
    for (int64_t c = 0; c < nch; c++) {
        int64_t lo = c * CH, hi = lo + CH < n ? lo + CH : n;
        double acc[8] = {0};
        int64_t i = lo;
        for (; i + 8 <= hi; i += 8)
            for (int l = 0; l < 8; l++) acc[l] += v[i + l];
        for (; i < hi; i++) acc[0] += v[i];
        part[c] = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    }
    double s = 0.0;
    for (int64_t c = 0; c < nch; c++) s += part[c];
    if (part != part_buf) mmu_free(part, nch * sizeof(double));
    return s;
}

// logits (N, C, d1..dk) or (C,), target int64 (N, d1..dk) or () -> out (N, d1..dk) / () / ()
mmu_status mmu_cross_entropy(mmu_tensor **out, mmu_tensor *logits, mmu_tensor *target, int64_t ignore_index,
                             double label_smoothing, mmu_reduction red) {
    mmu_status st;
    if ((st = mmu_check_dtype(logits, MMU_FLOAT32, "cross_entropy", "input"))) return st;
    if ((st = mmu_check_dtype(target, MMU_INT64, "cross_entropy", "target"))) return st;
    if (red != MMU_REDUCTION_NONE && red != MMU_REDUCTION_MEAN && red != MMU_REDUCTION_SUM)
        return mmu_fail(MMU_EVALUE, "cross_entropy: unknown reduction %d", (int)red);
    if (!(label_smoothing >= 0.0 && label_smoothing <= 1.0))
        return mmu_fail(MMU_EVALUE, "cross_entropy: label_smoothing must be in [0, 1], got %g", label_smoothing);
    if (logits->ndim == 0)
        return mmu_fail(MMU_EVALUE, "cross_entropy: input must have at least 1 dim (classes), got shape %s "
                        "(target shape %s)", mmu_shape_str(logits), mmu_shape_str(target));
    int ok = target->ndim == logits->ndim - 1;
    if (ok && logits->ndim > 1) {
        ok = target->shape[0] == logits->shape[0];
        for (int d = 1; d < target->ndim && ok; d++) ok = target->shape[d] == logits->shape[d + 1];
    }
    if (!ok) {
        int64_t want[MMU_MAX_DIMS];
        int nd = 0;
        if (logits->ndim > 1) want[nd++] = logits->shape[0];
        for (int d = 2; d < logits->ndim; d++) want[nd++] = logits->shape[d];
        return mmu_fail(MMU_EVALUE, "cross_entropy: input has shape %s but target has shape %s; expected "
                        "target shape %s (input without its class dim %d)", mmu_shape_str(logits),
                        mmu_shape_str(target), mmu_dims_str(nd, want), logits->ndim > 1 ? 1 : 0);
    }
    int64_t N = logits->ndim > 1 ? logits->shape[0] : 1, C = logits->shape[logits->ndim > 1 ? 1 : 0], S = 1;
    for (int d = 2; d < logits->ndim; d++) S *= logits->shape[d];
    int64_t R = N * S, count = 0;
    const int64_t *tgt = mmu_i64(target);
    /* every index is checked before anything reads logits through it */
    for (int64_t r = 0; r < R; r++) {
        int64_t t = tgt[r];
        if (t == ignore_index) continue;
        if (t < 0 || t >= C)
            return mmu_fail(MMU_EINDEX, "cross_entropy: target value %lld is out of bounds for %lld classes "
                            "(input shape %s, target shape %s, ignore_index %lld)", (long long)t, (long long)C,
                            mmu_shape_str(logits), mmu_shape_str(target), (long long)ignore_index);
        count++;
    }
    mmu_sync_threads();

    mmu_tensor *stats = NULL;
    int64_t sshape[2] = {R, 2};
    if ((st = mmu_tensor_empty(&stats, MMU_FLOAT32, 2, sshape))) return st;
    float *loss = NULL;
    if (red == MMU_REDUCTION_NONE) {
        if ((st = mmu_tensor_empty(out, MMU_FLOAT32, target->ndim, target->shape))) goto fail;
        loss = mmu_f32(*out);
    } else {
        if ((st = mmu_tensor_empty(out, MMU_FLOAT32, 0, NULL))) goto fail;
        if (R && !(loss = mmu_alloc(R * sizeof(float)))) {
            st = mmu_fail(MMU_ENOMEM, "cross_entropy: out of memory for %lld row losses", (long long)R);
            goto fail;
        }
    }
    float eps = (float)label_smoothing;
    if (S == 1) ce_fwd_rows(mmu_f32(stats), loss, mmu_f32(logits), tgt, R, C, ignore_index, eps);
    else ce_fwd_strided(mmu_f32(stats), loss, mmu_f32(logits), tgt, N, C, S, ignore_index, eps);
    if (red != MMU_REDUCTION_NONE) {
        double total = R ? ce_sum(loss, R) : 0.0;
        if (loss) mmu_free(loss, R * sizeof(float));
        /* 'mean' with nothing kept is 0/0 = nan, as torch */
        mmu_f32(*out)[0] = (float)(red == MMU_REDUCTION_MEAN ? total / (double)count : total);
    }

    mmu_node *n = NULL;
    mmu_tensor *ins[2] = {logits, target};
    if ((st = mmu_record(&n, *out, MMU_OP_CROSS_ENTROPY, 2, ins))) goto fail;
    if (n) {
        mmu_save(n, 0, logits);
        mmu_save(n, 1, target);
        mmu_save(n, 2, stats);
        n->ctx.i[0] = ignore_index;
        n->ctx.i[1] = red;
        n->ctx.i[2] = count;
        n->ctx.f[0] = eps;
    }
    mmu_tensor_decref(stats);
    return MMU_OK;
fail:
    mmu_tensor_decref(stats);
    MMU_CLEAR(*out);
    return st;
}

// g (N, d1..dk) for 'none', () otherwise -> gin[0] like logits (N, C, d1..dk)
mmu_status mmu_cross_entropy_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    if (!n->inputs[0].needs_grad) return MMU_OK;
    mmu_tensor *logits = n->saved[0], *target = n->saved[1], *stats = n->saved[2];
    int64_t ignore = n->ctx.i[0], count = n->ctx.i[2];
    mmu_reduction red = (mmu_reduction)n->ctx.i[1];
    float eps = (float)n->ctx.f[0];
    int64_t N = logits->ndim > 1 ? logits->shape[0] : 1, C = logits->shape[logits->ndim > 1 ? 1 : 0], S = 1;
    for (int d = 2; d < logits->ndim; d++) S *= logits->shape[d];
    mmu_status st = mmu_tensor_empty_like(&gin[0], logits);
    if (st) return st;
    if (logits->numel == 0) return MMU_OK;
    mmu_sync_threads();
    int per_row = red == MMU_REDUCTION_NONE;
    float scale0 = 0.0f;
    if (!per_row) {
        float g0 = mmu_f32(g)[0];
        /* count == 0: every row is ignored and gets 0, like torch */
        scale0 = red == MMU_REDUCTION_MEAN ? (count ? g0 / (float)count : 0.0f) : g0;
    }
    const float *gs = per_row ? mmu_f32(g) : NULL;
    if (S == 1)
        ce_bwd_rows(mmu_f32(gin[0]), mmu_f32(logits), mmu_i64(target), mmu_f32(stats), gs, per_row, scale0,
                    N, C, ignore, eps);
    else
        ce_bwd_strided(mmu_f32(gin[0]), mmu_f32(logits), mmu_i64(target), mmu_f32(stats), gs, per_row, scale0,
                       N, C, S, ignore, eps);
    return MMU_OK;
}
