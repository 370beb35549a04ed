/* The op table: every differentiable op of mmu, with its backward.
 *
 *   X(NAME, backward_function)
 *
 * Grouped by op family; each backward lives beside its forward in the
 * family's file (named in the comment of each group). Ops without a gradient (comparisons, argmax,
 * casts to int/bool, ...) never record a node and are not listed here.
 */
#ifndef MMU_OP_TABLE_H
#define MMU_OP_TABLE_H

#define MMU_OP_LIST(X)                                            \
    /* csrc/ops/binary.c: broadcasting arithmetic, where */       \
    X(ADD, mmu_binary_backward)                                   \
    X(SUB, mmu_binary_backward)                                   \
    X(MUL, mmu_binary_backward)                                   \
    X(DIV, mmu_binary_backward)                                   \
    X(MAXIMUM, mmu_binary_backward)                               \
    X(MINIMUM, mmu_binary_backward)                               \
    X(WHERE, mmu_where_backward)                                  \
    /* csrc/ops/unary.c: elementwise math (oneDNN eltwise + C) */ \
    X(NEG, mmu_unary_backward)                                    \
    X(EXP, mmu_unary_backward)                                    \
    X(LOG, mmu_unary_backward)                                    \
    X(SQRT, mmu_unary_backward)                                   \
    X(ABS, mmu_unary_backward)                                    \
    X(TANH, mmu_unary_backward)                                   \
    X(SIGMOID, mmu_unary_backward)                                \
    X(RELU, mmu_unary_backward)                                   \
    X(GELU, mmu_unary_backward)                                   \
    X(GELU_TANH, mmu_unary_backward)                              \
    X(SILU, mmu_unary_backward)                                   \
    X(POW, mmu_unary_backward)                                    \
    X(CLAMP, mmu_unary_backward)                                  \
    X(LEAKY_RELU, mmu_leaky_relu_backward)                        \
    /* csrc/ops/reduce.c */                                       \
    X(SUM, mmu_reduce_backward)                                   \
    X(MEAN, mmu_reduce_backward)                                  \
    X(AMAX, mmu_reduce_backward)                                  \
    X(AMIN, mmu_reduce_backward)                                  \
    /* csrc/ops/shape.c: views and copies */                      \
    X(RESHAPE, mmu_reshape_backward)                              \
    X(PERMUTE, mmu_permute_backward)                              \
    X(SLICE, mmu_slice_backward)                                  \
    X(CAT, mmu_cat_backward)                                      \
    X(EXPAND, mmu_expand_backward)                                \
    /* csrc/ops/index.c */                                        \
    X(GATHER, mmu_gather_backward)                                \
    X(INDEX_SELECT, mmu_index_select_backward)                    \
    X(MASKED_SELECT, mmu_masked_select_backward)                  \
    X(MASKED_FILL, mmu_masked_fill_backward)                      \
    /* csrc/ops/matmul.c (oneDNN matmul) */                       \
    X(MATMUL, mmu_matmul_backward)                                \
    X(LINEAR, mmu_linear_backward)                                \
    /* csrc/ops/softmax.c */                                      \
    X(SOFTMAX, mmu_softmax_backward)                              \
    X(LOG_SOFTMAX, mmu_softmax_backward)                          \
    /* csrc/ops/norm.c */                                         \
    X(LAYER_NORM, mmu_layer_norm_backward)                        \
    X(GROUP_NORM, mmu_group_norm_backward)                        \
    X(GROUP_NORM_SILU, mmu_group_norm_backward)                   \
    X(RMS_NORM, mmu_rms_norm_backward)                            \
    X(NORMALIZE, mmu_normalize_backward)                          \
    /* csrc/ops/batch_norm.c */                                   \
    X(BATCH_NORM, mmu_batch_norm_backward)                        \
    /* csrc/ops/embedding.c */                                    \
    X(EMBEDDING, mmu_embedding_backward)                          \
    /* csrc/ops/conv.c (oneDNN convolution / deconvolution) */    \
    X(CONV, mmu_conv_backward)                                    \
    X(CONV_TRANSPOSE, mmu_conv_backward)                          \
    /* csrc/ops/pool.c */                                         \
    X(MAX_POOL2D, mmu_max_pool2d_backward)                        \
    X(AVG_POOL2D, mmu_avg_pool2d_backward)                        \
    /* csrc/ops/spatial.c: padding, resampling */                 \
    X(PAD, mmu_pad_backward)                                      \
    X(UPSAMPLE_NEAREST, mmu_upsample_nearest_backward)            \
    X(UPSAMPLE_BILINEAR, mmu_upsample_bilinear_backward)          \
    /* csrc/ops/dropout.c */                                      \
    X(DROPOUT, mmu_dropout_backward)                              \
    /* csrc/ops/attention.c, csrc/ops/rope.c */                   \
    X(SDPA, mmu_sdpa_backward)                                    \
    X(ROTARY, mmu_rotary_backward)                                \
    /* csrc/quant/lfq.c: FSQ, LFQ entropy */                      \
    X(FSQ, mmu_fsq_backward)                                      \
    X(LFQ_ENTROPY, mmu_lfq_entropy_backward)                      \
    /* csrc/loss/cross_entropy.c */                               \
    X(CROSS_ENTROPY, mmu_cross_entropy_backward)                  \
    /* csrc/loss/reconstruction.c */                              \
    X(MSE_LOSS, mmu_regression_loss_backward)                     \
    X(L1_LOSS, mmu_regression_loss_backward)                      \
    X(SMOOTH_L1_LOSS, mmu_regression_loss_backward)               \
    X(HUBER_LOSS, mmu_regression_loss_backward)                   \
    X(LOGIT_LAPLACE_LOSS, mmu_logit_laplace_loss_backward)        \
    /* csrc/loss/contrastive.c: CLIP and SigLIP */                \
    X(CLIP_LOSS, mmu_clip_loss_backward)                          \
    X(SIGLIP_LOSS, mmu_siglip_loss_backward)                      \
    /* csrc/loss/lpips.c */                                       \
    X(LPIPS_DISTANCE, mmu_lpips_distance_backward)

#endif
