/* Convolution and deconvolution on oneDNN (declared in mmu_dnnl.h): the layout work between
 * mmu's plain tensors and the primitives' blocked formats. */
#include <stdlib.h>
#include <string.h>

#include "dnnl_internal.h"

/* ---- convolution / deconvolution (mmu_dnnl.h) ----
 * mmu tensors are plain NCHW, but oneDNN's fast AVX-512 convolutions run on
 * blocked layouts (nChw16c activations, OIhw16i16o-like weights). Each call
 * therefore creates its primitive with format `any`, and reorders whichever
 * argument the primitive wants in another layout into a temporary buffer
 * (from our allocator) and back. The conv primitives and their reorders are
 * all cached: a reorder's key is its primitive's key plus the argument, since
 * the primitive's key fixes the layout it chose. The backward brings diff_dst
 * into the blocked layout once for both the data and the weights gradient. */

enum { CONV_FWD = 0, CONV_BWD_DATA = 1, CONV_BWD_WEIGHTS = 2 };

typedef struct { const mmu_conv_geom *g; int has_bias; } conv_ctx;

enum { CONV_MD_SRC, CONV_MD_WEI, CONV_MD_DST };

/* The descriptor of one argument: the user's plain layout, or (any) what the
 * primitive may choose. */
static dnnl_status_t conv_md(dnnl_memory_desc_t *out, const mmu_conv_geom *g, int which, int any) {
    int sp = g->sp;
    dnnl_dims_t dims, strides;
    int nd;
    if (which == CONV_MD_WEI) {
        /* (G, OC/G, IC/G, *k); G dim only for grouped convs */
        int gd = g->G > 1;
        nd = 2 + sp + gd;
        if (gd) dims[0] = g->G;
        dims[gd] = g->OC / g->G, dims[gd + 1] = g->IC / g->G;
        int64_t ks = 1;
        for (int d = sp - 1; d >= 0; d--) {
            dims[gd + 2 + d] = g->k[d];
            strides[gd + 2 + d] = ks;
            ks *= g->k[d];
        }
        if (!g->transposed) { /* torch (OC, IC/G, *k): row-major */
            strides[gd + 1] = ks;
            strides[gd] = ks * dims[gd + 1];
        } else { /* torch (IC, OC/G, *k) = (G, IC/G, OC/G, *k): o and i swapped */
            strides[gd] = ks;
            strides[gd + 1] = ks * dims[gd];
        }
        if (gd) strides[0] = ks * dims[1] * dims[2];
        if (any) return dnnl_memory_desc_create_with_tag(out, nd, dims, dnnl_f32, dnnl_format_tag_any);
        return dnnl_memory_desc_create_with_strides(out, nd, dims, dnnl_f32, strides);
    }
    nd = 2 + sp;
    dims[0] = g->N;
    dims[1] = which == CONV_MD_SRC ? g->IC : g->OC;
    for (int d = 0; d < sp; d++) dims[2 + d] = which == CONV_MD_SRC ? g->in[d] : g->out[d];
    if (any) return dnnl_memory_desc_create_with_tag(out, nd, dims, dnnl_f32, dnnl_format_tag_any);
    int64_t s = 1;
    for (int d = nd - 1; d >= 0; d--) {
        strides[d] = s;
        s *= dims[d] > 0 ? dims[d] : 1;
    }
    return dnnl_memory_desc_create_with_strides(out, nd, dims, dnnl_f32, strides);
}

static void conv_params(const mmu_conv_geom *g, dnnl_dims_t st, dnnl_dims_t dl, dnnl_dims_t pl, dnnl_dims_t pr) {
    for (int d = 0; d < g->sp; d++) {
        st[d] = g->stride[d];
        dl[d] = g->dilation[d] - 1; /* oneDNN counts the holes */
        pl[d] = g->pad_l[d];
        pr[d] = g->pad_r[d];
    }
}

