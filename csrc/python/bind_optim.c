/* mmu._C entry points: fused optimizer updates (csrc/optim). */
#include "binding.h"

#include "../ops/ops.h"

PyMethodDef mmu_optim_methods[] = {
    {NULL, NULL, 0, NULL},
};
