/* STUB: to be implemented */
#include "ops.h"


/* ---- STUBS below: to be implemented ---- */
mmu_status mmu_layer_norm(mmu_tensor **out, mmu_tensor *x, int norm_ndim, const int64_t *norm_shape, mmu_tensor *weight, mmu_tensor *bias, double eps) {
    return mmu_fail(MMU_ERUNTIME, "layer_norm: not implemented yet");
}
mmu_status mmu_layer_norm_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    return mmu_fail(MMU_ERUNTIME, "mmu_layer_norm_backward: not implemented yet");
}
