/* mmu._C entry points: autograd.grad (gradients of chosen inputs) and graph introspection (csrc/core/autograd.c). */
#include "binding.h"

#include "../ops/ops.h"

PyMethodDef mmu_autograd_methods[] = {
    {NULL, NULL, 0, NULL},
};
