/* mmu._C entry points: LFQ entropy, FSQ and Gumbel kernels (csrc/quant/lfq.c, ...). */
#include "binding.h"

#include "../ops/ops.h"

PyMethodDef mmu_quant_lfq_methods[] = {
    {NULL, NULL, 0, NULL},
};
