/* Reductions: sum, mean, amax, amin over any set of dims; argmax/argmin;
 * cumsum (a running sum along one dim, at the end of the file).
 *
 * A reduction over several dims is done as successive single-dim reductions,
 * each seen as (outer, len, inner) on the contiguous layout: with inner == 1
 * every output is a contiguous row (16 independent accumulators so the
 * compiler vectorises it); with inner > 1 an output row is the sum of `len`
 * contiguous rows (vectorised across inner). Work is split over a fixed set of
 * chunks, independent of the thread count, so results are bit-identical for
 * any number of threads. */
#include <math.h>
#include <string.h>

#include "ops.h"

static const char *red_name[] = {"sum", "mean", "amax", "amin"};
static const mmu_op red_op[] = {MMU_OP_SUM, MMU_OP_MEAN, MMU_OP_AMAX, MMU_OP_AMIN};

#define LANES 16

/* reduce a contiguous row of n floats */
static float row_reduce(const float *x, int64_t n, int is_max, int is_min) {
    float acc[LANES];
    float init = is_max ? -INFINITY : is_min ? INFINITY : 0.0f;
    for (int l = 0; l < LANES; l++) acc[l] = init;
    int64_t i = 0;
    if (is_max) {
        for (; i + LANES <= n; i += LANES)
            for (int l = 0; l < LANES; l++) acc[l] = x[i + l] > acc[l] || x[i + l] != x[i + l] ? x[i + l] : acc[l];
        for (; i < n; i++) acc[0] = x[i] > acc[0] || x[i] != x[i] ? x[i] : acc[0];
        float r = acc[0];
        for (int l = 1; l < LANES; l++) r = acc[l] > r || acc[l] != acc[l] ? acc[l] : r;
        return r;
    }
    if (is_min) {
        for (; i + LANES <= n; i += LANES)
            for (int l = 0; l < LANES; l++) acc[l] = x[i + l] < acc[l] || x[i + l] != x[i + l] ? x[i + l] : acc[l];
        for (; i < n; i++) acc[0] = x[i] < acc[0] || x[i] != x[i] ? x[i] : acc[0];
        float r = acc[0];
        for (int l = 1; l < LANES; l++) r = acc[l] < r || acc[l] != acc[l] ? acc[l] : r;
        return r;
    }
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) acc[l] += x[i + l];
    for (; i < n; i++) acc[i % LANES] += x[i];
    /* pairwise combine of the lanes */
    for (int w = LANES / 2; w > 0; w /= 2)
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    return acc[0];
}

