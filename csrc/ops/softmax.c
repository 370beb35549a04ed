/* softmax / log_softmax along one dim, on oneDNN's softmax primitives.
 *
 * The tensor is seen as (outer, axis, inner) around the softmax dim, which is
 * exactly oneDNN's 3-D problem with axis 1 (no transposes for any dim). The
 * backward needs only the forward's output (dst), which is saved instead of
 * the input: y·(g - Σ g·y) for softmax, g - exp(y)·Σ g for log_softmax. */
#include "ops.h"
#include "../dnnl/mmu_dnnl.h"

/* x's shape around dim d -> (outer, axis, inner); a 0-d tensor is (1, 1, 1) */
static void split_dims(const int64_t *shape, int ndim, int d, int64_t *outer, int64_t *axis, int64_t *inner) {
    *outer = *axis = *inner = 1;
    if (ndim == 0) return;
    for (int k = 0; k < d; k++) *outer *= shape[k];
    *axis = shape[d];
    for (int k = d + 1; k < ndim; k++) *inner *= shape[k];
}

// x (..., L, ...) -> out (same shape), normalised along dim (of length L)
mmu_status mmu_softmax(mmu_tensor **out, mmu_tensor *x, int64_t dim, int log) {
    const char *name = log ? "log_softmax" : "softmax";
    mmu_status st;
    int d;
    if ((st = mmu_check_dtype(x, MMU_FLOAT32, name, "input"))) return st;
    if ((st = mmu_wrap_dim(&d, dim, x->ndim, name))) return st;
    int64_t outer, axis, inner;
    split_dims(x->shape, x->ndim, d, &outer, &axis, &inner);
    if ((st = mmu_tensor_empty_like(out, x))) return st;
    /* a scalar is its own axis of length 1: softmax 1, log_softmax 0 (like torch) */
    st = mmu_dnnl_softmax_fwd(log, mmu_f32(x), mmu_f32(*out), outer, axis, inner);
    mmu_node *n = NULL;
    if (!st) st = mmu_record(&n, *out, log ? MMU_OP_LOG_SOFTMAX : MMU_OP_SOFTMAX, 1, &x);
    if (!st && n) {
        n->ctx.i[0] = d;
        st = mmu_save_output(n, 0, *out);
    }
    if (st) MMU_CLEAR(*out);
    return st;
}

// g (same shape as x) -> dx, from the saved output y
mmu_status mmu_softmax_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    if (!n->inputs[0].needs_grad) return MMU_OK;
    const mmu_edge *in = &n->inputs[0];
    int64_t outer, axis, inner;
    split_dims(in->shape, in->ndim, (int)n->ctx.i[0], &outer, &axis, &inner);
    mmu_status st = mmu_tensor_empty(&gin[0], MMU_FLOAT32, in->ndim, in->shape);
    if (st) return st;
    return mmu_dnnl_softmax_bwd(n->op == MMU_OP_LOG_SOFTMAX, mmu_f32(n->saved[0]), mmu_f32(g), mmu_f32(gin[0]),
                                outer, axis, inner);
}
