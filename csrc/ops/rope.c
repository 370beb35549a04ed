/* Rotary position embeddings (RoPE), rotate-half convention (GPT-NeoX,
 * LLaMA in Hugging Face form): x (..., L, D), cos/sin (..., L, R) with R <= D
 * even. The first R dims of x rotate, with h = R/2: pair (x[j], x[j+h]) is
 * rotated by the angle whose cos/sin sit at columns j and j+h of cos/sin:
 *
 *   out[:R] = x[:R]·cos + rotate_half(x[:R])·sin,   rotate_half(y) = (-y[h:], y[:h])
 *   out[R:] = x[R:]                                  (partial rotary: Phi's 0.5)
 *
 * cos/sin come from mmu.functional.rotary_cos_sin (columns j and j+h hold the
 * same angle). Their dims before (L, R) broadcast against x's (each 1 or equal,
 * right-aligned), so one table (L, R) serves every batch and head, and a
 * (B, 1, L, R) table gives each batch row its own positions (left-padded
 * batches) without expanding anything. The op is linear in x; its backward is
 * the transposed map, which for such cos/sin is the inverse rotation:
 *
 *   dx[:R] = g·cos + rotate_halfᵀ(g·sin),   rotate_halfᵀ(y) = (y[h:], -y[:h]);   dx[R:] = g[R:]
 *
 * One pass over x, no temporaries (torch's formula runs four elementwise ops,
 * a slice and two cats). */
#include <string.h>

#include "ops.h"

/* Where each (outer index of x) finds its cos/sin rows: x's dims before (L, D)
 * are nd_outer dims of sizes outer[]; cstride[k] is the row-block stride of
 * cos along dim k (0 where cos broadcasts). */
typedef struct {
    int nd_outer;
    int64_t outer[MMU_MAX_DIMS];
    int64_t cstride[MMU_MAX_DIMS];
} table_map;

static int64_t table_block(const table_map *m, int64_t o) {
    int64_t off = 0;
    for (int k = m->nd_outer - 1; k >= 0; k--) {
        off += (o % m->outer[k]) * m->cstride[k];
        o /= m->outer[k];
    }
    return off;
}

/* x rows of D (rows = outer * L), cos/sin rows of R; row r = (o, l) uses table
 * row table_block(o) * L + l. inverse applies the transposed map (the backward). */
static void rotate(float *restrict out, const float *restrict x, const float *restrict c, const float *restrict s,
                   const table_map *m, int64_t rows, int64_t L, int64_t D, int64_t R, int inverse) {
    int64_t h = R / 2;
#pragma omp parallel for schedule(static) if (rows * D > MMU_PAR_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t trow = table_block(m, r / L) * L + r % L;
        const float *xr = x + r * D, *cr = c + trow * R, *sr = s + trow * R;
        float *o = out + r * D;
        if (!inverse) {
            for (int64_t j = 0; j < h; j++) o[j] = xr[j] * cr[j] - xr[j + h] * sr[j];
            for (int64_t j = h; j < R; j++) o[j] = xr[j] * cr[j] + xr[j - h] * sr[j];
        } else {
            for (int64_t j = 0; j < h; j++) o[j] = xr[j] * cr[j] + xr[j + h] * sr[j + h];
            for (int64_t j = h; j < R; j++) o[j] = xr[j] * cr[j] - xr[j - h] * sr[j - h];
        }
        if (R < D) memcpy(o + R, xr + R, (size_t)(D - R) * sizeof(float));
    }
}

/* x (..., L, D) and a cos/sin shape (..., L, R) -> the map from x's outer
 * index to cos's row block; 0 if they do not fit. */
static int make_map(table_map *m, int xnd, const int64_t *xs, int cnd, const int64_t *cs) {
    m->nd_outer = xnd - 2;
    int64_t stride = 1;
    for (int k = xnd - 3; k >= 0; k--) {
        int ck = k - (xnd - cnd);  // cos's dim aligned with x's dim k (< 0: absent = broadcast)
        int64_t csize = ck >= 0 ? cs[ck] : 1;
        if (csize != 1 && csize != xs[k]) return 0;
        m->outer[k] = xs[k];
        m->cstride[k] = csize == 1 ? 0 : stride;
        stride *= csize;
    }
    return 1;
}

