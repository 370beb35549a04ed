/* STUB: to be implemented */
#include "ops.h"


/* ---- STUBS below: to be implemented ---- */
mmu_status mmu_embedding(mmu_tensor **out, mmu_tensor *idx, mmu_tensor *weight) {
    return mmu_fail(MMU_ERUNTIME, "embedding: not implemented yet");
}
mmu_status mmu_embedding_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    return mmu_fail(MMU_ERUNTIME, "mmu_embedding_backward: not implemented yet");
}
