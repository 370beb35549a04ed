/* Fused image-text contrastive losses: CLIP (symmetric softmax InfoNCE) and
 * SigLIP (pairwise sigmoid). Embeddings are used as given: the caller
 * normalises them (CLIP and SigLIP both L2-normalise before the loss).
 *
 * Both ops compute the unscaled similarity S = img @ txt^T (B, B) with one
 * cached oneDNN matmul and keep it for the backward; the scale (and bias) are
 * applied on the fly, so the (B, B) logits, softmaxes and one-hot targets torch
 * materialises never exist. The backward forms dL/dS in one pass over S and
 * runs two matmuls: d_img = dS @ txt, d_txt = dS^T @ img (a transposed
 * descriptor, no copy).
 *
 * Row loops are `omp simd` reductions (a fixed lane order: deterministic).
 * Determinism: per-row partials are reduced in index order; the column
 * log-sum-exp of CLIP uses per-thread column partials combined in thread order
 * (static schedule, so bit-identical run to run at a fixed thread count).
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "../core/vmath.h"
#include "../dnnl/mmu_dnnl.h"
#include "../ops/ops.h"

#define CLIP_MAX_SCALE 100.0f

static mmu_status check_pair(const char *op, mmu_tensor *img, mmu_tensor *txt) {
    if (img->dtype != MMU_FLOAT32 || txt->dtype != MMU_FLOAT32)
        return mmu_fail(MMU_ETYPE, "%s: image_emb and text_emb must be float32", op);
    if (img->ndim != 2 || txt->ndim != 2)
        return mmu_fail(MMU_EVALUE, "%s: image_emb and text_emb must be (B, D), got %s and %s", op,
                        mmu_shape_str(img), mmu_shape_str(txt));
    if (img->shape[0] != txt->shape[0])
        return mmu_fail(MMU_EVALUE, "%s: batch mismatch: image_emb %s, text_emb %s", op, mmu_shape_str(img),
                        mmu_shape_str(txt));
    if (img->shape[1] != txt->shape[1])
        return mmu_fail(MMU_EVALUE, "%s: embedding dim mismatch: image_emb %s, text_emb %s", op,
                        mmu_shape_str(img), mmu_shape_str(txt));
    if (img->shape[0] < 1 || img->shape[1] < 1)
        return mmu_fail(MMU_EVALUE, "%s: empty embeddings %s", op, mmu_shape_str(img));
    return MMU_OK;
}

static mmu_status check_scalar(const char *op, const char *name, mmu_tensor *t) {
    if (t->dtype != MMU_FLOAT32) return mmu_fail(MMU_ETYPE, "%s: %s must be float32", op, name);
    if (t->ndim != 0)
        return mmu_fail(MMU_EVALUE, "%s: %s must be a 0-d tensor, got shape %s", op, name, mmu_shape_str(t));
    return MMU_OK;
}

// img (B, D), txt (B, D) -> S (B, B) = img @ txt^T
static mmu_status sim_matrix(mmu_tensor **S, mmu_tensor *img, mmu_tensor *txt) {
    int64_t B = img->shape[0], D = img->shape[1];
    mmu_status st = mmu_tensor_empty(S, MMU_FLOAT32, 2, (int64_t[]){B, B});
    if (st) return st;
    mmu_md ma, mb, mc;
    mmu_md_contig(&ma, 2, (int64_t[]){B, D});
    mmu_md_contig(&mb, 2, (int64_t[]){D, B});
    mb.strides[0] = 1, mb.strides[1] = D; /* txt^T without a copy */
    mmu_md_contig(&mc, 2, (int64_t[]){B, B});
    st = mmu_dnnl_matmul(&ma, mmu_f32(img), &mb, mmu_f32(txt), NULL, NULL, &mc, mmu_f32(*S));
    if (st) MMU_CLEAR(*S);
    return st;
}

