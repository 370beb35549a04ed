/* mmu core: tensors, storage, autograd tape, RNG, errors.
 *
 * This header is the whole contract between the C core and its users (the op
 * families in csrc/ops, csrc/loss, ... and the CPython binding in csrc/python).
 * No Python.h here or anywhere outside csrc/python/.
 *
 * Layout decision (made once): every tensor is row-major CONTIGUOUS. Views
 * that keep contiguity (reshape/view/flatten/squeeze/unsqueeze) share storage
 * with an offset; everything that would need strides (permute, transpose,
 * slicing, expand) materialises a copy. Kernels therefore never deal with
 * strides, and `.contiguous()` is free.
 *
 * Conventions: functions return an mmu_status (MMU_OK == 0); the message of
 * the last error lives in thread-local storage (mmu_error_message()).
 * Output arguments come first (llm.c style). Reference counts are atomic:
 * the binding releases the GIL around every op, so the core may be entered
 * from several threads at once.
 */
#ifndef MMU_CORE_H
#define MMU_CORE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define MMU_MAX_DIMS 6
#define MMU_MAX_SAVED 6

/* ---------------------------------------------------------------- errors */
typedef enum {
    MMU_OK = 0,
    MMU_EVALUE = 1,   /* bad shape / value          -> ValueError   */
    MMU_ETYPE = 2,    /* bad dtype / object         -> TypeError    */
    MMU_EINDEX = 3,   /* index or dim out of range  -> IndexError   */
    MMU_ENOMEM = 4,   /* allocation failed          -> MemoryError  */
    MMU_ERUNTIME = 5, /* anything else (oneDNN ...) -> RuntimeError */
} mmu_status;

