/* Convolutions on oneDNN's convolution / deconvolution primitives: torch's
 * conv1d/2d/3d and conv_transpose1d/2d/3d.
 *
 * Both directions are one primitive call per pass (the layout work, blocked
 * formats and their reorders, lives in dnnl/dnnl_ctx.c): the forward fuses
 * the bias add into the convolution, and the backward computes the input,
 * weight and bias gradients from one reordered copy of the output gradient,
 * with the bias gradient fused into the weight-gradient primitive.
 *
 * Unbatched inputs (C, *sp) run as a batch of one: tensors are contiguous,
 * so that is the same memory, and only the shapes differ.
 *
 * padding='same' with an even kernel pads more on the right (torch's rule),
 * which oneDNN takes directly as padding_r != padding_l; output_padding of a
 * transposed conv is a smaller (possibly negative) padding_r of the
 * deconvolution. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "../dnnl/mmu_dnnl.h"

static const char *conv_name(int transposed, int sp) {
    static const char *names[2][3] = {{"conv1d", "conv2d", "conv3d"},
                                      {"conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}};
    return names[transposed][sp - 1];
}

/* "(2, 3)" for the first sp entries of v */
static const char *tuple_str(int sp, const int64_t *v) { return mmu_dims_str(sp, v); }

/* Checks shared by both directions: dtypes, ranks, groups, channels, bias,
 * stride/dilation/padding ranges. Fills g's channel and size fields (not
 * out/pad_r, which differ by direction). */
static mmu_status conv_check(mmu_conv_geom *g, mmu_tensor *x, mmu_tensor *w, mmu_tensor *b, int transposed, int sp,
                             const int64_t *stride, const int64_t *padding, const int64_t *dilation,
                             int64_t groups) {
    const char *op = conv_name(transposed, sp);
    mmu_status st;
    if ((st = mmu_check_dtype(x, MMU_FLOAT32, op, "input"))) return st;
    if ((st = mmu_check_dtype(w, MMU_FLOAT32, op, "weight"))) return st;
    if (b && (st = mmu_check_dtype(b, MMU_FLOAT32, op, "bias"))) return st;
    if (x->ndim != sp + 1 && x->ndim != sp + 2)
        return mmu_fail(MMU_EVALUE, "%s: expected %dD (unbatched) or %dD (batched) input, but got input of shape %s",
                        op, sp + 1, sp + 2, mmu_shape_str(x));
    if (w->ndim != sp + 2)
        return mmu_fail(MMU_EVALUE, "%s: expected %dD weight (%s, %s/groups, *kernel_size), but got weight of "
                        "shape %s", op, sp + 2, transposed ? "in_channels" : "out_channels",
                        transposed ? "out_channels" : "in_channels", mmu_shape_str(w));
    if (groups <= 0)
        return mmu_fail(MMU_EVALUE, "%s: groups must be positive, got %lld", op, (long long)groups);
    for (int d = 0; d < sp; d++) {
        if (stride[d] <= 0)
            return mmu_fail(MMU_EVALUE, "%s: stride must be positive, got %s", op, tuple_str(sp, stride));
        if (dilation[d] <= 0)
            return mmu_fail(MMU_EVALUE, "%s: dilation must be positive, got %s", op, tuple_str(sp, dilation));
        if (padding[d] < 0)
            return mmu_fail(MMU_EVALUE, "%s: negative padding %s is not supported (crop with pad() instead)", op,
                            tuple_str(sp, padding));
        if (w->shape[2 + d] <= 0)
            return mmu_fail(MMU_EVALUE, "%s: weight of shape %s has an empty kernel", op, mmu_shape_str(w));
    }
    int batched = x->ndim == sp + 2;
    g->transposed = transposed;
    g->sp = sp;
    g->N = batched ? x->shape[0] : 1;
    g->IC = x->shape[batched];
    g->G = groups;
    for (int d = 0; d < sp; d++) {
        g->in[d] = x->shape[batched + 1 + d];
        g->k[d] = w->shape[2 + d];
        g->stride[d] = stride[d];
        g->dilation[d] = dilation[d];
        g->pad_l[d] = padding[d];
    }
    if (!transposed) {
        if (w->shape[0] % groups)
            return mmu_fail(MMU_EVALUE, "%s: groups=%lld must divide out_channels, but weight has shape %s", op,
                            (long long)groups, mmu_shape_str(w));
        if (g->IC != w->shape[1] * groups)
            return mmu_fail(MMU_EVALUE, "%s: groups=%lld, weight of shape %s expects input with %lld channels, "
                            "but got input of shape %s (%lld channels)", op, (long long)groups, mmu_shape_str(w),
                            (long long)(w->shape[1] * groups), mmu_shape_str(x), (long long)g->IC);
        g->OC = w->shape[0];
    } else {
        if (g->IC % groups)
            return mmu_fail(MMU_EVALUE, "%s: groups=%lld must divide in_channels, but input has shape %s", op,
                            (long long)groups, mmu_shape_str(x));
        if (w->shape[0] != g->IC)
            return mmu_fail(MMU_EVALUE, "%s: weight of shape %s expects input with %lld channels, but got input "
                            "of shape %s (%lld channels)", op, mmu_shape_str(w), (long long)w->shape[0],
                            mmu_shape_str(x), (long long)g->IC);
        g->OC = w->shape[1] * groups;
    }
    if (b && (b->ndim != 1 || b->shape[0] != g->OC))
        return mmu_fail(MMU_EVALUE, "%s: weight of shape %s expects a bias of shape (%lld,), but got bias of "
                        "shape %s", op, mmu_shape_str(w), (long long)g->OC, mmu_shape_str(b));
    return MMU_OK;
}

