/* Inference linear layers that save a pass over their output (no autograd node: the Python side refuses
 * inputs that need grad). A transformer layer of Show-o's T2I image block (Phi's parallel residual,
 * x + attn(h) + fc2(gelu(fc1(h)))) runs its four GEMMs with them and no separate GELU or adds:
 *   linear_gelu_tanh:  out (..., OUT) = gelu_tanh(x wᵀ + b)   (oneDNN eltwise post-op)
 *   linear_add_:       acc (..., OUT) += x wᵀ + b, in place   (oneDNN sum post-op)
 * x (..., IN), w (OUT, IN), b (OUT,) or NULL. */
#include "../dnnl/mmu_dnnl.h"
#include "ops.h"

static mmu_status check(const char *op, mmu_tensor *x, mmu_tensor *w, mmu_tensor *b, int64_t *R) {
    mmu_status st;
    if ((st = mmu_check_dtype(x, MMU_FLOAT32, op, "x")) || (st = mmu_check_dtype(w, MMU_FLOAT32, op, "weight")) ||
        (b && (st = mmu_check_dtype(b, MMU_FLOAT32, op, "bias"))))
        return st;
    if (w->ndim != 2 || w->shape[0] < 1 || w->shape[1] < 1)
        return mmu_fail(MMU_EVALUE, "%s: weight must be (OUT, IN) with OUT, IN >= 1, got %s", op, mmu_shape_str(w));
    if (x->ndim < 1 || x->shape[x->ndim - 1] != w->shape[1])
        return mmu_fail(MMU_EVALUE, "%s: x must be (..., IN = %lld) for weight %s, got %s", op, (long long)w->shape[1],
                        mmu_shape_str(w), mmu_shape_str(x));
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))
        return mmu_fail(MMU_EVALUE, "%s: bias must be (OUT = %lld,), got %s", op, (long long)w->shape[0],
                        mmu_shape_str(b));
    *R = x->numel / w->shape[1];
    return MMU_OK;
}

mmu_status mmu_linear_gelu_tanh(mmu_tensor **out, mmu_tensor *x, mmu_tensor *w, mmu_tensor *b) {
    const char *op = "linear_gelu_tanh";
    int64_t R = 0, shape[MMU_MAX_DIMS];
    mmu_status st;
    *out = NULL;
    if ((st = check(op, x, w, b, &R))) return st;
    for (int d = 0; d < x->ndim - 1; d++) shape[d] = x->shape[d];
    shape[x->ndim - 1] = w->shape[0];
    if ((st = mmu_tensor_empty(out, MMU_FLOAT32, x->ndim, shape))) return st;
    if (R > 0 && (st = mmu_dnnl_linear_post(R, w->shape[1], w->shape[0], mmu_f32(x), mmu_f32(w), b ? mmu_f32(b) : NULL,
                                            mmu_f32(*out), MMU_LINEAR_POST_GELU_TANH)))
        MMU_CLEAR(*out);
    return st;
}

mmu_status mmu_linear_add_(mmu_tensor *acc, mmu_tensor *x, mmu_tensor *w, mmu_tensor *b) {
    const char *op = "linear_add_";
    int64_t R = 0;
    mmu_status st;
    if ((st = check(op, x, w, b, &R)) || (st = mmu_check_dtype(acc, MMU_FLOAT32, op, "acc"))) return st;
    int same = acc->ndim == x->ndim && acc->shape[acc->ndim - 1] == w->shape[0];
    for (int d = 0; same && d < x->ndim - 1; d++) same = acc->shape[d] == x->shape[d];
    if (!same)
        return mmu_fail(MMU_EVALUE, "%s: acc must be x's shape %s with the last dim OUT = %lld, got %s", op,
                        mmu_shape_str(x), (long long)w->shape[0], mmu_shape_str(acc));
    if (acc->storage == x->storage || acc->storage == w->storage || (b && acc->storage == b->storage))
        return mmu_fail(MMU_EVALUE, "%s: acc must not share memory with x, weight or bias (it is written while they "
                        "are read)", op);
    if (R > 0 && (st = mmu_dnnl_linear_post(R, w->shape[1], w->shape[0], mmu_f32(x), mmu_f32(w), b ? mmu_f32(b) : NULL,
                                            mmu_f32(acc), MMU_LINEAR_POST_ADD)))
        return st;
    mmu_bump_version(acc);
    return MMU_OK;
}
