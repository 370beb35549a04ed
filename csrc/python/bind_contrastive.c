/* mmu._C entry points: fused image-text contrastive losses (csrc/loss/contrastive.c). */
#include "binding.h"

#include "../ops/ops.h"

PyMethodDef mmu_contrastive_methods[] = {
    {NULL, NULL, 0, NULL},
};