/* -------------------------------------------- unreachable output cells */
/* A transposed conv whose output_padding reaches past stride + padding
 * (allowed when dilation > output_padding) has trailing output cells that no
 * input touches: they hold the bias alone. oneDNN's deconvolution refuses
 * that geometry (it needs padding_r > -stride), so the primitive computes the
 * reachable box `in` (padding_r 0) and the op embeds it. Returns whether a
 * cut was needed. */
static int reachable_box(mmu_conv_geom *in, const mmu_conv_geom *g) {
    *in = *g;
    int cut = 0;
    for (int d = 0; d < g->sp && g->transposed; d++)
        if (g->pad_r[d] + g->stride[d] <= 0) {
            in->out[d] += g->pad_r[d];
            in->pad_r[d] = 0;
            cut = 1;
        }
    return cut;
}

// big (R, *bd), small (R, *sd) with sd <= bd: copies the leading sd box of
// every row from big to small (crop) or from small into big (embed).
static void box_copy(float *big, float *small, int64_t R, int sp, const int64_t *bd, const int64_t *sd, int crop) {
    int64_t bn = 1, sn = 1;
    for (int d = 0; d < sp; d++) bn *= bd[d], sn *= sd[d];
    int64_t len = sd[sp - 1], lines = sn / len;
#pragma omp parallel for schedule(static) if (R * sn > MMU_PAR_GRAIN)
    for (int64_t r = 0; r < R; r++)
        for (int64_t l = 0; l < lines; l++) {
            /* line l of the small box -> its offset in the big one */
            int64_t rest = l, off = 0, stride = bd[sp - 1];
            for (int d = sp - 2; d >= 0; d--) {
                off += (rest % sd[d]) * stride;
                rest /= sd[d];
                stride *= bd[d];
            }
            float *pb = big + r * bn + off, *ps = small + r * sn + l * len;
            if (crop) memcpy(ps, pb, len * sizeof(float));
            else memcpy(pb, ps, len * sizeof(float));
        }
}

// g (N, OC, inner) -> db (OC) = sums over N and inner (double per channel, a fixed order)
static void bias_grad(float *db, const float *g, int64_t N, int64_t OC, int64_t inner) {
#pragma omp parallel for schedule(static) if (N * OC * inner > MMU_PAR_GRAIN)
    for (int64_t c = 0; c < OC; c++) {
        double s = 0;
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < inner; j++) s += g[(i * OC + c) * inner + j];
        db[c] = (float)s;
    }
}

static int64_t box_numel(const mmu_conv_geom *g) {
    int64_t n = 1;
    for (int d = 0; d < g->sp; d++) n *= g->out[d];
    return n;
}

/* Runs the forward of geometry g and records the node (op CONV or
 * CONV_TRANSPOSE). The output (N, OC, *out), or (OC, *out) unbatched. */
