/* A linear layer with a oneDNN post-op (declared in mmu_dnnl.h), for inference paths that would
 * otherwise make a second pass over the output: out = gelu_tanh(x wᵀ + b) (the activation applied
 * to each output tile while it is in cache), or out += x wᵀ + b (the sum post-op reads out inside the
 * GEMM kernel: a residual stream updated in place). Primitives are cached like every other. */
#include "dnnl_internal.h"

#define LINEAR_POST_TAG 0x6c706f7374 /* a key prefix no other primitive kind uses */

typedef struct { int64_t R, IN, OUT; int has_bias, mode; } linear_post_ctx;

static dnnl_status_t create_linear_post(dnnl_primitive_desc_t *pd, dnnl_engine_t eng, const_dnnl_primitive_attr_t attr,
                                        void *vctx) {
    linear_post_ctx *x = vctx;
    dnnl_memory_desc_t mds[4] = {0};
    dnnl_primitive_attr_t post_attr = NULL;
    dnnl_post_ops_t post_ops = NULL;
    dnnl_status_t s;
    dnnl_dims_t src = {x->R, x->IN}, wei = {x->IN, x->OUT}, bias = {1, x->OUT}, dst = {x->R, x->OUT};
    /* w (OUT, IN) row-major read as the (IN, OUT) weights: format ba */
    if ((s = dnnl_memory_desc_create_with_tag(&mds[0], 2, src, dnnl_f32, dnnl_ab)) ||
        (s = dnnl_memory_desc_create_with_tag(&mds[1], 2, wei, dnnl_f32, dnnl_ba)) ||
        (x->has_bias && (s = dnnl_memory_desc_create_with_tag(&mds[2], 2, bias, dnnl_f32, dnnl_ab))) ||
        (s = dnnl_memory_desc_create_with_tag(&mds[3], 2, dst, dnnl_f32, dnnl_ab)))
        goto done;
    if ((s = dnnl_primitive_attr_clone(&post_attr, attr)) || (s = dnnl_post_ops_create(&post_ops)))
        goto done;
    s = x->mode == MMU_LINEAR_POST_GELU_TANH
            ? dnnl_post_ops_append_eltwise(post_ops, dnnl_eltwise_gelu_tanh, 0.0f, 0.0f)
            : dnnl_post_ops_append_sum(post_ops, 1.0f, 0, dnnl_data_type_undef);
    if (s || (s = dnnl_primitive_attr_set_post_ops(post_attr, post_ops))) goto done;
    s = dnnl_matmul_primitive_desc_create(pd, eng, mds[0], mds[1], mds[2], mds[3], post_attr);
done:
    if (post_ops) dnnl_post_ops_destroy(post_ops);
    if (post_attr) dnnl_primitive_attr_destroy(post_attr);
    mmu_dnnl_destroy_mds(mds, 4);
    return s;
}

mmu_status mmu_dnnl_linear_post(int64_t R, int64_t IN, int64_t OUT, const float *x, const float *w, const float *b,
                                float *out, int mode) {
    const char *what = mode == MMU_LINEAR_POST_GELU_TANH ? "linear + gelu_tanh" : "linear (accumulating)";
    cache_key key = {.n = 0};
    mmu_dnnl_key_push(&key, LINEAR_POST_TAG);
    mmu_dnnl_key_push(&key, mode);
    mmu_dnnl_key_push(&key, R);
    mmu_dnnl_key_push(&key, IN);
    mmu_dnnl_key_push(&key, OUT);
    mmu_dnnl_key_push(&key, b != NULL);
    linear_post_ctx ctx = {R, IN, OUT, b != NULL, mode};
    mmu_status st;
    dnnl_stream_t stream = NULL;
    if ((st = mmu_dnnl_get_stream(&stream))) return st;
    mmu_sync_threads();
    pinned p = {0};
    if ((st = mmu_dnnl_pin(&p, &key, create_linear_post, &ctx, what))) return st;
    int ids[4] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST};
    void *ptrs[4] = {(void *)x, (void *)w, (void *)b, out};
    st = mmu_dnnl_run_pinned(&p, stream, 4, ids, ptrs, what);
    mmu_dnnl_unpin(&p);
    return st;
}
