/* mmu._C entry points: nearest-code search and EMA codebook statistics (csrc/quant/vq.c). */
#include "binding.h"

#include "../ops/ops.h"

PyMethodDef mmu_quant_vq_methods[] = {
    {NULL, NULL, 0, NULL},
};
