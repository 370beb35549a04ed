/* mmu._C entry points: fused reconstruction and GAN losses (csrc/loss/regression.c). */
#include "binding.h"

#include "../ops/ops.h"

PyMethodDef mmu_recon_methods[] = {
    {NULL, NULL, 0, NULL},
};