// dS (B, B), img (B, D), txt (B, D) -> d_img = dS @ txt, d_txt = dS^T @ img (either may be skipped)
static mmu_status sim_backward(mmu_tensor **gin, mmu_node *n, const float *dS, mmu_tensor *img, mmu_tensor *txt) {
    int64_t B = img->shape[0], D = img->shape[1];
    mmu_md mg, mgt, me, mo;
    mmu_md_contig(&mg, 2, (int64_t[]){B, B});
    mmu_md_contig(&mgt, 2, (int64_t[]){B, B});
    mgt.strides[0] = 1, mgt.strides[1] = B;
    mmu_md_contig(&me, 2, (int64_t[]){B, D});
    mmu_md_contig(&mo, 2, (int64_t[]){B, D});
    mmu_status st;
    if (n->inputs[0].needs_grad) {
        if ((st = mmu_tensor_empty_like(&gin[0], img))) return st;
        if ((st = mmu_dnnl_matmul(&mg, dS, &me, mmu_f32(txt), NULL, NULL, &mo, mmu_f32(gin[0])))) return st;
    }
    if (n->inputs[1].needs_grad) {
        if ((st = mmu_tensor_empty_like(&gin[1], txt))) return st;
        if ((st = mmu_dnnl_matmul(&mgt, dS, &me, mmu_f32(img), NULL, NULL, &mo, mmu_f32(gin[1])))) return st;
    }
    return MMU_OK;
}

static mmu_status scalar_grad(mmu_tensor **gin, mmu_tensor *like, float v) {
    mmu_status st = mmu_tensor_empty_like(gin, like);
    if (!st) mmu_f32(*gin)[0] = v;
    return st;
}

/* ------------------------------------------------------------------ CLIP */

/* scale = exp(logit_scale) clamped at 100, as open_clip's logit_scale.exp().clamp(max=100)
 * (torch's clamp passes the gradient when exp(logit_scale) <= 100). */
static float clip_scale(float ls, int *clamped) {
    float e = expf(ls);
    *clamped = e > CLIP_MAX_SCALE;
    return *clamped ? CLIP_MAX_SCALE : e;
}

// img (B, D), txt (B, D), logit_scale () -> () ; saves S (B, B), stats (2, B) = row / column log-sum-exp
mmu_status mmu_clip_loss(mmu_tensor **out, mmu_tensor *img, mmu_tensor *txt, mmu_tensor *logit_scale) {
    mmu_status st;
    if ((st = check_pair("clip_loss", img, txt)) || (st = check_scalar("clip_loss", "logit_scale", logit_scale)))
        return st;
    int64_t B = img->shape[0];
    int clamped;
    float scale = clip_scale(mmu_f32(logit_scale)[0], &clamped);
    mmu_tensor *S = NULL, *stats = NULL, *part = NULL;
    if ((st = sim_matrix(&S, img, txt))) return st;
    int T = omp_get_max_threads();
    if ((st = mmu_tensor_empty(&stats, MMU_FLOAT32, 2, (int64_t[]){2, B}))) goto fail;
    /* per thread: column max (B) then column sum (B) */
    if ((st = mmu_tensor_empty(&part, MMU_FLOAT32, 2, (int64_t[]){T, 2 * B}))) goto fail;
    const float *s = mmu_f32(S);
    float *lr = mmu_f32(stats), *lc = lr + B, *pp = mmu_f32(part);
    int par = B * B > MMU_PAR_GRAIN;
    /* pass 1: row max -> lr (temporarily), per-thread column max */
#pragma omp parallel num_threads(par ? T : 1)
    {
        int tid = omp_get_thread_num();
        float *cm = pp + (int64_t)tid * 2 * B;
        for (int64_t j = 0; j < B; j++) cm[j] = -INFINITY;
#pragma omp for schedule(static)
        for (int64_t i = 0; i < B; i++) {
            const float *r = s + i * B;
            float m = -INFINITY;
#pragma omp simd reduction(max : m)
            for (int64_t j = 0; j < B; j++) {
                float v = scale * r[j];
                m = v > m ? v : m;
                cm[j] = v > cm[j] ? v : cm[j];
            }
            lr[i] = m;
        }
    }
    int used = par ? T : 1;
    for (int64_t j = 0; j < B; j++) {
        float m = -INFINITY;
        for (int t = 0; t < used; t++) m = pp[(int64_t)t * 2 * B + j] > m ? pp[(int64_t)t * 2 * B + j] : m;
        lc[j] = m;
    }
    /* pass 2: row sum of exp (finished per row), per-thread column sums */
#pragma omp parallel num_threads(used)
    {
        int tid = omp_get_thread_num();
        float *cs = pp + (int64_t)tid * 2 * B + B;
        for (int64_t j = 0; j < B; j++) cs[j] = 0.0f;
#pragma omp for schedule(static)
        for (int64_t i = 0; i < B; i++) {
            const float *r = s + i * B;
            float m = lr[i], acc = 0.0f;
#pragma omp simd reduction(+ : acc)
            for (int64_t j = 0; j < B; j++) {
                float v = scale * r[j];
                acc += mmu_exp(v - m);
                cs[j] += mmu_exp(v - lc[j]);
            }
            lr[i] = m + logf(acc);
        }
    }
    double loss = 0.0;
    for (int64_t j = 0; j < B; j++) {
        float sum = 0.0f;
        for (int t = 0; t < used; t++) sum += pp[(int64_t)t * 2 * B + B + j];
        lc[j] += logf(sum);
    }
    for (int64_t i = 0; i < B; i++) loss += (double)lr[i] + (double)lc[i] - 2.0 * (double)(scale * s[i * B + i]);
    MMU_CLEAR(part);
    if ((st = mmu_tensor_empty(out, MMU_FLOAT32, 0, NULL))) goto fail;
    mmu_f32(*out)[0] = (float)(loss / (2.0 * (double)B));
    mmu_node *n;
    mmu_tensor *ins[3] = {img, txt, logit_scale};
    if ((st = mmu_record(&n, *out, MMU_OP_CLIP_LOSS, 3, ins))) goto fail;
    if (n) {
        mmu_save(n, 0, img);
        mmu_save(n, 1, txt);
        mmu_save(n, 2, logit_scale);
        mmu_save(n, 3, S);
        mmu_save(n, 4, stats);
    }
    MMU_CLEAR(S);
    MMU_CLEAR(stats);
    return MMU_OK;
fail:
    MMU_CLEAR(S);
    MMU_CLEAR(stats);
    MMU_CLEAR(part);
    MMU_CLEAR(*out);
    return st;
}