/* x (outer, len, inner) -> out (outer, inner) */
static void reduce_one(float *out, const float *x, int64_t outer, int64_t len, int64_t inner, mmu_reduce_op op) {
    int is_max = op == MMU_RED_AMAX, is_min = op == MMU_RED_AMIN;
    int64_t total = outer * len * inner;
    if (inner == 1 && outer == 1) {
        /* one long row: fixed-size chunks, then a serial combine */
        enum { CHUNK = 1 << 16 };
        int64_t nchunks = (len + CHUNK - 1) / CHUNK;
        float partial_buf[256], *partial = nchunks <= 256 ? partial_buf : mmu_alloc(nchunks * sizeof(float));
        if (!partial) { /* fall back to serial */
            out[0] = row_reduce(x, len, is_max, is_min);
            return;
        }
#pragma omp parallel for schedule(static) if (total > MMU_PAR_GRAIN)
        for (int64_t c = 0; c < nchunks; c++) {
            int64_t lo = c * CHUNK, n = len - lo < CHUNK ? len - lo : CHUNK;
            partial[c] = row_reduce(x + lo, n, is_max, is_min);
        }
        out[0] = row_reduce(partial, nchunks, is_max, is_min);
        if (partial != partial_buf) mmu_free(partial, nchunks * sizeof(float));
        return;
    }
    if (inner == 1) {
#pragma omp parallel for schedule(static) if (total > MMU_PAR_GRAIN)
        for (int64_t o = 0; o < outer; o++) out[o] = row_reduce(x + o * len, len, is_max, is_min);
        return;
    }
    /* inner > 1: split (outer x inner-blocks) among threads */
    enum { BLOCK = 256 };
    int64_t nblk = (inner + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if (total > MMU_PAR_GRAIN)
    for (int64_t t = 0; t < outer * nblk; t++) {
        int64_t o = t / nblk, lo = (t % nblk) * BLOCK, n = inner - lo < BLOCK ? inner - lo : BLOCK;
        float *dst = out + o * inner + lo;
        const float *src = x + o * len * inner + lo;
        memcpy(dst, src, n * sizeof(float));
        for (int64_t l = 1; l < len; l++) {
            const float *row = src + l * inner;
            if (is_max) for (int64_t i = 0; i < n; i++) dst[i] = row[i] > dst[i] || row[i] != row[i] ? row[i] : dst[i];
            else if (is_min) for (int64_t i = 0; i < n; i++) dst[i] = row[i] < dst[i] || row[i] != row[i] ? row[i] : dst[i];
            else for (int64_t i = 0; i < n; i++) dst[i] += row[i];
        }
    }
}

/* keepdim-shaped result; no autograd */
static mmu_status reduce_raw(mmu_tensor **out, mmu_reduce_op op, mmu_tensor *x, unsigned mask) {
    int64_t shape[MMU_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    mmu_tensor *cur = x;
    mmu_tensor_incref(cur);
    int64_t count = 1;
    mmu_status st = MMU_OK;
    if (x->numel == 0) { /* empty: sum 0, mean nan; amax over an empty dim is an error (torch) */
        int empty_reduced = 0;
        for (int d = 0; d < x->ndim; d++)
            if (mask & (1u << d)) {
                empty_reduced |= shape[d] == 0;
                shape[d] = 1;
            }
        if ((op == MMU_RED_AMAX || op == MMU_RED_AMIN) && empty_reduced) {
            mmu_tensor_decref(cur);
            return mmu_fail(MMU_EVALUE, "%s: cannot reduce an empty tensor of shape %s", red_name[op], mmu_shape_str(x));
        }
        mmu_tensor_decref(cur);
        return mmu_tensor_full(out, MMU_FLOAT32, x->ndim, shape, op == MMU_RED_MEAN ? NAN : 0.0);
    }
    for (int d = 0; d < x->ndim; d++) {
        if (!(mask & (1u << d))) continue;
        int64_t outer = 1, inner = 1, len = shape[d];
        for (int k = 0; k < d; k++) outer *= shape[k];
        for (int k = d + 1; k < x->ndim; k++) inner *= shape[k];
        count *= len;
        shape[d] = 1;
        mmu_tensor *next = NULL;
        if ((st = mmu_tensor_empty(&next, MMU_FLOAT32, x->ndim, shape))) break;
        reduce_one(mmu_f32(next), mmu_f32(cur), outer, len, inner, op == MMU_RED_MEAN ? MMU_RED_SUM : op);
        mmu_tensor_decref(cur);
        cur = next;
    }
    if (st) {
        mmu_tensor_decref(cur);
        return st;
    }
    if (cur == x) { /* nothing reduced (0-d input or empty mask): a copy */
        mmu_tensor_decref(cur);
        if ((st = mmu_tensor_clone(&cur, x))) return st;
    }
    if (op == MMU_RED_MEAN) {
        float inv = 1.0f / (float)count, *p = mmu_f32(cur);
        for (int64_t i = 0; i < cur->numel; i++) p[i] *= inv;
    }
    *out = cur;
    return MMU_OK;
}

mmu_status mmu_reduce(mmu_tensor **out, mmu_reduce_op op, mmu_tensor *x, unsigned dim_mask, int keepdim) {
    if (op > MMU_RED_AMIN) return mmu_fail(MMU_EVALUE, "reduce: unknown op %d", (int)op);
    mmu_status st = mmu_check_dtype(x, MMU_FLOAT32, red_name[op], "input");
    if (st) return st;
    dim_mask &= x->ndim ? (1u << x->ndim) - 1 : 0;
    mmu_tensor *kept = NULL;
    if ((st = reduce_raw(&kept, op, x, dim_mask))) return st;
    if (keepdim) {
        *out = kept;
    } else {
        int64_t shape[MMU_MAX_DIMS];
        int nd = 0;
        for (int d = 0; d < x->ndim; d++)
            if (!(dim_mask & (1u << d))) shape[nd++] = x->shape[d];
        st = mmu_tensor_view(out, kept, nd, shape);
        mmu_tensor_decref(kept);
        if (st) return st;
    }
    mmu_node *n = NULL;
    if ((st = mmu_record(&n, *out, red_op[op], 1, &x))) {
        MMU_CLEAR(*out);
        return st;
    }
    if (n) {
        n->ctx.i[0] = dim_mask;
        if (op == MMU_RED_AMAX || op == MMU_RED_AMIN) {
            mmu_save(n, 0, x);
            if ((st = mmu_save_output(n, 1, *out))) MMU_CLEAR(*out);
        }
    }
    return st;
}

mmu_status mmu_reduce_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    if (!n->inputs[0].needs_grad) return MMU_OK;
    mmu_edge *in = &n->inputs[0];
    unsigned mask = (unsigned)n->ctx.i[0];
    int64_t kshape[MMU_MAX_DIMS], count = 1;
    for (int d = 0; d < in->ndim; d++) {
        kshape[d] = (mask & (1u << d)) ? 1 : in->shape[d];
        if (mask & (1u << d)) count *= in->shape[d];
    }
    mmu_tensor *gk = NULL, *full = NULL;
    mmu_status st = mmu_tensor_view(&gk, g, in->ndim, kshape);
    if (!st) st = mmu_expand(&full, gk, in->ndim, in->shape);
    mmu_tensor_decref(gk);
    if (st) return st;
    float *pf = mmu_f32(full);
    int64_t len = full->numel;
    if (n->op == MMU_OP_MEAN) {
        float inv = 1.0f / (float)count;
#pragma omp parallel for schedule(static) if (len > MMU_PAR_GRAIN)
        for (int64_t i = 0; i < len; i++) pf[i] *= inv;
    } else if (n->op == MMU_OP_AMAX || n->op == MMU_OP_AMIN) {
        /* the gradient is shared evenly among the elements equal to the
         * extremum (torch's amax/amin rule) */
        mmu_tensor *ok = NULL, *hit = NULL, *nhit = NULL, *nk = NULL, *nfull = NULL;
        st = mmu_tensor_view(&ok, n->saved[1], in->ndim, kshape);
        if (!st) st = mmu_binary(&hit, MMU_BIN_EQ, n->saved[0], ok);
        if (!st) st = mmu_cast(&nhit, hit, MMU_FLOAT32);
        if (!st) st = reduce_raw(&nk, MMU_RED_SUM, nhit, mask);
        if (!st) st = mmu_expand(&nfull, nk, in->ndim, in->shape);
        if (!st) {
            const float *ph = mmu_f32(nhit), *pc = mmu_f32(nfull);
#pragma omp parallel for schedule(static) if (len > MMU_PAR_GRAIN)
            for (int64_t i = 0; i < len; i++) pf[i] = ph[i] != 0.0f ? pf[i] / pc[i] : 0.0f;
        }
        mmu_tensor_decref(ok);
        mmu_tensor_decref(hit);
        mmu_tensor_decref(nhit);
        mmu_tensor_decref(nk);
        mmu_tensor_decref(nfull);
    }
    if (st) mmu_tensor_decref(full);
    else gin[0] = full;
    return st;
}

mmu_status mmu_argreduce(mmu_tensor **out, int is_max, mmu_tensor *x, int has_dim, int64_t dim, int keepdim) {
    const char *name = is_max ? "argmax" : "argmin";
    mmu_status st = MMU_OK;
    if (x->dtype == MMU_BOOL)
        return mmu_fail(MMU_ETYPE, "%s: input must be float32 or int64, got bool with shape %s", name, mmu_shape_str(x));
    if (x->numel == 0) return mmu_fail(MMU_EVALUE, "%s: cannot reduce an empty tensor of shape %s", name, mmu_shape_str(x));
    int64_t outer = 1, len = x->numel, inner = 1, shape[MMU_MAX_DIMS];
    int nd = 0;
    if (has_dim) {
        int d;
        if ((st = mmu_wrap_dim(&d, dim, x->ndim, name))) return st;
        if (x->ndim) {
            len = x->shape[d];
            for (int k = 0; k < d; k++) outer *= x->shape[k];
            for (int k = d + 1; k < x->ndim; k++) inner *= x->shape[k];
            for (int k = 0; k < x->ndim; k++)
                if (k != d) shape[nd++] = x->shape[k];
                else if (keepdim) shape[nd++] = 1;
        }
    } else if (keepdim) {
        for (int k = 0; k < x->ndim; k++) shape[nd++] = 1;
    }
    if ((st = mmu_tensor_empty(out, MMU_INT64, nd, shape))) return st;
    int64_t *po = mmu_i64(*out);
    if (x->dtype == MMU_INT64) {
        const int64_t *pi = mmu_i64(x);
#pragma omp parallel for schedule(static) if (x->numel > MMU_PAR_GRAIN)
        for (int64_t t = 0; t < outer * inner; t++) {
            int64_t o = t / inner, i = t % inner;
            const int64_t *p = pi + o * len * inner + i;
            int64_t best = p[0], arg = 0;
            for (int64_t l = 1; l < len; l++)
                if (is_max ? p[l * inner] > best : p[l * inner] < best) best = p[l * inner], arg = l;
            po[t] = arg;
        }
        return MMU_OK;
    }
    const float *px = mmu_f32(x);
#pragma omp parallel for schedule(static) if (x->numel > MMU_PAR_GRAIN)
    for (int64_t t = 0; t < outer * inner; t++) {
        int64_t o = t / inner, i = t % inner;
        const float *p = px + o * len * inner + i;
        float best = p[0];
        int64_t arg = 0;
        for (int64_t l = 1; l < len && best == best; l++) { /* NaN wins, like torch */
            float v = p[l * inner];
            if ((is_max ? v > best : v < best) || v != v) {
                best = v;
                arg = l;
            }
        }
        po[t] = arg;
    }
    return MMU_OK;
}

mmu_status mmu_reduce_to_shape(mmu_tensor **out, mmu_tensor *g, int ndim, const int64_t *shape) {
    if (g->ndim == ndim && !memcmp(g->shape, shape, ndim * sizeof *shape)) {
        mmu_tensor_incref(g);
        *out = g;
        return MMU_OK;
    }
    /* g's shape is the broadcast of `shape` with others: sum the leading extra
     * dims and the dims where `shape` has 1, then view as `shape`. */
    int lead = g->ndim - ndim;
    unsigned mask = 0;
    for (int d = 0; d < g->ndim; d++)
        if (d < lead || (shape[d - lead] == 1 && g->shape[d] != 1)) mask |= 1u << d;
    mmu_tensor *summed = NULL;
    mmu_status st;
    if (mask) {
        st = mmu_reduce(&summed, MMU_RED_SUM, g, mask, 1);
        if (st) return st;
    } else {
        summed = g;
        mmu_tensor_incref(g);
    }
    st = mmu_tensor_view(out, summed, ndim, shape);
    mmu_tensor_decref(summed);
    return st;
}

/* ------------------------------------------------------------------ cumsum */
/* Running sums along one dim, accumulated in double (as torch's CPU kernel
 * does), so a long row of float32 does not drift. reverse: sums from the end
 * (out[i] = x[i] + ... + x[n-1]), which is cumsum's backward. */

/* x (outer, len, inner) -> out (outer, len, inner) */
static void cumsum_raw(float *out, const float *x, int64_t outer, int64_t len, int64_t inner, int reverse) {
    int64_t total = outer * len * inner;
    int64_t step = reverse ? -inner : inner, first = reverse ? (len - 1) * inner : 0;
    if (inner == 1) {
#pragma omp parallel for schedule(static) if (total > MMU_PAR_GRAIN && outer > 1)
        for (int64_t o = 0; o < outer; o++) {
            const float *src = x + o * len + first;
            float *dst = out + o * len + first;
            double acc = 0.0;
            for (int64_t l = 0; l < len; l++) {
                acc += src[l * step];
                dst[l * step] = (float)acc;
            }
        }
        return;
    }
    /* inner > 1: a task is one block of positions along inner, summed down len together */
    enum { BLOCK = 256 };
    int64_t nblk = (inner + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if (total > MMU_PAR_GRAIN)
    for (int64_t t = 0; t < outer * nblk; t++) {
        int64_t o = t / nblk, lo = (t % nblk) * BLOCK, n = inner - lo < BLOCK ? inner - lo : BLOCK;
        double acc[BLOCK];
        for (int64_t i = 0; i < n; i++) acc[i] = 0.0;
        const float *src = x + o * len * inner + first + lo;
        float *dst = out + o * len * inner + first + lo;
        for (int64_t l = 0; l < len; l++, src += step, dst += step)
            for (int64_t i = 0; i < n; i++) {
                acc[i] += src[i];
                dst[i] = (float)acc[i];
            }
    }
}

static void cumsum_dims(const mmu_tensor *t, int dim, int64_t *outer, int64_t *len, int64_t *inner) {
    *outer = *inner = 1;
    *len = t->ndim ? t->shape[dim] : 1;
    for (int d = 0; d < dim && d < t->ndim; d++) *outer *= t->shape[d];
    for (int d = dim + 1; d < t->ndim; d++) *inner *= t->shape[d];
}

// x float32 (..., n, ...), dim -> out (x's shape), out[i] = x[0] + ... + x[i] along dim (reverse: x[i] + ... + x[n-1])
mmu_status mmu_cumsum(mmu_tensor **out, mmu_tensor *x, int64_t dim_in, int reverse) {
    mmu_status st = mmu_check_dtype(x, MMU_FLOAT32, "cumsum", "input");
    if (st) return st;
    int dim;
    if ((st = mmu_wrap_dim(&dim, dim_in, x->ndim, "cumsum"))) return st;
    if ((st = mmu_tensor_empty_like(out, x))) return st;
    int64_t outer, len, inner;
    cumsum_dims(x, dim, &outer, &len, &inner);
    mmu_sync_threads();
    if (x->numel) cumsum_raw(mmu_f32(*out), mmu_f32(x), outer, len, inner, reverse);
    mmu_node *n = NULL;
    if ((st = mmu_record(&n, *out, MMU_OP_CUMSUM, 1, &x))) {
        MMU_CLEAR(*out);
        return st;
    }
    if (n) {
        n->ctx.i[0] = dim;
        n->ctx.i[1] = reverse != 0;
    }
    return MMU_OK;
}

// g (x's shape) -> gin[0]: the running sums of g taken the other way
mmu_status mmu_cumsum_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    if (!n->inputs[0].needs_grad) return MMU_OK;
    mmu_status st = mmu_tensor_empty_like(&gin[0], g);
    if (st) return st;
    int64_t outer, len, inner;
    cumsum_dims(g, (int)n->ctx.i[0], &outer, &len, &inner);
    mmu_sync_threads();
    if (g->numel) cumsum_raw(mmu_f32(gin[0]), mmu_f32(g), outer, len, inner, !n->ctx.i[1]);
    return MMU_OK;
}
