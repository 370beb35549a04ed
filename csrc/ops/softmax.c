/* STUB: to be implemented */
#include "ops.h"


/* ---- STUBS below: to be implemented ---- */
mmu_status mmu_softmax(mmu_tensor **out, mmu_tensor *x, int64_t dim, int log) {
    return mmu_fail(MMU_ERUNTIME, "softmax: not implemented yet");
}
mmu_status mmu_softmax_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    return mmu_fail(MMU_ERUNTIME, "mmu_softmax_backward: not implemented yet");
}
