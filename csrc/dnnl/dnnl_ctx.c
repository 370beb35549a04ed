/* oneDNN engine, stream, primitive cache, and the typed wrappers declared in
 * mmu_dnnl.h (convolutions: dnnl_conv.c). Everything here uses oneDNN's v3 C API. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>

#include "dnnl_internal.h"

/* ------------------------------------------------------ engine and stream */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static dnnl_engine_t g_engine;
static dnnl_status_t g_init_status;

static void init_engine(void) { g_init_status = dnnl_engine_create(&g_engine, dnnl_cpu, 0); }

/* One stream per thread: streams are cheap, and a stream must not be used by
 * two threads at once (the binding releases the GIL around every op). */
static _Thread_local dnnl_stream_t t_stream;

mmu_status mmu_dnnl_get_stream(dnnl_stream_t *s) {
    pthread_once(&g_once, init_engine);
    if (g_init_status != dnnl_success)
        return mmu_fail(MMU_ERUNTIME, "oneDNN: cannot create the CPU engine (status %d)", (int)g_init_status);
    if (!t_stream && dnnl_stream_create(&t_stream, g_engine, dnnl_stream_default_flags) != dnnl_success)
        return mmu_fail(MMU_ERUNTIME, "oneDNN: cannot create a stream");
    *s = t_stream;
    return MMU_OK;
}

/* ------------------------------------------------------- primitive cache */
#define CACHE_BUCKETS 1024
#define CACHE_CAPACITY 4096

typedef struct entry {
    cache_key key;
    uint64_t hash;
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    size_t scratch_bytes;
    struct entry *next;            /* bucket chain */
    struct entry *older, *newer;   /* insertion order, for eviction */
    int users;                     /* executions in flight (they run outside the lock) */
    int evicted;                   /* unlinked while in use: the last user destroys it */
} entry;

static pthread_mutex_t g_cache_lock = PTHREAD_MUTEX_INITIALIZER;
static entry *g_buckets[CACHE_BUCKETS];
static entry *g_oldest, *g_newest;
static long g_created, g_hits, g_size;

void mmu_dnnl_key_push(cache_key *k, int64_t v) {
    if (k->n < KEY_MAX) k->v[k->n] = v;
    k->n++;
}

static void key_push_md(cache_key *k, const mmu_md *md) {
    mmu_dnnl_key_push(k, md->ndim);
    for (int d = 0; d < md->ndim; d++) {
        mmu_dnnl_key_push(k, md->dims[d]);
        mmu_dnnl_key_push(k, md->strides[d]);
    }
}

static void key_push_float(cache_key *k, float f) {
    int32_t bits;
    memcpy(&bits, &f, sizeof bits);
    mmu_dnnl_key_push(k, bits);
}