/* The forward pd (also the hint of the backward ones). */
static dnnl_status_t conv_fwd_pd(dnnl_primitive_desc_t *pd, dnnl_engine_t eng, const_dnnl_primitive_attr_t attr,
                                 const conv_ctx *c, int has_bias) {
    const mmu_conv_geom *g = c->g;
    dnnl_memory_desc_t mds[4] = {0};
    dnnl_dims_t st, dl, pl, pr;
    conv_params(g, st, dl, pl, pr);
    dnnl_status_t s;
    if ((s = conv_md(&mds[0], g, CONV_MD_SRC, 1)) || (s = conv_md(&mds[1], g, CONV_MD_WEI, 1)) ||
        (s = conv_md(&mds[3], g, CONV_MD_DST, 1)) || (has_bias && (s = mmu_dnnl_make_md_1d(&mds[2], g->OC))))
        goto done;
    if (g->transposed)
        s = dnnl_deconvolution_forward_primitive_desc_create(pd, eng, dnnl_forward_training, dnnl_deconvolution_direct,
                                                             mds[0], mds[1], mds[2], mds[3], st, dl, pl, pr, attr);
    else
        s = dnnl_convolution_forward_primitive_desc_create(pd, eng, dnnl_forward_training, dnnl_convolution_direct,
                                                           mds[0], mds[1], mds[2], mds[3], st, dl, pl, pr, attr);
done:
    mmu_dnnl_destroy_mds(mds, 4);
    return s;
}

static dnnl_status_t create_conv_fwd(dnnl_primitive_desc_t *pd, dnnl_engine_t eng, const_dnnl_primitive_attr_t attr,
                                     void *vctx) {
    conv_ctx *c = vctx;
    return conv_fwd_pd(pd, eng, attr, c, c->has_bias);
}

static dnnl_status_t create_conv_bwd(dnnl_primitive_desc_t *pd, dnnl_engine_t eng, const_dnnl_primitive_attr_t attr,
                                     const conv_ctx *c, int dir) {
    const mmu_conv_geom *g = c->g;
    dnnl_memory_desc_t mds[4] = {0};
    dnnl_primitive_desc_t hint = NULL;
    dnnl_dims_t st, dl, pl, pr;
    conv_params(g, st, dl, pl, pr);
    dnnl_status_t s;
    if ((s = conv_fwd_pd(&hint, eng, NULL, c, c->has_bias)) || (s = conv_md(&mds[0], g, CONV_MD_SRC, 1)) ||
        (s = conv_md(&mds[1], g, CONV_MD_WEI, 1)) || (s = conv_md(&mds[3], g, CONV_MD_DST, 1)) ||
        (c->has_bias && (s = mmu_dnnl_make_md_1d(&mds[2], g->OC))))
        goto done;
    if (dir == CONV_BWD_DATA)
        s = g->transposed
                ? dnnl_deconvolution_backward_data_primitive_desc_create(pd, eng, dnnl_deconvolution_direct, mds[0],
                                                                         mds[1], mds[3], st, dl, pl, pr, hint, attr)
                : dnnl_convolution_backward_data_primitive_desc_create(pd, eng, dnnl_convolution_direct, mds[0],
                                                                       mds[1], mds[3], st, dl, pl, pr, hint, attr);
    else
        s = g->transposed
                ? dnnl_deconvolution_backward_weights_primitive_desc_create(
                      pd, eng, dnnl_deconvolution_direct, mds[0], mds[1], mds[2], mds[3], st, dl, pl, pr, hint, attr)
                : dnnl_convolution_backward_weights_primitive_desc_create(
                      pd, eng, dnnl_convolution_direct, mds[0], mds[1], mds[2], mds[3], st, dl, pl, pr, hint, attr);
done:
    if (hint) dnnl_primitive_desc_destroy(hint);
    mmu_dnnl_destroy_mds(mds, 4);
    return s;
}

