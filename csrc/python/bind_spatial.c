/* mmu._C entry points: group/rms norm, normalize, dropout, pad, pooling, interpolation, pixel shuffle. */
#include "binding.h"

#include "../ops/ops.h"

PyMethodDef mmu_spatial_methods[] = {
    {NULL, NULL, 0, NULL},
};