static uint64_t key_hash(const cache_key *k) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a over the words */
    for (int i = 0; i < k->n && i < KEY_MAX; i++) {
        h ^= (uint64_t)k->v[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static void entry_destroy(entry *e) {
    if (e->prim) dnnl_primitive_destroy(e->prim);
    if (e->pd) dnnl_primitive_desc_destroy(e->pd);
    free(e);
}

static void unlink_entry(entry *e) {
    entry **pp = &g_buckets[e->hash % CACHE_BUCKETS];
    while (*pp != e) pp = &(*pp)->next;
    *pp = e->next;
    if (e->older) e->older->newer = e->newer; else g_oldest = e->newer;
    if (e->newer) e->newer->older = e->older; else g_newest = e->older;
    g_size--;
}

/* Takes e out of the cache; frees it now, or when its last execution ends. */
static void retire(entry *e) {
    unlink_entry(e);
    if (e->users) e->evicted = 1;
    else entry_destroy(e);
}

/* Looks key up; on a miss calls create() to make the primitive descriptor and
 * builds the primitive. The returned entry stays valid until evicted, which
 * only happens under the lock... so callers copy what they need (prim, pd,
 * scratch size) while holding it: see exec_cached(). */
static mmu_status cache_get(entry **out, cache_key *key, pd_create_fn create, void *ctx, const char *what) {
    if (key->n > KEY_MAX)
        return mmu_fail(MMU_ERUNTIME, "oneDNN %s: primitive key too long (internal error)", what);
    mmu_dnnl_key_push(key, mmu_get_num_threads()); /* JIT kernels are tuned to the thread count */
    uint64_t h = key_hash(key);
    entry *e = g_buckets[h % CACHE_BUCKETS];
    for (; e; e = e->next)
        if (e->hash == h && e->key.n == key->n && !memcmp(e->key.v, key->v, key->n * sizeof(int64_t)))
            break;
    if (e) {
        g_hits++;
        *out = e;
        return MMU_OK;
    }
    dnnl_primitive_attr_t attr = NULL;
    if (dnnl_primitive_attr_create(&attr) != dnnl_success ||
        dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) != dnnl_success) {
        if (attr) dnnl_primitive_attr_destroy(attr);
        return mmu_fail(MMU_ERUNTIME, "oneDNN %s: cannot create primitive attributes", what);
    }
    e = calloc(1, sizeof *e);
    if (!e) {
        dnnl_primitive_attr_destroy(attr);
        return mmu_fail(MMU_ENOMEM, "oneDNN %s: out of memory", what);
    }
    dnnl_status_t s = create(&e->pd, g_engine, attr, ctx);
    dnnl_primitive_attr_destroy(attr);
    if (s != dnnl_success) {
        free(e);
        return mmu_fail(MMU_ERUNTIME, "oneDNN %s: no implementation for these shapes (status %d)", what, (int)s);
    }
    if (dnnl_primitive_create(&e->prim, e->pd) != dnnl_success) {
        entry_destroy(e);
        return mmu_fail(MMU_ERUNTIME, "oneDNN %s: cannot create the primitive", what);
    }
    e->scratch_bytes = dnnl_memory_desc_get_size(dnnl_primitive_desc_query_md(e->pd, dnnl_query_scratchpad_md, 0));
    e->key = *key;
    e->hash = h;
    e->next = g_buckets[h % CACHE_BUCKETS];
    g_buckets[h % CACHE_BUCKETS] = e;
    e->older = g_newest;
    if (g_newest) g_newest->newer = e; else g_oldest = e;
    g_newest = e;
    g_size++;
    g_created++;
    while (g_size > CACHE_CAPACITY) {
        entry *victim = g_oldest;
        retire(victim);
    }
    *out = e;
    return MMU_OK;
}

#define MAX_ARGS 12

mmu_status mmu_dnnl_pin(pinned *p, const cache_key *key0, pd_create_fn create, void *ctx, const char *what) {
    cache_key key = *key0; /* cache_get appends the thread count */
    pthread_mutex_lock(&g_cache_lock);
    entry *e = NULL;
    mmu_status st = cache_get(&e, &key, create, ctx, what);
    if (!st) {
        e->users++;
        p->e = e;
        p->prim = e->prim;
        p->pd = e->pd;
        p->scratch_bytes = e->scratch_bytes;
        if (e != g_newest) {
            if (e->older) e->older->newer = e->newer; else g_oldest = e->newer;
            e->newer->older = e->older;
            e->older = g_newest;
            e->newer = NULL;
            g_newest->newer = e;
            g_newest = e;
        }
    }
    pthread_mutex_unlock(&g_cache_lock);
    return st;
}

void mmu_dnnl_unpin(pinned *p) {
    if (!p->e) return;
    pthread_mutex_lock(&g_cache_lock);
    if (--p->e->users == 0 && p->e->evicted) entry_destroy(p->e);
    pthread_mutex_unlock(&g_cache_lock);
    p->e = NULL;
}

/* Executes a pinned primitive on (arg id, pointer) pairs (NULL pointers skipped). */
mmu_status mmu_dnnl_run_pinned(const pinned *p, dnnl_stream_t stream, int nargs, const int *arg_ids,
                             void *const *ptrs, const char *what) {
    mmu_status st = MMU_OK;
    dnnl_exec_arg_t args[MAX_ARGS + 1];
    dnnl_memory_t mems[MAX_ARGS + 1] = {0};
    void *scratch = NULL;
    int n = 0;
    for (int i = 0; i < nargs; i++) {
        if (!ptrs[i]) continue;
        const_dnnl_memory_desc_t md = dnnl_primitive_desc_query_md(p->pd, dnnl_query_exec_arg_md, arg_ids[i]);
        if (!md || dnnl_memory_create(&mems[n], md, g_engine, ptrs[i]) != dnnl_success) {
            st = mmu_fail(MMU_ERUNTIME, "oneDNN %s: cannot wrap argument %d", what, arg_ids[i]);
            goto done;
        }
        args[n].arg = arg_ids[i];
        args[n].memory = mems[n];
        n++;
    }
    if (p->scratch_bytes) {
        scratch = mmu_alloc(p->scratch_bytes);
        const_dnnl_memory_desc_t md = dnnl_primitive_desc_query_md(p->pd, dnnl_query_scratchpad_md, 0);
        if (!scratch || dnnl_memory_create(&mems[n], md, g_engine, scratch) != dnnl_success) {
            st = mmu_fail(MMU_ENOMEM, "oneDNN %s: cannot allocate a %zu-byte scratchpad", what, p->scratch_bytes);
            goto done;
        }
        args[n].arg = DNNL_ARG_SCRATCHPAD;
        args[n].memory = mems[n];
        n++;
    }
    if (dnnl_primitive_execute(p->prim, stream, n, args) != dnnl_success || dnnl_stream_wait(stream) != dnnl_success)
        st = mmu_fail(MMU_ERUNTIME, "oneDNN %s: execution failed", what);
done:
    for (int i = 0; i < MAX_ARGS + 1; i++)
        if (mems[i]) dnnl_memory_destroy(mems[i]);
    if (scratch) mmu_free(scratch, p->scratch_bytes);
    return st;
}

/* Finds or creates the primitive for `key`, then executes it with the given
 * (arg id, pointer) pairs: pin, run, unpin (the conv wrappers below use the
 * three steps apart, to run reorders around one primitive). */
static mmu_status exec_cached(cache_key *key, pd_create_fn create, void *ctx, const char *what, int nargs,
                              const int *arg_ids, void *const *ptrs) {
    mmu_status st;
    dnnl_stream_t stream = NULL;
    if ((st = mmu_dnnl_get_stream(&stream))) return st;
    mmu_sync_threads();
    pinned p = {0};
    if ((st = mmu_dnnl_pin(&p, key, create, ctx, what))) return st;
    st = mmu_dnnl_run_pinned(&p, stream, nargs, arg_ids, ptrs, what);
    mmu_dnnl_unpin(&p);
    return st;
}

void mmu_dnnl_stats(mmu_dnnl_counters *c) {
    pthread_mutex_lock(&g_cache_lock);
    c->primitives_created = g_created;
    c->cache_hits = g_hits;
    c->cache_size = g_size;
    pthread_mutex_unlock(&g_cache_lock);
}

const char *mmu_dnnl_version(void) {
    static char buf[96];
    const dnnl_version_t *v = dnnl_version();
    snprintf(buf, sizeof buf, "%d.%d.%d (%s)", v->major, v->minor, v->patch, v->hash);
    return buf;
}

/* -------------------------------------------------------- descriptors */
void mmu_md_contig(mmu_md *md, int ndim, const int64_t *dims) {
    md->ndim = ndim;
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        md->dims[d] = dims[d];
        md->strides[d] = s;
        s *= dims[d] > 0 ? dims[d] : 1;
    }
}