static dnnl_status_t create_conv_bwd_data(dnnl_primitive_desc_t *pd, dnnl_engine_t eng,
                                          const_dnnl_primitive_attr_t attr, void *vctx) {
    return create_conv_bwd(pd, eng, attr, vctx, CONV_BWD_DATA);
}

static dnnl_status_t create_conv_bwd_weights(dnnl_primitive_desc_t *pd, dnnl_engine_t eng,
                                             const_dnnl_primitive_attr_t attr, void *vctx) {
    return create_conv_bwd(pd, eng, attr, vctx, CONV_BWD_WEIGHTS);
}

static void conv_key(cache_key *k, const mmu_conv_geom *g, int dir, int has_bias) {
    /* at most 9 + 7 * 3 words: filled directly, well inside KEY_MAX */
    int64_t *v = k->v, n = 0;
    v[n++] = 20 + dir;
    v[n++] = g->transposed;
    v[n++] = g->sp;
    v[n++] = g->N;
    v[n++] = g->IC;
    v[n++] = g->OC;
    v[n++] = g->G;
    for (int d = 0; d < g->sp && d < 3; d++) {
        v[n++] = g->in[d];
        v[n++] = g->k[d];
        v[n++] = g->out[d];
        v[n++] = g->stride[d];
        v[n++] = g->dilation[d];
        v[n++] = g->pad_l[d];
        v[n++] = g->pad_r[d];
    }
    v[n++] = has_bias;
    k->n = (int)n;
}

typedef struct { const_dnnl_memory_desc_t from, to; } reorder_ctx;

static dnnl_status_t create_reorder(dnnl_primitive_desc_t *pd, dnnl_engine_t eng, const_dnnl_primitive_attr_t attr,
                                    void *vctx) {
    reorder_ctx *r = vctx;
    return dnnl_reorder_primitive_desc_create(pd, r->from, eng, r->to, eng, attr);
}

/* Temporary buffers of one call, freed together. */
typedef struct { void *p[8]; size_t n[8]; int count; } conv_temps;

static void *temp_alloc(conv_temps *t, size_t bytes) {
    void *p = mmu_alloc(bytes ? bytes : 1);
    if (p) {
        t->p[t->count] = p;
        t->n[t->count++] = bytes ? bytes : 1;
    }
    return p;
}

/* Frees every temporary from index `keep` on (the ones allocated after a point). */
static void temps_free_from(conv_temps *t, int keep) {
    for (int i = keep; i < t->count; i++) mmu_free(t->p[i], t->n[i]);
    if (keep < t->count) t->count = keep;
}

static void temps_free(conv_temps *t) {
    for (int i = 0; i < t->count; i++) mmu_free(t->p[i], t->n[i]);
    t->count = 0;
}

/* The buffer holding argument `arg` of primitive p in p's layout: the user's
 * buffer when p takes the plain layout, else a temporary (filled by a cached
 * reorder when `fill`). tag distinguishes the reorders of one primitive. */
static mmu_status conv_arg_buf(void **out, const pinned *p, const cache_key *pkey, int arg, int tag,
                               const mmu_conv_geom *g, int which, void *user, int fill, conv_temps *tmp,
                               dnnl_stream_t stream) {
    const_dnnl_memory_desc_t want = dnnl_primitive_desc_query_md(p->pd, dnnl_query_exec_arg_md, arg);
    dnnl_memory_desc_t plain = NULL;
    if (!want || conv_md(&plain, g, which, 0) != dnnl_success)
        return mmu_fail(MMU_ERUNTIME, "oneDNN convolution: cannot describe argument %d", arg);
    mmu_status st = MMU_OK;
    if (dnnl_memory_desc_equal(want, plain)) {
        *out = user;
    } else if (!(*out = temp_alloc(tmp, dnnl_memory_desc_get_size(want)))) {
        st = mmu_fail(MMU_ENOMEM, "oneDNN convolution: out of memory for a %zu-byte reordered argument",
                      dnnl_memory_desc_get_size(want));
    } else if (fill) {
        cache_key key = *pkey;
        mmu_dnnl_key_push(&key, 0x5e0 + tag);
        reorder_ctx rc = {plain, want};
        pinned r = {0};
        if (!(st = mmu_dnnl_pin(&r, &key, create_reorder, &rc, "reorder"))) {
            st = mmu_dnnl_run_pinned(&r, stream, 2, (int[]){DNNL_ARG_FROM, DNNL_ARG_TO}, (void *[]){user, *out}, "reorder");
            mmu_dnnl_unpin(&r);
        }
    }
    dnnl_memory_desc_destroy(plain);
    return st;
}

