/* STUB: to be implemented */
#include "../ops/ops.h"


/* ---- STUBS below: to be implemented ---- */
mmu_status mmu_mse_loss(mmu_tensor **out, mmu_tensor *input, mmu_tensor *target, mmu_reduction red) {
    return mmu_fail(MMU_ERUNTIME, "mse_loss: not implemented yet");
}
mmu_status mmu_l1_loss(mmu_tensor **out, mmu_tensor *input, mmu_tensor *target, mmu_reduction red) {
    return mmu_fail(MMU_ERUNTIME, "l1_loss: not implemented yet");
}
mmu_status mmu_regression_loss_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    return mmu_fail(MMU_ERUNTIME, "mmu_regression_loss_backward: not implemented yet");
}
