/* STUB: to be implemented */
#include "../ops/ops.h"


/* ---- STUBS below: to be implemented ---- */
mmu_status mmu_cross_entropy(mmu_tensor **out, mmu_tensor *logits, mmu_tensor *target, int64_t ignore_index, double label_smoothing, mmu_reduction red) {
    return mmu_fail(MMU_ERUNTIME, "cross_entropy: not implemented yet");
}
mmu_status mmu_cross_entropy_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    return mmu_fail(MMU_ERUNTIME, "mmu_cross_entropy_backward: not implemented yet");
}