/* Copies an output argument from p's layout (buf) back to the user's buffer. */
static mmu_status conv_arg_back(const pinned *p, const cache_key *pkey, int arg, int tag, const mmu_conv_geom *g,
                                int which, void *buf, void *user, dnnl_stream_t stream) {
    if (buf == user) return MMU_OK;
    const_dnnl_memory_desc_t have = dnnl_primitive_desc_query_md(p->pd, dnnl_query_exec_arg_md, arg);
    dnnl_memory_desc_t plain = NULL;
    if (!have || conv_md(&plain, g, which, 0) != dnnl_success)
        return mmu_fail(MMU_ERUNTIME, "oneDNN convolution: cannot describe argument %d", arg);
    cache_key key = *pkey;
    mmu_dnnl_key_push(&key, 0x5f0 + tag);
    reorder_ctx rc = {have, plain};
    pinned r = {0};
    mmu_status st = mmu_dnnl_pin(&r, &key, create_reorder, &rc, "reorder");
    if (!st) {
        st = mmu_dnnl_run_pinned(&r, stream, 2, (int[]){DNNL_ARG_FROM, DNNL_ARG_TO}, (void *[]){buf, user}, "reorder");
        mmu_dnnl_unpin(&r);
    }
    dnnl_memory_desc_destroy(plain);
    return st;
}

mmu_status mmu_dnnl_conv_fwd(const mmu_conv_geom *g, const float *src, const float *w, const float *bias,
                             float *dst) {
    mmu_status st;
    dnnl_stream_t stream = NULL;
    if ((st = mmu_dnnl_get_stream(&stream))) return st;
    mmu_sync_threads();
    conv_ctx c = {g, bias != NULL};
    cache_key key;
    conv_key(&key, g, CONV_FWD, c.has_bias);
    const char *what = g->transposed ? "deconvolution forward" : "convolution forward";
    pinned p = {0};
    if ((st = mmu_dnnl_pin(&p, &key, create_conv_fwd, &c, what))) return st;
    conv_temps tmp = {0};
    void *bs = NULL, *bw = NULL, *bd = NULL;
    if (!(st = conv_arg_buf(&bs, &p, &key, DNNL_ARG_SRC, 0, g, CONV_MD_SRC, (void *)src, 1, &tmp, stream)) &&
        !(st = conv_arg_buf(&bw, &p, &key, DNNL_ARG_WEIGHTS, 1, g, CONV_MD_WEI, (void *)w, 1, &tmp, stream)) &&
        !(st = conv_arg_buf(&bd, &p, &key, DNNL_ARG_DST, 2, g, CONV_MD_DST, dst, 0, &tmp, stream)) &&
        !(st = mmu_dnnl_run_pinned(&p, stream, 4, (int[]){DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST},
                          (void *[]){bs, bw, (void *)bias, bd}, what)))
        st = conv_arg_back(&p, &key, DNNL_ARG_DST, 2, g, CONV_MD_DST, bd, dst, stream);
    temps_free(&tmp);
    mmu_dnnl_unpin(&p);
    return st;
}

