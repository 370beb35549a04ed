/* The op table (core/op_table.h): every differentiable op's name, backward and
 * ctx layout. Defined here, with the ops, so that the autograd engine
 * (core/autograd.c) knows the ops only through this table. */
#include "ops.h"

const mmu_op_info mmu_op_table[MMU_OP_COUNT] = {
#define MMU_OP_INFO(name, backward, ctx_i, ctx_f, extra) [MMU_OP_##name] = {#name, backward, ctx_i, ctx_f, extra},
    MMU_OP_LIST(MMU_OP_INFO)
#undef MMU_OP_INFO
};
