/* The op table: every differentiable op of mmu, with its backward and the
 * layout of the small parameters its node keeps.
 *
 *   X(NAME, backward_function, "ctx.i fields", "ctx.f fields", "extra fields")
 *
 * Grouped by op family; each backward lives beside its forward in the family's
 * file (named in the comment of each group). Ops without a gradient
 * (comparisons, argmax, casts to int/bool, ...) never record a node and are
 * not listed here.
 *
 * The three field lists name what a node's forward writes into ctx.i (int64),
 * ctx.f (double) and the int64 array extra, in order: "a b" is a at slot 0
 * and b at slot 1; "a[L]" is an array of L values; "a[L/R]" is an array of L
 * values that reserves R slots. L is a number, `ndim` (input 0's dims),
 * `n_inputs`, or the name of an int field already listed (ctx.i first, then
 * extra). Graph introspection (mmu._C.graph_node(t)[0].ctx, used by the
 * double-backward rules of mmu/_double_backward.py) decodes a node by these
 * names, so Python never reads a ctx slot by its position.
 */
#ifndef MMU_OP_TABLE_H
#define MMU_OP_TABLE_H

/* The extra of CONV / CONV_TRANSPOSE: its mmu_conv_geom (csrc/dnnl/mmu_dnnl.h), all int64,
 * field for field (csrc/ops/conv.c asserts the struct's size). */
#define MMU_CONV_GEOM_FIELDS \
    "transposed sp N IC OC G in[sp/3] k[sp/3] out[sp/3] stride[sp/3] dilation[sp/3] pad_l[sp/3] pad_r[sp/3]"