static mmu_status conv_run(mmu_tensor **out, const mmu_conv_geom *g, mmu_tensor *x, mmu_tensor *w, mmu_tensor *b,
                           mmu_op opcode) {
    int sp = g->sp, batched = x->ndim == sp + 2;
    int64_t shape[MMU_MAX_DIMS];
    int nd = 0;
    if (batched) shape[nd++] = g->N;
    shape[nd++] = g->OC;
    for (int d = 0; d < sp; d++) shape[nd++] = g->out[d];
    mmu_status st = mmu_tensor_empty(out, MMU_FLOAT32, nd, shape);
    if (st) return st;
    float *po = mmu_f32(*out);
    if ((*out)->numel == 0) {
        /* nothing to compute */
    } else if (x->numel == 0 || w->numel == 0) {
        /* no input channels: an empty sum, the bias alone */
        int64_t inner = (*out)->numel / (g->N * g->OC);
        for (int64_t i = 0; i < g->N * g->OC; i++)
            for (int64_t j = 0; j < inner; j++) po[i * inner + j] = b ? mmu_f32(b)[i % g->OC] : 0.0f;
    } else {
        mmu_conv_geom in;
        if (!reachable_box(&in, g)) {
            st = mmu_dnnl_conv_fwd(g, mmu_f32(x), mmu_f32(w), b ? mmu_f32(b) : NULL, po);
        } else {
            int64_t R = g->N * g->OC, inner = box_numel(g), sn = box_numel(&in);
            size_t bytes = (size_t)(R * sn) * sizeof(float);
            float *tmp = mmu_alloc(bytes);
            if (!tmp) {
                st = mmu_fail(MMU_ENOMEM, "%s: out of memory", conv_name(1, sp));
            } else {
                st = mmu_dnnl_conv_fwd(&in, mmu_f32(x), mmu_f32(w), b ? mmu_f32(b) : NULL, tmp);
#pragma omp parallel for schedule(static) if (R * inner > MMU_PAR_GRAIN)
                for (int64_t i = 0; i < R; i++)
                    for (int64_t j = 0; j < inner; j++) po[i * inner + j] = b ? mmu_f32(b)[i % g->OC] : 0.0f;
                if (!st) box_copy(po, tmp, R, sp, g->out, in.out, 0);
                mmu_free(tmp, bytes);
            }
        }
    }
    mmu_node *n = NULL;
    if (!st) st = mmu_record(&n, *out, opcode, 3, (mmu_tensor *[]){x, w, b});
    if (!st && n) {
        if (!(n->extra = malloc(sizeof(mmu_conv_geom))))
            st = mmu_fail(MMU_ENOMEM, "%s: out of memory", conv_name(g->transposed, sp));
        else
            memcpy(n->extra, g, sizeof *g);
    }
    if (st) {
        MMU_CLEAR(*out);
        return st;
    }
    if (n) { /* dx needs w, dw needs x */
        if (n->inputs[1].needs_grad) mmu_save(n, 0, x);
        if (n->inputs[0].needs_grad) mmu_save(n, 1, w);
    }
    return MMU_OK;
}

// x (N, C, *in) or (C, *in), w (OC, C/groups, *k), b (OC) or NULL -> (N, OC, *out) or (OC, *out),
// out = (in + pad_l + pad_r - dilation*(k-1) - 1) / stride + 1; sp = 1, 2, 3 spatial dims
mmu_status mmu_conv(mmu_tensor **out, int sp, mmu_tensor *x, mmu_tensor *w, mmu_tensor *b, const int64_t *stride,
                    const int64_t *pad_l, const int64_t *pad_r, const int64_t *dilation, int64_t groups) {
    if (sp < 1 || sp > 3) return mmu_fail(MMU_EVALUE, "conv: %d spatial dims (1, 2 or 3 supported)", sp);
    mmu_conv_geom g;
    mmu_status st = conv_check(&g, x, w, b, 0, sp, stride, pad_l, dilation, groups);
    if (st) return st;
    const char *op = conv_name(0, sp);
    int64_t padded[3], ext[3];
    for (int d = 0; d < sp; d++) {
        if (pad_r[d] < 0)
            return mmu_fail(MMU_EVALUE, "%s: negative padding %s is not supported", op, tuple_str(sp, pad_r));
        g.pad_r[d] = pad_r[d];
        padded[d] = g.in[d] + pad_l[d] + pad_r[d];
        ext[d] = g.dilation[d] * (g.k[d] - 1) + 1;
    }
    for (int d = 0; d < sp; d++)
        if (padded[d] < ext[d])
            return mmu_fail(MMU_EVALUE, "%s: padded input size %s is smaller than the (dilated) kernel size %s "
                            "(input %s, weight %s)", op, tuple_str(sp, padded), tuple_str(sp, ext),
                            mmu_shape_str(x), mmu_shape_str(w));
    for (int d = 0; d < sp; d++) g.out[d] = (padded[d] - ext[d]) / g.stride[d] + 1;
    return conv_run(out, &g, x, w, b, MMU_OP_CONV);
}

