/* Rotary position embeddings (RoPE), rotate-half convention (GPT-NeoX,
 * LLaMA in Hugging Face form): with h = D/2, pair (x[j], x[j+h]) is rotated by
 * the angle whose cos/sin sit at columns j and j+h of cos/sin:
 *
 *   out = x·cos + rotate_half(x)·sin,   rotate_half(x) = (-x[h:], x[:h])
 *
 * cos/sin (L, D) come from mmu.functional.rotary_cos_sin (columns j and j+h
 * hold the same angle). The op is linear in x; its backward is the transposed
 * map, which for such cos/sin is the inverse rotation of the gradient:
 *
 *   dx = g·cos + rotate_halfᵀ(g·sin),   rotate_halfᵀ(y) = (y[h:], -y[:h])
 *
 * One pass over x, no temporaries (torch's formula runs four elementwise ops
 * and a cat). */
#include <string.h>

#include "ops.h"

/* x rows of D, cos/sin rows of D; row r uses cos/sin row r % L. inverse
 * applies the transposed map (the backward). */
static void rotate(float *restrict out, const float *restrict x, const float *restrict c, const float *restrict s,
                   int64_t rows, int64_t L, int64_t D, int inverse) {
    int64_t h = D / 2;
#pragma omp parallel for schedule(static) if (rows * D > MMU_PAR_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * D, *cr = c + (r % L) * D, *sr = s + (r % L) * D;
        float *o = out + r * D;
        if (!inverse) {
            for (int64_t j = 0; j < h; j++) o[j] = xr[j] * cr[j] - xr[j + h] * sr[j];
            for (int64_t j = h; j < D; j++) o[j] = xr[j] * cr[j] + xr[j - h] * sr[j];
        } else {
            for (int64_t j = 0; j < h; j++) o[j] = xr[j] * cr[j] + xr[j + h] * sr[j + h];
            for (int64_t j = h; j < D; j++) o[j] = xr[j] * cr[j] - xr[j - h] * sr[j - h];
        }
    }
}

static mmu_status check(mmu_tensor *x, mmu_tensor *c, mmu_tensor *s) {
    const char *op = "apply_rotary";
    mmu_status st;
    if ((st = mmu_check_dtype(x, MMU_FLOAT32, op, "x")) || (st = mmu_check_dtype(c, MMU_FLOAT32, op, "cos")) ||
        (st = mmu_check_dtype(s, MMU_FLOAT32, op, "sin")))
        return st;
    if (x->ndim < 2)
        return mmu_fail(MMU_EVALUE, "apply_rotary: x must be (..., L, D), got %s", mmu_shape_str(x));
    int64_t L = x->shape[x->ndim - 2], D = x->shape[x->ndim - 1];
    if (D % 2)
        return mmu_fail(MMU_EVALUE, "apply_rotary: the last dim of x %s must be even", mmu_shape_str(x));
    if (!mmu_same_shape(c, s))
        return mmu_fail(MMU_EVALUE, "apply_rotary: cos %s and sin %s must have the same shape", mmu_shape_str(c),
                        mmu_shape_str(s));
    /* cos (L, D), or with leading dims of size 1 ((1, 1, L, D)) */
    int ok = c->ndim >= 2 && c->shape[c->ndim - 2] == L && c->shape[c->ndim - 1] == D && c->numel == L * D;
    if (!ok)
        return mmu_fail(MMU_EVALUE, "apply_rotary: cos/sin of shape %s do not match x %s: expected (L, D) = (%lld, %lld)",
                        mmu_shape_str(c), mmu_shape_str(x), (long long)L, (long long)D);
    return MMU_OK;
}

// x (..., L, D), cos, sin (L, D) -> out (..., L, D)
mmu_status mmu_apply_rotary(mmu_tensor **out, mmu_tensor *x, mmu_tensor *c, mmu_tensor *s) {
    mmu_status st = check(x, c, s);
    if (st) return st;
    if ((st = mmu_tensor_empty_like(out, x))) return st;
    int64_t L = x->shape[x->ndim - 2], D = x->shape[x->ndim - 1];
    if (x->numel) rotate(mmu_f32(*out), mmu_f32(x), mmu_f32(c), mmu_f32(s), x->numel / D, L, D, 0);
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
    mmu_status st = mmu_tensor_empty(&gin[0], MMU_FLOAT32, in->ndim, in->shape);
    if (st) return st;
    int64_t L = in->shape[in->ndim - 2], D = in->shape[in->ndim - 1];
    if (g->numel) rotate(mmu_f32(gin[0]), mmu_f32(g), mmu_f32(n->saved[0]), mmu_f32(n->saved[1]), g->numel / D, L, D, 1);
    return MMU_OK;
}
