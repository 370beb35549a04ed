/* What the files of csrc/dnnl/ share (not part of the oneDNN seam, mmu_dnnl.h): the
 * thread's stream, the primitive-cache key, and a cached primitive pinned for one call.
 * dnnl_ctx.c holds the engine, stream and cache; dnnl_conv.c the convolution layout work. */
#ifndef MMU_DNNL_INTERNAL_H
#define MMU_DNNL_INTERNAL_H

#include <oneapi/dnnl/dnnl.h>

#include "mmu_dnnl.h"

/* A primitive-cache key: the primitive's kind, shapes, strides and attributes. */
#define KEY_MAX 96
typedef struct { int64_t v[KEY_MAX]; int n; } cache_key;

/* Creates a primitive descriptor on eng with attr (user scratchpad mode) from a call's ctx. */
typedef dnnl_status_t (*pd_create_fn)(dnnl_primitive_desc_t *pd, dnnl_engine_t eng,
                                      const_dnnl_primitive_attr_t attr, void *ctx);

/* A cache entry held for the length of one call (users > 0 keeps it alive
 * even if another thread evicts it meanwhile). */
struct entry;
typedef struct {
    struct entry *e;
    dnnl_primitive_t prim;
    dnnl_primitive_desc_t pd;
    size_t scratch_bytes;
} pinned;


/* The calling thread's stream on the CPU engine (created on first use). */
mmu_status mmu_dnnl_get_stream(dnnl_stream_t *s);
/* Appends v to the key (keys longer than KEY_MAX never match a stored one). */
void mmu_dnnl_key_push(cache_key *k, int64_t v);
/* Looks the primitive for key0 up (creating it with create(ctx) on a miss) and holds it. */
mmu_status mmu_dnnl_pin(pinned *p, const cache_key *key0, pd_create_fn create, void *ctx, const char *what);
void mmu_dnnl_unpin(pinned *p);
/* Executes a pinned primitive on (arg id, pointer) pairs (NULL pointers skipped). */
mmu_status mmu_dnnl_run_pinned(const pinned *p, dnnl_stream_t stream, int nargs, const int *arg_ids,
                               void *const *ptrs, const char *what);
void mmu_dnnl_destroy_mds(dnnl_memory_desc_t *mds, int n);
/* A plain 1-D float32 descriptor of n elements (biases). */
dnnl_status_t mmu_dnnl_make_md_1d(dnnl_memory_desc_t *out, int64_t n);

#endif