// x (N, IC, *in) or (IC, *in), w (IC, OC/groups, *k), b (OC) or NULL -> (N, OC, *out) or (OC, *out),
// out = (in - 1)*stride - 2*padding + dilation*(k-1) + output_padding + 1
mmu_status mmu_conv_transpose(mmu_tensor **out, int sp, mmu_tensor *x, mmu_tensor *w, mmu_tensor *b,
                              const int64_t *stride, const int64_t *padding, const int64_t *output_padding,
                              int64_t groups, const int64_t *dilation) {
    if (sp < 1 || sp > 3) return mmu_fail(MMU_EVALUE, "conv_transpose: %d spatial dims (1, 2 or 3 supported)", sp);
    mmu_conv_geom g;
    mmu_status st = conv_check(&g, x, w, b, 1, sp, stride, padding, dilation, groups);
    if (st) return st;
    const char *op = conv_name(1, sp);
    for (int d = 0; d < sp; d++) {
        if (output_padding[d] < 0)
            return mmu_fail(MMU_EVALUE, "%s: output_padding must be non-negative, got %s", op,
                            tuple_str(sp, output_padding));
        if (output_padding[d] >= stride[d] && output_padding[d] >= dilation[d])
            return mmu_fail(MMU_EVALUE, "%s: output_padding %s must be smaller than either stride %s or dilation "
                            "%s", op, tuple_str(sp, output_padding), tuple_str(sp, stride), tuple_str(sp, dilation));
    }
    for (int d = 0; d < sp; d++) {
        g.out[d] = (g.in[d] - 1) * g.stride[d] - 2 * padding[d] + g.dilation[d] * (g.k[d] - 1) + output_padding[d] + 1;
        /* the deconvolution's right padding: the output_padding extra cells come off it */
        g.pad_r[d] = padding[d] - output_padding[d];
        if (g.out[d] <= 0 && g.in[d] > 0)
            return mmu_fail(MMU_EVALUE, "%s: input of shape %s with weight %s, stride %s, padding %s gives a "
                            "non-positive output size", op, mmu_shape_str(x), mmu_shape_str(w),
                            tuple_str(sp, stride), tuple_str(sp, padding));
    }
    return conv_run(out, &g, x, w, b, MMU_OP_CONV_TRANSPOSE);
}

// g (N, OC, *out) -> dx (N, C, *in), dw (w's shape), db (OC): one backward call for all three
mmu_status mmu_conv_backward(mmu_node *n, mmu_tensor *gout, mmu_tensor **gin) {
    const mmu_conv_geom *g = (const mmu_conv_geom *)n->extra;
    mmu_status st = MMU_OK;
    for (int i = 0; i < 3; i++)
        if (n->inputs[i].needs_grad &&
            (st = mmu_tensor_empty(&gin[i], MMU_FLOAT32, n->inputs[i].ndim, n->inputs[i].shape)))
            goto fail;
    float *dx = gin[0] ? mmu_f32(gin[0]) : NULL, *dw = gin[1] ? mmu_f32(gin[1]) : NULL;
    float *db = gin[2] ? mmu_f32(gin[2]) : NULL;
    int64_t nx = 1, nw = 1;
    for (int d = 0; d < n->inputs[0].ndim; d++) nx *= n->inputs[0].shape[d];
    for (int d = 0; d < n->inputs[1].ndim; d++) nw *= n->inputs[1].shape[d];
    if (gout->numel == 0 || nx == 0 || nw == 0) {
        /* degenerate sizes: oneDNN takes no empty dims; the sums are zero, db a plain sum */
        for (int i = 0; i < 3; i++)
            if (gin[i]) memset(mmu_f32(gin[i]), 0, gin[i]->numel * sizeof(float));
        if (db) bias_grad(db, mmu_f32(gout), g->N, g->OC, box_numel(g));
        return MMU_OK;
    }
    const float *px = n->saved[0] ? mmu_f32(n->saved[0]) : NULL, *pw = n->saved[1] ? mmu_f32(n->saved[1]) : NULL;
    mmu_conv_geom in;
    if (!reachable_box(&in, g)) {
        /* the bias gradient rides on the weight-gradient primitive; alone it is a plain sum
         * (the input, which that primitive needs, was not saved) */
        st = mmu_dnnl_conv_bwd(g, px, pw, mmu_f32(gout), dx, dw, dw ? db : NULL);
        if (!st && db && !dw) bias_grad(db, mmu_f32(gout), g->N, g->OC, box_numel(g));
    } else {
        /* the unreachable cells only feed the bias gradient */
        int64_t R = g->N * g->OC, sn = box_numel(&in);
        size_t bytes = (size_t)(R * sn) * sizeof(float);
        float *tmp = mmu_alloc(bytes);
        if (!tmp) {
            st = mmu_fail(MMU_ENOMEM, "%s backward: out of memory", conv_name(1, g->sp));
            goto fail;
        }
        box_copy(mmu_f32(gout), tmp, R, g->sp, g->out, in.out, 1);
        st = dx || dw ? mmu_dnnl_conv_bwd(&in, px, pw, tmp, dx, dw, NULL) : MMU_OK;
        mmu_free(tmp, bytes);
        if (db) bias_grad(db, mmu_f32(gout), g->N, g->OC, box_numel(g));
    }
    if (!st) return MMU_OK;
fail:
    for (int i = 0; i < 3; i++) MMU_CLEAR(gin[i]);
    return st;
}
