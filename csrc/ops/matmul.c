/* STUB: to be implemented */
#include "ops.h"


/* ---- STUBS below: to be implemented ---- */
mmu_status mmu_matmul(mmu_tensor **out, mmu_tensor *a, mmu_tensor *b) {
    return mmu_fail(MMU_ERUNTIME, "matmul: not implemented yet");
}
mmu_status mmu_linear(mmu_tensor **out, mmu_tensor *x, mmu_tensor *w, mmu_tensor *b) {
    return mmu_fail(MMU_ERUNTIME, "linear: not implemented yet");
}
mmu_status mmu_matmul_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    return mmu_fail(MMU_ERUNTIME, "mmu_matmul_backward: not implemented yet");
}
mmu_status mmu_linear_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    return mmu_fail(MMU_ERUNTIME, "mmu_linear_backward: not implemented yet");
}
