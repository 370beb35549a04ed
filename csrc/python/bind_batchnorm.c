/* mmu._C entry points: batch norm (csrc/ops/batch_norm.c). */
#include "binding.h"

#include "../ops/ops.h"

PyMethodDef mmu_batchnorm_methods[] = {
    {NULL, NULL, 0, NULL},
};
