/* mmu._C entry points: max pooling and the fused LPIPS distance (csrc/ops/pool.c, csrc/loss/lpips.c). */
#include "binding.h"

#include "../ops/ops.h"

PyMethodDef mmu_lpips_methods[] = {
    {NULL, NULL, 0, NULL},
};