/* Records the error message (printf-style) and returns `code`. */
mmu_status mmu_fail(mmu_status code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
const char *mmu_error_message(void);

/* ---------------------------------------------------------------- dtypes */
typedef enum { MMU_FLOAT32 = 0, MMU_INT64 = 1, MMU_BOOL = 2 } mmu_dtype;
size_t mmu_dtype_size(mmu_dtype dt); /* 0 for a code that is no mmu_dtype */
const char *mmu_dtype_name(mmu_dtype dt);

/* ------------------------------------------------------------- allocator */
/* 64-byte aligned buffers from a size-bucketed cache: freed buffers are kept
 * (up to a cap) and handed back for the next request of the same bucket, so
 * a training step does not return memory to the OS every iteration. */
void *mmu_alloc(size_t nbytes);
void mmu_free(void *ptr, size_t nbytes);
void mmu_alloc_stats(size_t *in_use, size_t *cached, size_t *peak);
void mmu_alloc_empty_cache(void);
void mmu_alloc_reset_peak(void); /* peak_bytes := bytes in use now */

/* --------------------------------------------------------------- storage */
typedef struct mmu_storage {
    void *data;
    size_t nbytes;
    long refcount;
    uint64_t version;  /* bumped by every in-place write through the mmu API
                          (torch's version counter, shared by the views);
                          writes through a NumPy view (t.numpy()) are not seen */
} mmu_storage;

/* ---------------------------------------------------------------- tensor */
struct mmu_node;

typedef struct mmu_tensor {
    long refcount;
    mmu_dtype dtype;
    int ndim;
    int64_t shape[MMU_MAX_DIMS];
    int64_t numel;
    mmu_storage *storage;
    size_t offset;              /* bytes into storage (views share storage) */
    int requires_grad;
    struct mmu_tensor *grad;    /* accumulated gradient (leaves)            */
    struct mmu_node *grad_fn;   /* node that produced this tensor, or NULL  */
    void *grad_hooks;           /* post-accumulate-grad hooks of a leaf: owned by the binding, NULL: none */
} mmu_tensor;

static inline void *mmu_data(const mmu_tensor *t) {
    return (char *)t->storage->data + t->offset;
}
static inline float *mmu_f32(const mmu_tensor *t) { return (float *)mmu_data(t); }
static inline int64_t *mmu_i64(const mmu_tensor *t) { return (int64_t *)mmu_data(t); }
static inline uint8_t *mmu_bool(const mmu_tensor *t) { return (uint8_t *)mmu_data(t); }

/* Every in-place write into t's memory (an optimizer step, an EMA update,
 * x.add_(...), x[i] = v) calls this, so that a backward through a node that
 * saved t before the write refuses to run on the new values. */
static inline void mmu_bump_version(mmu_tensor *t) {
    if (t) __atomic_add_fetch(&t->storage->version, 1, __ATOMIC_RELAXED);
}
static inline uint64_t mmu_version(const mmu_tensor *t) {
    return __atomic_load_n(&t->storage->version, __ATOMIC_RELAXED);
}

/* New uninitialised / zeroed tensor (refcount 1). */
mmu_status mmu_tensor_empty(mmu_tensor **out, mmu_dtype dt, int ndim, const int64_t *shape);
mmu_status mmu_tensor_zeros(mmu_tensor **out, mmu_dtype dt, int ndim, const int64_t *shape);
mmu_status mmu_tensor_full(mmu_tensor **out, mmu_dtype dt, int ndim, const int64_t *shape, double value);
/* Same shape/dtype as t. */
mmu_status mmu_tensor_empty_like(mmu_tensor **out, const mmu_tensor *t);
/* A view: same storage, new shape (numel must match). No autograd. */
mmu_status mmu_tensor_view(mmu_tensor **out, mmu_tensor *t, int ndim, const int64_t *shape);
/* A copy of the data (no autograd). */
mmu_status mmu_tensor_clone(mmu_tensor **out, const mmu_tensor *t);
/* A tensor sharing storage but detached from the graph. */
mmu_status mmu_tensor_detach(mmu_tensor **out, mmu_tensor *t);

void mmu_tensor_incref(mmu_tensor *t);
void mmu_tensor_decref(mmu_tensor *t); /* NULL-safe */
#define MMU_CLEAR(t) do { mmu_tensor_decref(t); (t) = NULL; } while (0)

/* True if nobody else can observe writes to t's memory. */
int mmu_tensor_is_exclusive(const mmu_tensor *t);

/* "(2, 3, 5)" into one of several rotating thread-local buffers. */
const char *mmu_shape_str(const mmu_tensor *t);
const char *mmu_dims_str(int ndim, const int64_t *shape);
int mmu_same_shape(const mmu_tensor *a, const mmu_tensor *b);

/* Normalise a possibly negative dim against ndim; MMU_EINDEX naming `op` on failure. */
mmu_status mmu_wrap_dim(int *out, int64_t dim, int ndim, const char *op);

/* Checks used by every op; they name the op and argument in the message. */
mmu_status mmu_check_dtype(const mmu_tensor *t, mmu_dtype dt, const char *op, const char *arg);

/* ------------------------------------------------------------- autograd */
/* The op table: every differentiable op, its name and its backward. The
 * X-macro keeps the set of ops visible in one place (ggml's op enum). */
#include "op_table.h"

typedef enum {
#define MMU_OP_ENUM(name, backward, ctx_i, ctx_f, extra) MMU_OP_##name,
    MMU_OP_LIST(MMU_OP_ENUM)
#undef MMU_OP_ENUM
    MMU_OP_COUNT
} mmu_op;

/* One edge of the graph: where the gradient of one input goes. */
typedef struct mmu_edge {
    struct mmu_node *fn;  /* the input's grad_fn, or NULL            */
    mmu_tensor *leaf;     /* a leaf input that requires grad, or NULL */
    int needs_grad;       /* fn or leaf set                           */
    mmu_dtype dtype;
    int ndim;
    int64_t shape[MMU_MAX_DIMS];
} mmu_edge;

typedef struct mmu_node {
    long refcount;
    mmu_op op;
    int n_inputs;
    mmu_edge *inputs;                /* n_inputs edges                   */
    mmu_tensor *saved[MMU_MAX_SAVED];/* tensors the backward needs       */
    struct { int64_t i[8]; double f[4]; } ctx; /* small op parameters */
    int64_t *extra;                  /* op-specific array (e.g. cat sizes) */
    int out_ndim;
    int64_t out_shape[MMU_MAX_DIMS];
    uint64_t saved_version[MMU_MAX_SAVED]; /* saved[s]'s storage version when saved */
    unsigned saved_output_mask;      /* bit s: saved[s] is the op's own output
                                        (mmu_save_output), so double backward
                                        can re-attach it to this node */
    /* Backward-run bookkeeping. Everything a run accumulates (gradients,
     * pending counts, what to prune) lives in the run, not here, so runs from
     * several threads over one graph do not meet; the fields below are the
     * graph's own state, read and written under the engine's graph lock. */
    int released;                    /* freed, or doomed by a run without retain_graph:
                                        no new run may start through this node */
    int holders;                     /* runs that may still execute this node; saved
                                        tensors and edges are dropped once released
                                        and no run holds the node */
    int freed;                       /* saved tensors and edges dropped */
    int epoch, run_index;            /* scratch of the run collecting the graph */
    pthread_mutex_t exec_lock;       /* held while a run executes the backward: a
                                        run that prunes switches edges off (needs_grad)
                                        for the call only */
} mmu_node;

/* Backward: given the gradient of the node's output, set grad_in[i] (a new
 * reference, shaped like input i) for every input with inputs[i].needs_grad.
 * grad_in entries start NULL; leaving one NULL means "zero". Must not write
 * into gout. */
typedef mmu_status (*mmu_backward_fn)(mmu_node *n, mmu_tensor *gout, mmu_tensor **grad_in);

/* One row of the op table: the op's name, its backward, and the names of the
 * fields its node keeps in ctx.i, ctx.f and extra (see op_table.h). The table
 * itself is defined with the ops (csrc/ops/op_table.c): the engine only
 * dispatches through it. */
typedef struct {
    const char *name;
    mmu_backward_fn backward;
    const char *ctx_i, *ctx_f, *extra;
} mmu_op_info;
extern const mmu_op_info mmu_op_table[MMU_OP_COUNT];

/* Grad mode is thread-local like torch's. */
int mmu_grad_enabled(void);
int mmu_set_grad_enabled(int enabled); /* returns previous */

/* If grad mode is on and any input requires grad, creates a node, makes it
 * out's grad_fn and returns it in *node (else *node = NULL). Inputs may be
 * NULL (optional args such as a missing bias). */
mmu_status mmu_record(mmu_node **node, mmu_tensor *out, mmu_op op, int n, mmu_tensor *const *inputs);
/* Keeps a reference to t for the backward (slot < MMU_MAX_SAVED), and its
 * version: the backward refuses to run if t was written in place since. */
void mmu_save(mmu_node *n, int slot, mmu_tensor *t);
/* MMU_ERUNTIME (torch's message) if a saved tensor of n was written in place
 * after it was saved; `who` prefixes the message. */
mmu_status mmu_check_saved_versions(const mmu_node *n, const char *who);
/* Saves an op's own output: a detached view of it, so that the node does not
 * hold its output's grad_fn (a reference cycle that would never be freed). */
mmu_status mmu_save_output(mmu_node *n, int slot, mmu_tensor *out);
/* The lock under which a node's edges, saved tensors and released flag
 * change; hold it to read them while backward runs may be going on. */
void mmu_graph_lock(void);
void mmu_graph_unlock(void);
void mmu_node_incref(mmu_node *n);
void mmu_node_decref(mmu_node *n);

/* A leaf's .grad, read or replaced under the lock the backward engine holds
 * while accumulating into it (several threads may backpropagate at once).
 * get returns a new reference (or NULL); set takes g (may be NULL). */
mmu_tensor *mmu_get_grad(mmu_tensor *t);
void mmu_set_grad(mmu_tensor *t, mmu_tensor *g);

/* Runs the backward pass from root (gradient `grad`, or 1 for a scalar). */
mmu_status mmu_backward(mmu_tensor *root, mmu_tensor *grad, int retain_graph);

/* Post-accumulate-grad hooks (torch's Tensor.register_post_accumulate_grad_hook): mmu_backward calls
 * mmu_grad_hooks_run(leaf) for every leaf whose grad_hooks is set, once per backward, right after the
 * last gradient that backward sends to the leaf was added to its .grad (data parallel starts a bucket's
 * all-reduce there, while the rest of the backward runs). A failed status stops the backward. The
 * binding sets both functions; leaves without hooks cost one pointer test per edge. */
extern mmu_status (*mmu_grad_hooks_run)(mmu_tensor *leaf);
extern void (*mmu_grad_hooks_free)(void *hooks); /* a tensor with hooks is freed */

/* torch.autograd.grad: the gradients of the n_out outputs (seeded with
 * grad_outputs[i], or 1 for a scalar output when grad_outputs or its entry is
 * NULL) with respect to the n_in inputs (leaves or non-leaf tensors), as new
 * tensors in results[0..n_in) — no .grad is touched. Only the nodes on a path
 * to some input run, and they compute only the gradients that lead there. An
 * input the outputs do not depend on gets NULL with allow_unused, else the
 * call fails. A non-leaf input's gradient is the gradient its grad_fn
 * receives. retain_graph as in mmu_backward. */
mmu_status mmu_grad(mmu_tensor **results, int n_out, mmu_tensor *const *outputs, mmu_tensor *const *grad_outputs,
                    int n_in, mmu_tensor *const *inputs, int retain_graph, int allow_unused);
/* The number of node backward functions run, and of input gradients they
 * produced, by mmu_backward / mmu_grad in this process (tests check that
 * pruning skips work). */
int64_t mmu_autograd_nodes_run(void);
int64_t mmu_autograd_grads_computed(void);
/* Drops a node's saved tensors and edges, as a backward without retain_graph
 * does after running it (the Python double-backward engine uses it). */
void mmu_node_release(mmu_node *n);

/* Adds g into *acc, in place when *acc is exclusively ours, else by a new
 * tensor. *acc == NULL adopts g. Used by the engine; handy for ops. */
mmu_status mmu_accumulate(mmu_tensor **acc, mmu_tensor *g);

/* ------------------------------------------------------------------- RNG */
/* Counter-based Philox4x32-10: value i of a draw depends only on (seed,
 * offset of the draw, i), so results are independent of thread scheduling. */
void mmu_manual_seed(uint64_t seed);
/* A generator of its own (mmu.Generator): the same Philox stream as the global
 * one, with its own key and counter. Every function taking an mmu_generator *
 * reads the global generator when given NULL. */
typedef struct {
    pthread_mutex_t lock;
    uint64_t seed, offset;
} mmu_generator;
void mmu_generator_init(mmu_generator *g, uint64_t seed);
void mmu_generator_destroy(mmu_generator *g);
uint64_t mmu_generator_default_seed(void); /* the global generator's seed before any manual_seed */
void mmu_generator_get_state(mmu_generator *g, uint64_t *seed, uint64_t *offset);
void mmu_generator_set_state(mmu_generator *g, uint64_t seed, uint64_t offset);
/* Reserves nblocks 128-bit blocks of g's stream; returns (key, first counter). */
void mmu_generator_reserve(mmu_generator *g, uint64_t nblocks, uint64_t *key, uint64_t *counter);
/* The generator state (seed, offset in 128-bit blocks), for checkpoints. */
void mmu_get_rng_state(uint64_t *seed, uint64_t *offset);
void mmu_set_rng_state(uint64_t seed, uint64_t offset);
/* Reserves n 128-bit blocks of the stream; returns (key, first counter). */
void mmu_rng_reserve(uint64_t nblocks, uint64_t *key, uint64_t *counter);
void mmu_philox(uint64_t key, uint64_t counter, uint32_t out[4]);
/* The blocks of counters base .. base + MMU_PHILOX_LANES - 1 at once (vectorised,
 * the same bits as mmu_philox): out[word][lane]. */
#define MMU_PHILOX_LANES 16
void mmu_philox_lanes(uint64_t key, uint64_t base, uint32_t out[4][MMU_PHILOX_LANES]);
/* float32 normal / uniform [0, 1) samples of g's stream (NULL: the global one) */
mmu_status mmu_randn(mmu_tensor **out, int ndim, const int64_t *shape, mmu_generator *g);
mmu_status mmu_rand(mmu_tensor **out, int ndim, const int64_t *shape, mmu_generator *g);

/* --------------------------------------------------------------- threads */
/* More threads than this is a mistake (oneDNN and libgomp die on absurd
 * counts); set_num_threads refuses it. */
#define MMU_MAX_THREADS 256
void mmu_set_num_threads(int n);
int mmu_get_num_threads(void);
/* Makes the calling thread's OpenMP team size follow mmu_set_num_threads. */
void mmu_sync_threads(void);
/* Sustained fp32 FMA GFLOP/s of this CPU on the current thread count (the
 * benchmarks' "fraction of peak" denominator); runs for about `seconds`. */
double mmu_measure_peak_gflops(double seconds);
/* ------------------------------------------------------------- checksum */
/* CRC-32C of n bytes, continuing from crc (0 to start): crc32c(b, crc32c(a, 0))
 * is the CRC of a followed by b. mmu.io stores it in the files it writes. */
uint32_t mmu_crc32c(uint32_t crc, const void *data, size_t n);

/* Whether a loop of `work` elements is worth a parallel region. */
#define MMU_PAR_GRAIN 32768

#endif
