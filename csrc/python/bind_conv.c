/* mmu._C entry points: convolutions and transposed convolutions (csrc/ops/conv.c). */
#include "binding.h"

#include "../ops/ops.h"

PyMethodDef mmu_conv_methods[] = {
    {NULL, NULL, 0, NULL},
};