#define MMU_OP_LIST(X)                                                                                         \
    /* csrc/ops/binary.c: broadcasting arithmetic, where */                                                    \
    X(ADD, mmu_binary_backward, "", "", "")                                                                    \
    X(SUB, mmu_binary_backward, "", "", "")                                                                    \
    X(MUL, mmu_binary_backward, "", "", "")                                                                    \
    X(DIV, mmu_binary_backward, "", "", "")                                                                    \
    X(MAXIMUM, mmu_binary_backward, "", "", "")                                                                \
    X(MINIMUM, mmu_binary_backward, "", "", "")                                                                \
    X(WHERE, mmu_where_backward, "", "", "")                                                                   \
    /* csrc/ops/unary.c: elementwise math (oneDNN eltwise + C) */                                              \
    X(NEG, mmu_unary_backward, "alg saved_output", "", "")                                                     \
    X(EXP, mmu_unary_backward, "alg saved_output", "", "")                                                     \
    X(LOG, mmu_unary_backward, "alg saved_output", "", "")                                                     \
    X(SQRT, mmu_unary_backward, "alg saved_output", "", "")                                                    \
    X(ABS, mmu_unary_backward, "alg saved_output", "", "")                                                     \
    X(TANH, mmu_unary_backward, "alg saved_output", "", "")                                                    \
    X(SIGMOID, mmu_unary_backward, "alg saved_output", "", "")                                                 \
    X(RELU, mmu_unary_backward, "alg saved_output", "", "")                                                    \
    X(GELU, mmu_unary_backward, "alg saved_output", "", "")                                                    \
    X(GELU_TANH, mmu_unary_backward, "alg saved_output", "", "")                                               \
    X(SILU, mmu_unary_backward, "alg saved_output", "", "")                                                    \
    X(POW, mmu_unary_backward, "", "exponent", "")                                                             \
    X(CLAMP, mmu_unary_backward, "", "min max", "")                                                            \
    X(SOFTPLUS, mmu_unary_backward, "", "beta threshold", "")                                                  \
    X(LEAKY_RELU, mmu_leaky_relu_backward, "", "negative_slope", "")                                           \
    X(SWIGLU, mmu_swiglu_backward, "", "", "")                                                                 \
    /* csrc/ops/reduce.c */                                                                                    \
    X(SUM, mmu_reduce_backward, "dim_mask", "", "")                                                            \
    X(MEAN, mmu_reduce_backward, "dim_mask", "", "")                                                           \
    X(AMAX, mmu_reduce_backward, "dim_mask", "", "")                                                           \
    X(AMIN, mmu_reduce_backward, "dim_mask", "", "")                                                           \
    X(CUMSUM, mmu_cumsum_backward, "dim reverse", "", "")                                                      \
    /* csrc/ops/sort.c */                                                                                      \
    X(SORT, mmu_sort_backward, "dim", "", "")                                                                  \
    X(TOPK, mmu_sort_backward, "dim", "", "")                                                                  \
    /* csrc/ops/shape.c: views and copies */                                                                   \
    X(RESHAPE, mmu_reshape_backward, "", "", "")                                                               \
    X(PERMUTE, mmu_permute_backward, "perm[ndim]", "", "")                                                     \
    X(SLICE, mmu_slice_backward, "", "", "start[ndim] step[ndim]")                                             \
    X(CAT, mmu_cat_backward, "dim", "", "sizes[n_inputs]")                                                     \
    X(EXPAND, mmu_expand_backward, "", "", "")                                                                 \
    /* csrc/ops/index.c */                                                                                     \
    X(GATHER, mmu_gather_backward, "dim", "", "")                                                              \
    X(INDEX_SELECT, mmu_index_select_backward, "dim", "", "")                                                  \
    X(MASKED_SELECT, mmu_masked_select_backward, "", "", "")                                                   \
    X(MASKED_FILL, mmu_masked_fill_backward, "", "", "")                                                       \
    /* csrc/ops/matmul.c (oneDNN matmul) */                                                                    \
    X(MATMUL, mmu_matmul_backward, "", "", "")                                                                 \
    X(LINEAR, mmu_linear_backward, "", "", "")                                                                 \
    /* csrc/ops/softmax.c */                                                                                   \
    X(SOFTMAX, mmu_softmax_backward, "dim", "", "")                                                            \
    X(LOG_SOFTMAX, mmu_softmax_backward, "dim", "", "")                                                        \
    /* csrc/ops/norm.c */                                                                                      \
    X(LAYER_NORM, mmu_layer_norm_backward, "rows cols", "eps", "")                                             \
    X(GROUP_NORM, mmu_group_norm_backward, "N C S G act", "eps", "")                                           \
    X(GROUP_NORM_SILU, mmu_group_norm_backward, "N C S G act", "eps", "")                                      \
    X(RMS_NORM, mmu_rms_norm_backward, "rows cols", "eps", "")                                                 \
    X(NORMALIZE, mmu_normalize_backward, "outer C inner", "p eps", "")                                         \
    X(QKV_HEADS, mmu_qkv_heads_backward, "num_heads num_kv_heads norm rotary_dim table_per_batch", "eps", "")  \
    /* csrc/ops/batch_norm.c */                                                                                \
    X(BATCH_NORM, mmu_batch_norm_backward, "N C S training", "eps", "")                                        \
    /* csrc/ops/embedding.c */                                                                                 \
    X(EMBEDDING, mmu_embedding_backward, "", "", "")                                                           \
    /* csrc/ops/conv.c (oneDNN convolution / deconvolution) */                                                 \
    X(CONV, mmu_conv_backward, "", "", MMU_CONV_GEOM_FIELDS)                                                   \
    X(CONV_TRANSPOSE, mmu_conv_backward, "", "", MMU_CONV_GEOM_FIELDS)                                         \
    /* csrc/ops/pool.c */                                                                                      \
    X(MAX_POOL2D, mmu_max_pool2d_backward, "kernel[2] stride[2] padding[2] dilation[2]", "", "")               \
    X(AVG_POOL2D, mmu_avg_pool2d_backward, "kernel[2] stride[2] padding[2] divisor count_include_pad", "", "") \
    /* csrc/ops/spatial.c: padding, resampling */                                                              \
    X(PAD, mmu_pad_backward, "lo[ndim/6] mode", "", "hi[ndim]")                                                \
    X(UPSAMPLE_NEAREST, mmu_upsample_nearest_backward, "nsp", "scale[nsp/3]", "")                              \
    X(UPSAMPLE_BILINEAR, mmu_upsample_bilinear_backward, "align_corners", "scale_h scale_w", "")               \
    /* csrc/ops/dropout.c */                                                                                   \
    X(DROPOUT, mmu_dropout_backward, "rng_key rng_counter threshold", "scale", "")                             \
    /* csrc/ops/attention.c, csrc/ops/rope.c */                                                                \
    X(SDPA, mmu_sdpa_backward, "is_causal rng_key rng_counter enable_gqa query_offset kv_len", "scale dropout_p", "")              \
    X(SDPA_PACKED, mmu_sdpa_packed_backward, "is_causal num_heads num_kv_heads row_start row_stop", "scale", "") \
    X(WINDOW_ATTENTION, mmu_window_attention_backward, "grid_h grid_w window_h window_w", "scale", "")          \
    X(TEMPORAL_ATTENTION, mmu_temporal_attention_backward, "frames causal", "scale", "")                      \
    X(ROTARY, mmu_rotary_backward, "", "", "")                                                                 \
    /* csrc/quant/lfq.c: FSQ, LFQ entropy */                                                                   \
    X(FSQ, mmu_fsq_backward, "nlev", "", "levels[nlev]")                                                       \
    X(LFQ_ENTROPY, mmu_lfq_entropy_backward, "chunk", "inv_temperature codebook_scale", "")                    \
    /* csrc/loss/cross_entropy.c */                                                                            \
    X(CROSS_ENTROPY, mmu_cross_entropy_backward, "ignore_index reduction count", "label_smoothing", "")        \
    /* csrc/loss/reconstruction.c */                                                                           \
    X(MSE_LOSS, mmu_regression_loss_backward, "reduction kind", "param", "")                                   \
    X(L1_LOSS, mmu_regression_loss_backward, "reduction kind", "param", "")                                    \
    X(SMOOTH_L1_LOSS, mmu_regression_loss_backward, "reduction kind", "param", "")                             \
    X(HUBER_LOSS, mmu_regression_loss_backward, "reduction kind", "param", "")                                 \
    X(LOGIT_LAPLACE_LOSS, mmu_logit_laplace_loss_backward, "reduction", "eps", "")                             \
    /* csrc/loss/contrastive.c: CLIP and SigLIP */                                                             \
    X(CLIP_LOSS, mmu_clip_loss_backward, "", "", "")                                                           \
    X(SIGLIP_LOSS, mmu_siglip_loss_backward, "", "dloss_dt dloss_dbias", "")                                   \
    /* csrc/loss/lpips.c */                                                                                    \
    X(LPIPS_DISTANCE, mmu_lpips_distance_backward, "", "eps", "")

#endif