// g () -> gin: img (B, D), txt (B, D), logit_scale ()
// dL/dlogits = g/2B * (softmax_row - I + softmax_col - I); dL/dS = scale * dL/dlogits
mmu_status mmu_clip_loss_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    mmu_tensor *img = n->saved[0], *txt = n->saved[1], *lsT = n->saved[2], *S = n->saved[3], *stats = n->saved[4];
    int64_t B = img->shape[0];
    int clamped;
    float scale = clip_scale(mmu_f32(lsT)[0], &clamped);
    float c = mmu_f32(g)[0] / (2.0f * (float)B);
    mmu_tensor *dS = NULL, *rowdot = NULL;
    mmu_status st;
    if ((st = mmu_tensor_empty(&dS, MMU_FLOAT32, 2, (int64_t[]){B, B}))) return st;
    if ((st = mmu_tensor_empty(&rowdot, MMU_FLOAT32, 1, (int64_t[]){B}))) goto done;
    const float *s = mmu_f32(S), *lr = mmu_f32(stats), *lc = lr + B;
    float *d = mmu_f32(dS), *rd = mmu_f32(rowdot);
    float cs = c * scale;
#pragma omp parallel for schedule(static) if (B * B > MMU_PAR_GRAIN)
    for (int64_t i = 0; i < B; i++) {
        const float *r = s + i * B;
        float *dr = d + i * B;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int64_t j = 0; j < B; j++) {
            float v = scale * r[j];
            float gl = mmu_exp(v - lr[i]) + mmu_exp(v - lc[j]);
            acc += gl * r[j];
            dr[j] = cs * gl;
        }
        acc -= 2.0f * r[i];
        dr[i] -= 2.0f * cs;
        rd[i] = acc;
    }
    if ((st = sim_backward(gin, n, d, img, txt))) goto done;
    if (n->inputs[2].needs_grad) {
        double t = 0.0;
        for (int64_t i = 0; i < B; i++) t += rd[i];
        float v = clamped ? 0.0f : (float)((double)c * scale * t);
        st = scalar_grad(&gin[2], lsT, v);
    }
done:
    MMU_CLEAR(dS);
    MMU_CLEAR(rowdot);
    return st;
}

/* ---------------------------------------------------------------- SigLIP */

/* Forward and backward share one pass: with e = exp(-|z|), softplus(z) = max(z, 0) + log(1 + e)
 * and sigmoid(z) = (z >= 0 ? 1 : e) / (1 + e). When a graph is recorded the forward writes
 * dL/dS (for an upstream gradient of 1) and the sums for d t and d b, so the backward is the two
 * GEMMs and a scale by g; S itself is never kept. */