/* A stride-1 convolution's data gradient is itself a forward convolution:
 * diff_dst correlated with the spatially flipped kernel, in and out channels
 * swapped, padding d*(k-1) - pad on each side. oneDNN's forward kernels run
 * it well under the time of its backward-data kernels (measured on the
 * benchmark's 3x3 conv: about 40 vs 70 ms with torch's oneDNN), and its src
 * is diff_dst in the same blocked layout the weight gradient reads, so the
 * one reorder still serves both. Fills gt; 0 when the rule does not apply
 * (strided, transposed, or a padding beyond the kernel's reach). */
static int data_grad_as_fwd(mmu_conv_geom *gt, const mmu_conv_geom *g) {
    if (g->transposed) return 0;
    *gt = *g;
    gt->IC = g->OC;
    gt->OC = g->IC;
    for (int d = 0; d < g->sp; d++) {
        int64_t reach = g->dilation[d] * (g->k[d] - 1);
        if (g->stride[d] != 1 || g->pad_l[d] > reach || g->pad_r[d] > reach) return 0;
        gt->in[d] = g->out[d];
        gt->out[d] = g->in[d];
        gt->pad_l[d] = reach - g->pad_l[d];
        gt->pad_r[d] = reach - g->pad_r[d];
    }
    return 1;
}

// w (G, OC/G, IC/G, K) -> wt (G, IC/G, OC/G, K) with the K kernel cells reversed (a flip of
// every spatial dim at once)
static void flip_weights(float *wt, const float *w, int64_t G, int64_t OCg, int64_t ICg, int64_t K) {
#pragma omp parallel for schedule(static) if (G * OCg * ICg * K > MMU_PAR_GRAIN)
    for (int64_t go = 0; go < G * OCg; go++) {
        int64_t gi = go / OCg, o = go % OCg;
        for (int64_t i = 0; i < ICg; i++) {
            const float *src = w + (go * ICg + i) * K;
            float *dst = wt + ((gi * ICg + i) * OCg + o) * K;
            for (int64_t k = 0; k < K; k++) dst[k] = src[K - 1 - k];
        }
    }
}

