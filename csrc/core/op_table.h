/* The op table: every differentiable op of mmu, with its backward.
 *
 *   X(NAME, backward_function)
 *
 * Each backward lives beside its forward in the op family's file (named in
 * the comment of each group). Ops without a gradient (comparisons, argmax,
 * casts to int/bool, ...) never record a node and are not listed here.
 */
#ifndef MMU_OP_TABLE_H
#define MMU_OP_TABLE_H

#define MMU_OP_LIST(X)                                                     \
    /* csrc/ops/binary.c: broadcasting arithmetic */                       \
    X(ADD, mmu_binary_backward)                                            \
    X(SUB, mmu_binary_backward)                                            \
    X(MUL, mmu_binary_backward)                                            \
    X(DIV, mmu_binary_backward)                                            \
    X(MAXIMUM, mmu_binary_backward)                                        \
    X(MINIMUM, mmu_binary_backward)                                        \
    X(WHERE, mmu_where_backward)                                           \
    /* csrc/ops/unary.c: elementwise math (oneDNN eltwise + C) */          \
    X(NEG, mmu_unary_backward)                                             \
    X(EXP, mmu_unary_backward)                                             \
    X(LOG, mmu_unary_backward)                                             \
    X(SQRT, mmu_unary_backward)                                            \
    X(ABS, mmu_unary_backward)                                             \
    X(TANH, mmu_unary_backward)                                            \
    X(SIGMOID, mmu_unary_backward)                                         \
    X(RELU, mmu_unary_backward)                                            \
    X(GELU, mmu_unary_backward)                                            \
    X(GELU_TANH, mmu_unary_backward)                                       \
    X(SILU, mmu_unary_backward)                                            \
    X(POW, mmu_unary_backward)                                             \
    X(CLAMP, mmu_unary_backward)                                           \
    X(SOFTPLUS, mmu_unary_backward)                                        \
    /* csrc/ops/reduce.c */                                                \
    X(SUM, mmu_reduce_backward)                                            \
    X(MEAN, mmu_reduce_backward)                                           \
    X(AMAX, mmu_reduce_backward)                                           \
    X(AMIN, mmu_reduce_backward)                                           \
    /* csrc/ops/shape.c: views, copies and indexing */                     \
    X(RESHAPE, mmu_reshape_backward)                                       \
    X(PERMUTE, mmu_permute_backward)                                       \
    X(SLICE, mmu_slice_backward)                                           \
    X(CAT, mmu_cat_backward)                                               \
    X(EXPAND, mmu_expand_backward)                                         \
    X(GATHER, mmu_gather_backward)                                         \
    X(INDEX_SELECT, mmu_index_select_backward)                             \
    X(MASKED_SELECT, mmu_masked_select_backward)                           \
    X(MASKED_FILL, mmu_masked_fill_backward)                               \
    /* csrc/ops/matmul.c (oneDNN matmul) */                                \
    X(MATMUL, mmu_matmul_backward)                                         \
    X(LINEAR, mmu_linear_backward)                                         \
    /* csrc/ops/softmax.c, csrc/ops/norm.c (oneDNN) */                     \
    X(SOFTMAX, mmu_softmax_backward)                                       \
    X(LOG_SOFTMAX, mmu_softmax_backward)                                   \
    X(LAYER_NORM, mmu_layer_norm_backward)                                 \
    /* csrc/ops/conv.c: convolutions (oneDNN convolution/deconvolution) */ \
    X(CONV, mmu_conv_backward)                                             \
    X(CONV_TRANSPOSE, mmu_conv_backward)                                   \
    /* -- end conv -- */                                                   \
    /* csrc/ops/norm.c, dropout.c, spatial.c: norms, dropout, resampling */ \
    X(GROUP_NORM, mmu_group_norm_backward)                                 \
    X(GROUP_NORM_SILU, mmu_group_norm_backward) /* ctx.i[4] = act */       \
    X(RMS_NORM, mmu_rms_norm_backward)                                     \
    X(NORMALIZE, mmu_normalize_backward)                                   \
    X(DROPOUT, mmu_dropout_backward)                                       \
    X(LEAKY_RELU, mmu_leaky_relu_backward)                                 \
    X(PAD, mmu_pad_backward)                                               \
    X(AVG_POOL2D, mmu_avg_pool2d_backward)                                 \
    X(UPSAMPLE_NEAREST, mmu_upsample_nearest_backward)                     \
    X(UPSAMPLE_BILINEAR, mmu_upsample_bilinear_backward)                   \
    /* -- end spatial -- */                                                \
    /* csrc/ops/attention.c, rope.c: attention and rotary embeddings */     \
    X(SDPA, mmu_sdpa_backward)                                             \
    X(ROTARY, mmu_rotary_backward)                                         \
    /* -- end attention -- */                                              \
    /* csrc/quant/vq.c: vector quantization */                           \
    /* -- end quant_vq -- */                                               \
    /* csrc/quant/lfq.c ...: LFQ, FSQ, Gumbel */                           \
    X(FSQ, mmu_fsq_backward)                                               \
    X(LFQ_ENTROPY, mmu_lfq_entropy_backward)                               \
    /* -- end quant_lfq -- */                                              \
    /* csrc/loss/contrastive.c: CLIP and SigLIP losses */               \
    X(CLIP_LOSS, mmu_clip_loss_backward)                                   \
    X(SIGLIP_LOSS, mmu_siglip_loss_backward)                               \
    /* -- end contrastive -- */                                            \
    /* csrc/ops/batch_norm.c: batch norm (train/eval) */                   \
    X(BATCH_NORM, mmu_batch_norm_backward)                                 \
    /* -- end batch_norm -- */                                             \
    /* csrc/ops/pool.c, csrc/loss/lpips.c: max pooling, LPIPS distance */  \
    X(MAX_POOL2D, mmu_max_pool2d_backward)                                 \
    X(LPIPS_DISTANCE, mmu_lpips_distance_backward)                         \
    /* -- end lpips -- */                                                  \
    /* csrc/loss/regression.c (fused reconstruction / GAN losses) */       \
    X(SMOOTH_L1_LOSS, mmu_regression_loss_backward)                        \
    X(HUBER_LOSS, mmu_regression_loss_backward)                            \
    X(LOGIT_LAPLACE_LOSS, mmu_logit_laplace_loss_backward)                 \
    /* -- end recon -- */                                                  \
    /* csrc/ops/embedding.c */                                             \
    X(EMBEDDING, mmu_embedding_backward)                                   \
    /* csrc/loss/cross_entropy.c, csrc/loss/regression.c */                \
    X(CROSS_ENTROPY, mmu_cross_entropy_backward)                           \
    X(MSE_LOSS, mmu_regression_loss_backward)                              \
    X(L1_LOSS, mmu_regression_loss_backward)

#endif
