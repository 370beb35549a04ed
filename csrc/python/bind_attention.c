/* mmu._C entry points: scaled dot-product attention and rotary embeddings. */
#include "binding.h"

#include "../ops/ops.h"

PyMethodDef mmu_attention_methods[] = {
    {NULL, NULL, 0, NULL},
};