mmu_status mmu_dnnl_conv_bwd(const mmu_conv_geom *g, const float *src, const float *w, const float *diff_dst,
                             float *diff_src, float *diff_w, float *diff_bias) {
    mmu_status st;
    dnnl_stream_t stream = NULL;
    if ((st = mmu_dnnl_get_stream(&stream))) return st;
    mmu_sync_threads();
    mmu_conv_geom gt;
    int via_fwd = diff_src && data_grad_as_fwd(&gt, g);
    const mmu_conv_geom *gd = via_fwd ? &gt : g;
    conv_ctx cd = {gd, 0}, cw = {g, diff_bias != NULL};
    cache_key kd, kw;
    conv_key(&kd, gd, via_fwd ? CONV_FWD : CONV_BWD_DATA, 0);
    conv_key(&kw, g, CONV_BWD_WEIGHTS, cw.has_bias);
    int want_w = diff_w || diff_bias;
    int64_t K = g->k[0] * (g->sp > 1 ? g->k[1] : 1) * (g->sp > 2 ? g->k[2] : 1);
    size_t wbytes = (size_t)(g->OC * (g->IC / g->G) * K) * sizeof(float);
    pinned pd = {0}, pw = {0};
    conv_temps tmp = {0};
    const char *dwhat = "convolution backward data";
    if (diff_src && (st = mmu_dnnl_pin(&pd, &kd, via_fwd ? create_conv_fwd : create_conv_bwd_data, &cd, dwhat))) goto done;
    if (want_w && (st = mmu_dnnl_pin(&pw, &kw, create_conv_bwd_weights, &cw, "convolution backward weights"))) goto done;
    /* the data primitive's (diff_dst, weights, diff_src) arguments and their shapes in gd */
    int a_dd = via_fwd ? DNNL_ARG_SRC : DNNL_ARG_DIFF_DST, a_ds = via_fwd ? DNNL_ARG_DST : DNNL_ARG_DIFF_SRC;
    int m_dd = via_fwd ? CONV_MD_SRC : CONV_MD_DST, m_ds = via_fwd ? CONV_MD_DST : CONV_MD_SRC;
    void *dd_d = NULL;
    if (diff_src) {
        void *bw = NULL, *bs = NULL, *uw = (void *)w;
        int mark; /* the temporaries after diff_dst's die with the data gradient */
        if (via_fwd) {
            if (!(uw = temp_alloc(&tmp, wbytes))) {
                st = mmu_fail(MMU_ENOMEM, "oneDNN %s: out of memory", dwhat);
                goto done;
            }
            flip_weights(uw, w, g->G, g->OC / g->G, g->IC / g->G, K);
        }
        if ((st = conv_arg_buf(&dd_d, &pd, &kd, a_dd, 0, gd, m_dd, (void *)diff_dst, 1, &tmp, stream)))
            goto done;
        mark = tmp.count;
        if ((st = conv_arg_buf(&bw, &pd, &kd, DNNL_ARG_WEIGHTS, 1, gd, CONV_MD_WEI, uw, 1, &tmp, stream)) ||
            (st = conv_arg_buf(&bs, &pd, &kd, a_ds, 2, gd, m_ds, diff_src, 0, &tmp, stream)) ||
            (st = mmu_dnnl_run_pinned(&pd, stream, 3, (int[]){a_dd, DNNL_ARG_WEIGHTS, a_ds}, (void *[]){dd_d, bw, bs}, dwhat)) ||
            (st = conv_arg_back(&pd, &kd, a_ds, 2, gd, m_ds, bs, diff_src, stream)))
            goto done;
        /* the blocked weights and diff_src go back to the allocator before the weight
         * gradient asks for buffers of the same sizes */
        temps_free_from(&tmp, mark);
    }
    if (want_w) {
        void *dd_w = NULL, *bs = NULL, *bwt = NULL, *uw = diff_w;
        const_dnnl_memory_desc_t mw = dnnl_primitive_desc_query_md(pw.pd, dnnl_query_exec_arg_md, DNNL_ARG_DIFF_DST);
        if (diff_src && dd_d != diff_dst &&
            dnnl_memory_desc_equal(mw, dnnl_primitive_desc_query_md(pd.pd, dnnl_query_exec_arg_md, a_dd)))
            dd_w = dd_d; /* already reordered for the data gradient */
        else if ((st = conv_arg_buf(&dd_w, &pw, &kw, DNNL_ARG_DIFF_DST, 0, g, CONV_MD_DST, (void *)diff_dst, 1,
                                    &tmp, stream)))
            goto done;
        if (!uw && !(uw = temp_alloc(&tmp, wbytes))) {
            st = mmu_fail(MMU_ENOMEM, "oneDNN convolution backward weights: out of memory");
            goto done;
        }
        if ((st = conv_arg_buf(&bs, &pw, &kw, DNNL_ARG_SRC, 1, g, CONV_MD_SRC, (void *)src, 1, &tmp, stream)) ||
            (st = conv_arg_buf(&bwt, &pw, &kw, DNNL_ARG_DIFF_WEIGHTS, 2, g, CONV_MD_WEI, uw, 0, &tmp, stream)) ||
            (st = mmu_dnnl_run_pinned(&pw, stream, 4,
                             (int[]){DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_WEIGHTS, DNNL_ARG_DIFF_BIAS},
                             (void *[]){bs, dd_w, bwt, diff_bias}, "convolution backward weights")))
            goto done;
        if (diff_w) st = conv_arg_back(&pw, &kw, DNNL_ARG_DIFF_WEIGHTS, 2, g, CONV_MD_WEI, bwt, diff_w, stream);
    }
done:
    temps_free(&tmp);
    mmu_dnnl_unpin(&pd);
    mmu_dnnl_unpin(&pw);
    return st;
}