static dnnl_status_t make_md(dnnl_memory_desc_t *out, const mmu_md *md) {
    return dnnl_memory_desc_create_with_strides(out, md->ndim, md->dims, dnnl_f32, md->strides);
}

dnnl_status_t mmu_dnnl_make_md_1d(dnnl_memory_desc_t *out, int64_t n) {
    dnnl_dims_t dims = {n};
    return dnnl_memory_desc_create_with_tag(out, 1, dims, dnnl_f32, dnnl_a);
}

void mmu_dnnl_destroy_mds(dnnl_memory_desc_t *mds, int n) {
    for (int i = 0; i < n; i++)
        if (mds[i]) dnnl_memory_desc_destroy(mds[i]);
}

/* ----------------------------------------------------------------- matmul */
typedef struct { const mmu_md *a, *b, *bias, *c; int accumulate; } matmul_ctx;

static dnnl_status_t create_matmul(dnnl_primitive_desc_t *pd, dnnl_engine_t eng,
                                   const_dnnl_primitive_attr_t attr, void *vctx) {
    matmul_ctx *x = vctx;
    dnnl_memory_desc_t mds[4] = {0};
    dnnl_primitive_attr_t acc_attr = NULL;
    dnnl_post_ops_t post_ops = NULL;
    dnnl_status_t s;
    if ((s = make_md(&mds[0], x->a)) || (s = make_md(&mds[1], x->b)) || (s = make_md(&mds[3], x->c)) ||
        (x->bias && (s = make_md(&mds[2], x->bias))))
        goto done;
    if (x->accumulate) { /* dst = 1.0·dst + a @ b: the sum post-op reads dst inside the kernel */
        if ((s = dnnl_primitive_attr_clone(&acc_attr, attr)) || (s = dnnl_post_ops_create(&post_ops)) ||
            (s = dnnl_post_ops_append_sum(post_ops, 1.0f, 0, dnnl_data_type_undef)) ||
            (s = dnnl_primitive_attr_set_post_ops(acc_attr, post_ops)))
            goto done;
        attr = acc_attr;
    }
    s = dnnl_matmul_primitive_desc_create(pd, eng, mds[0], mds[1], mds[2], mds[3], attr);
done:
    if (post_ops) dnnl_post_ops_destroy(post_ops);
    if (acc_attr) dnnl_primitive_attr_destroy(acc_attr);
    mmu_dnnl_destroy_mds(mds, 4);
    return s;
}