// img (B, D), txt (B, D), t (), b () -> () = sum softplus(-label * (exp(t) S + b)) / B
mmu_status mmu_siglip_loss(mmu_tensor **out, mmu_tensor *img, mmu_tensor *txt, mmu_tensor *t, mmu_tensor *b) {
    mmu_status st;
    if ((st = check_pair("siglip_loss", img, txt)) || (st = check_scalar("siglip_loss", "t", t)) ||
        (st = check_scalar("siglip_loss", "b", b)))
        return st;
    int64_t B = img->shape[0];
    float scale = expf(mmu_f32(t)[0]), bias = mmu_f32(b)[0];
    int want = mmu_grad_enabled() && (img->requires_grad || txt->requires_grad || t->requires_grad ||
                                      b->requires_grad);
    mmu_tensor *S = NULL, *rows = NULL;
    if ((st = sim_matrix(&S, img, txt))) return st;
    if ((st = mmu_tensor_empty(&rows, MMU_FLOAT32, 2, (int64_t[]){B, 3}))) goto fail;
    float *s = mmu_f32(S), *rs = mmu_f32(rows);
    float inv = 1.0f / (float)B, cs = scale * inv;
#pragma omp parallel for schedule(static) if (B * B > MMU_PAR_GRAIN)
    for (int64_t i = 0; i < B; i++) {
        float *r = s + i * B;
        float zd = scale * r[i] + bias, sd = r[i];
        float acc = 0.0f, sb = 0.0f, stt = 0.0f;
        if (want) {
#pragma omp simd reduction(+ : acc, sb, stt)
            for (int64_t j = 0; j < B; j++) { /* label -1: loss softplus(z), dL/dz = sigmoid(z) */
                float sj = r[j], z = scale * sj + bias;
                float e = mmu_exp(-fabsf(z));
                acc += (z > 0.0f ? z : 0.0f) + mmu_log1p_unit(e);
                float sg = (z >= 0.0f ? 1.0f : e) / (1.0f + e);
                sb += sg;
                stt += sg * sj;
                r[j] = cs * sg; /* S is overwritten by dL/dS */
            }
            /* diagonal, label +1: sigmoid(z) - 1 instead of sigmoid(z) */
            sb -= 1.0f;
            stt -= sd;
            r[i] -= cs;
        } else {
#pragma omp simd reduction(+ : acc)
            for (int64_t j = 0; j < B; j++) {
                float z = scale * r[j] + bias;
                acc += (z > 0.0f ? z : 0.0f) + mmu_log1p_unit(mmu_exp(-fabsf(z)));
            }
        }
        /* diagonal: softplus(-zd) instead of softplus(zd) */
        rs[3 * i] = acc - zd;
        rs[3 * i + 1] = sb, rs[3 * i + 2] = stt;
    }
    double loss = 0.0, gb = 0.0, gt = 0.0;
    for (int64_t i = 0; i < B; i++) loss += rs[3 * i], gb += rs[3 * i + 1], gt += rs[3 * i + 2];
    MMU_CLEAR(rows);
    if ((st = mmu_tensor_empty(out, MMU_FLOAT32, 0, NULL))) goto fail;
    mmu_f32(*out)[0] = (float)(loss / (double)B);
    mmu_node *n;
    mmu_tensor *ins[4] = {img, txt, t, b};
    if ((st = mmu_record(&n, *out, MMU_OP_SIGLIP_LOSS, 4, ins))) goto fail;
    if (n) {
        mmu_save(n, 0, img);
        mmu_save(n, 1, txt);
        mmu_save(n, 2, t);
        mmu_save(n, 3, b);
        mmu_save(n, 4, S); /* holds dL/dS */
        n->ctx.f[0] = (double)scale * gt / (double)B; /* dL/dt at g = 1 */
        n->ctx.f[1] = gb / (double)B;                 /* dL/db at g = 1 */
    }
    MMU_CLEAR(S);
    return MMU_OK;
fail:
    MMU_CLEAR(S);
    MMU_CLEAR(rows);
    MMU_CLEAR(*out);
    return st;
}

// g () -> gin: img (B, D), txt (B, D), t (), b () ; dL/dS was formed by the forward
mmu_status mmu_siglip_loss_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    mmu_tensor *img = n->saved[0], *txt = n->saved[1], *dS = n->saved[4];
    float gv = mmu_f32(g)[0];
    mmu_status st;
    if ((st = sim_backward(gin, n, mmu_f32(dS), img, txt))) return st;
    if (gv != 1.0f)
        for (int k = 0; k < 2; k++)
            if (gin[k]) {
                float *p = mmu_f32(gin[k]);
                for (int64_t q = 0; q < gin[k]->numel; q++) p[q] *= gv;
            }
    if (n->inputs[2].needs_grad && (st = scalar_grad(&gin[2], n->saved[2], (float)(gv * n->ctx.f[0])))) return st;
    if (n->inputs[3].needs_grad && (st = scalar_grad(&gin[3], n->saved[3], (float)(gv * n->ctx.f[1])))) return st;
    return MMU_OK;
}