static mmu_status check(mmu_tensor *x, mmu_tensor *c, mmu_tensor *s, table_map *m) {
    const char *op = "apply_rotary";
    mmu_status st;
    if ((st = mmu_check_dtype(x, MMU_FLOAT32, op, "x")) || (st = mmu_check_dtype(c, MMU_FLOAT32, op, "cos")) ||
        (st = mmu_check_dtype(s, MMU_FLOAT32, op, "sin")))
        return st;
    if (x->ndim < 2)
        return mmu_fail(MMU_EVALUE, "apply_rotary: x must be (..., L, D), got %s", mmu_shape_str(x));
    if (!mmu_same_shape(c, s))
        return mmu_fail(MMU_EVALUE, "apply_rotary: cos %s and sin %s must have the same shape", mmu_shape_str(c),
                        mmu_shape_str(s));
    int64_t L = x->shape[x->ndim - 2], D = x->shape[x->ndim - 1];
    /* cos (L, R), (1, 1, L, R) or per batch (B, 1, L, R): dims before (L, R) broadcast against x's */
    if (c->ndim < 2 || c->ndim > x->ndim || c->shape[c->ndim - 2] != L)
        return mmu_fail(MMU_EVALUE, "apply_rotary: cos/sin of shape %s do not match x %s: expected (..., L, R) "
                        "with L = %lld and at most %d dims", mmu_shape_str(c), mmu_shape_str(x), (long long)L, x->ndim);
    int64_t R = c->shape[c->ndim - 1];
    if (R <= 0 || R % 2 || R > D)
        return mmu_fail(MMU_EVALUE, "apply_rotary: the rotary width R = %lld (last dim of cos/sin %s) must be even, "
                        "positive and at most the last dim of x %s", (long long)R, mmu_shape_str(c), mmu_shape_str(x));
    if (!make_map(m, x->ndim, x->shape, c->ndim, c->shape))
        return mmu_fail(MMU_EVALUE, "apply_rotary: the leading dims of cos/sin %s do not broadcast against x %s "
                        "(each must be 1 or equal to x's)", mmu_shape_str(c), mmu_shape_str(x));
    return MMU_OK;
}

// x (..., L, D), cos, sin (..., L, R) -> out (..., L, D)
mmu_status mmu_apply_rotary(mmu_tensor **out, mmu_tensor *x, mmu_tensor *c, mmu_tensor *s) {
    table_map m;
    mmu_status st = check(x, c, s, &m);
    if (st) return st;
    if ((st = mmu_tensor_empty_like(out, x))) return st;
    int64_t L = x->shape[x->ndim - 2], D = x->shape[x->ndim - 1], R = c->shape[c->ndim - 1];
    if (x->numel) rotate(mmu_f32(*out), mmu_f32(x), mmu_f32(c), mmu_f32(s), &m, x->numel / D, L, D, R, 0);
    mmu_node *n = NULL;
    if ((st = mmu_record(&n, *out, MMU_OP_ROTARY, 1, &x))) goto fail;
    if (n) {
        mmu_save(n, 0, c);
        mmu_save(n, 1, s);
    }
    return MMU_OK;
fail:
    MMU_CLEAR(*out);
    return st;
}

// g (..., L, D) -> dx
mmu_status mmu_rotary_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    if (!n->inputs[0].needs_grad) return MMU_OK;
    const mmu_edge *in = &n->inputs[0];
    mmu_tensor *c = n->saved[0];
    table_map m;
    if (!make_map(&m, in->ndim, in->shape, c->ndim, c->shape))  // checked at the forward
        return mmu_fail(MMU_EVALUE, "apply_rotary backward: cos/sin %s do not fit x", mmu_shape_str(c));
    mmu_status st = mmu_tensor_empty(&gin[0], MMU_FLOAT32, in->ndim, in->shape);
    if (st) return st;
    int64_t L = in->shape[in->ndim - 2], D = in->shape[in->ndim - 1], R = c->shape[c->ndim - 1];
    if (g->numel) rotate(mmu_f32(gin[0]), mmu_f32(g), mmu_f32(c), mmu_f32(n->saved[1]), &m, g->numel / D, L, D, R, 1);
    return MMU_OK;
}