static mmu_status matmul_run(const mmu_md *a, const float *pa, const mmu_md *b, const float *pb,
                             const mmu_md *bias, const float *pbias, const mmu_md *c, float *pc, int accumulate) {
    cache_key key = {.n = 0};
    mmu_dnnl_key_push(&key, accumulate ? 2 : 1);
    key_push_md(&key, a);
    key_push_md(&key, b);
    mmu_dnnl_key_push(&key, bias != NULL);
    if (bias) key_push_md(&key, bias);
    key_push_md(&key, c);
    matmul_ctx ctx = {a, b, bias, c, accumulate};
    int ids[4] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST};
    void *ptrs[4] = {(void *)pa, (void *)pb, bias ? (void *)pbias : NULL, pc};
    return exec_cached(&key, create_matmul, &ctx, accumulate ? "matmul (accumulating)" : "matmul", 4, ids, ptrs);
}

mmu_status mmu_dnnl_matmul(const mmu_md *a, const float *pa, const mmu_md *b, const float *pb,
                           const mmu_md *bias, const float *pbias, const mmu_md *c, float *pc) {
    return matmul_run(a, pa, b, pb, bias, pbias, c, pc, 0);
}

mmu_status mmu_dnnl_matmul_accumulate(const mmu_md *a, const float *pa, const mmu_md *b, const float *pb,
                                      const mmu_md *c, float *pc) {
    return matmul_run(a, pa, b, pb, NULL, NULL, c, pc, 1);
}

/* ---------------------------------------------------------------- eltwise */
static dnnl_alg_kind_t eltwise_alg(mmu_eltwise_alg alg, int use_dst) {
    switch (alg) {
    case MMU_ELT_GELU_ERF: return dnnl_eltwise_gelu_erf;
    case MMU_ELT_GELU_TANH: return dnnl_eltwise_gelu_tanh;
    case MMU_ELT_SILU: return dnnl_eltwise_swish;
    case MMU_ELT_TANH: return use_dst ? dnnl_eltwise_tanh_use_dst_for_bwd : dnnl_eltwise_tanh;
    case MMU_ELT_SIGMOID: return use_dst ? dnnl_eltwise_logistic_use_dst_for_bwd : dnnl_eltwise_logistic;
    case MMU_ELT_LOG: return dnnl_eltwise_log;
    case MMU_ELT_SQRT: return use_dst ? dnnl_eltwise_sqrt_use_dst_for_bwd : dnnl_eltwise_sqrt;
    case MMU_ELT_ABS: return dnnl_eltwise_abs;
    case MMU_ELT_POW: return dnnl_eltwise_pow;
    default: return dnnl_alg_kind_undef;
    }
}

int mmu_dnnl_eltwise_has_dst_bwd(mmu_eltwise_alg alg) {
    return alg == MMU_ELT_TANH || alg == MMU_ELT_SIGMOID || alg == MMU_ELT_SQRT;
}

typedef struct { dnnl_alg_kind_t alg; float alpha, beta; int64_t n; } eltwise_ctx;

static dnnl_status_t create_eltwise_fwd(dnnl_primitive_desc_t *pd, dnnl_engine_t eng,
                                        const_dnnl_primitive_attr_t attr, void *vctx) {
    eltwise_ctx *x = vctx;
    dnnl_memory_desc_t md = NULL;
    dnnl_status_t s = mmu_dnnl_make_md_1d(&md, x->n);
    if (!s) s = dnnl_eltwise_forward_primitive_desc_create(pd, eng, dnnl_forward_training, x->alg, md, md,
                                                           x->alpha, x->beta, attr);
    if (md) dnnl_memory_desc_destroy(md);
    return s;
}

static dnnl_status_t create_eltwise_bwd(dnnl_primitive_desc_t *pd, dnnl_engine_t eng,
                                        const_dnnl_primitive_attr_t attr, void *vctx) {
    eltwise_ctx *x = vctx;
    dnnl_memory_desc_t md = NULL;
    dnnl_primitive_desc_t hint = NULL;
    dnnl_status_t s = mmu_dnnl_make_md_1d(&md, x->n);
    if (!s) s = dnnl_eltwise_forward_primitive_desc_create(&hint, eng, dnnl_forward_training, x->alg, md, md,
                                                           x->alpha, x->beta, NULL);
    if (!s) s = dnnl_eltwise_backward_primitive_desc_create(pd, eng, x->alg, md, md, md, x->alpha, x->beta,
                                                            hint, attr);
    if (hint) dnnl_primitive_desc_destroy(hint);
    if (md) dnnl_memory_desc_destroy(md);
    return s;
}

mmu_status mmu_dnnl_eltwise_fwd(mmu_eltwise_alg alg, float alpha, float beta, const float *src,
                                float *dst, int64_t n) {
    if (n == 0) return MMU_OK;
    if (alg == MMU_ELT_SILU) alpha = 1.0f; /* oneDNN's swish is x * sigmoid(alpha * x) */
    /* the forward of a use_dst algorithm is the same function: use that
     * variant so the backward's forward hint matches */
    eltwise_ctx ctx = {eltwise_alg(alg, mmu_dnnl_eltwise_has_dst_bwd(alg)), alpha, beta, n};
    cache_key key = {.n = 0};
    mmu_dnnl_key_push(&key, 2);
    mmu_dnnl_key_push(&key, ctx.alg);
    key_push_float(&key, alpha);
    key_push_float(&key, beta);
    mmu_dnnl_key_push(&key, n);
    int ids[2] = {DNNL_ARG_SRC, DNNL_ARG_DST};
    void *ptrs[2] = {(void *)src, dst};
    return exec_cached(&key, create_eltwise_fwd, &ctx, "eltwise forward", 2, ids, ptrs);
}

mmu_status mmu_dnnl_eltwise_bwd(mmu_eltwise_alg alg, int use_dst, float alpha, float beta,
                                const float *data, const float *diff_dst, float *diff_src, int64_t n) {
    if (n == 0) return MMU_OK;
    if (alg == MMU_ELT_SILU) alpha = 1.0f;
    eltwise_ctx ctx = {eltwise_alg(alg, use_dst), alpha, beta, n};
    cache_key key = {.n = 0};
    mmu_dnnl_key_push(&key, 3);
    mmu_dnnl_key_push(&key, ctx.alg);
    key_push_float(&key, alpha);
    key_push_float(&key, beta);
    mmu_dnnl_key_push(&key, n);
    int ids[3] = {use_dst ? DNNL_ARG_DST : DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_SRC};
    void *ptrs[3] = {(void *)data, (void *)diff_dst, diff_src};
    return exec_cached(&key, create_eltwise_bwd, &ctx, "eltwise backward", 3, ids, ptrs);
}
