/* Define-by-run autograd.
 *
 * Each differentiable op calls mmu_record(), which creates a node holding one
 * edge per input (the input's grad_fn, or the leaf itself) plus whatever the
 * op saves for its backward. mmu_backward() collects the nodes reachable from
 * the root, counts for each node how many consumers will send it a gradient,
 * and processes nodes once all their consumers are done (Kahn's algorithm):
 * every node runs exactly once, after its gradient is complete. Unless
 * retain_graph is set, each node drops its saved tensors and edges as soon
 * as it has run, so the graph's memory is returned during the backward. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "mmu.h"
#include "../ops/ops.h"

const mmu_op_info mmu_op_table[MMU_OP_COUNT] = {
#define MMU_OP_INFO(name, backward) [MMU_OP_##name] = {#name, backward},
    MMU_OP_LIST(MMU_OP_INFO)
#undef MMU_OP_INFO
};

static _Thread_local int g_grad_disabled;

int mmu_grad_enabled(void) { return !g_grad_disabled; }

int mmu_set_grad_enabled(int enabled) {
    int prev = !g_grad_disabled;
    g_grad_disabled = !enabled;
    return prev;
}

mmu_status mmu_record(mmu_node **node, mmu_tensor *out, mmu_op op, int n, mmu_tensor *const *inputs) {
    *node = NULL;
    if (g_grad_disabled) return MMU_OK;
    int any = 0;
    for (int i = 0; i < n; i++)
        if (inputs[i] && inputs[i]->requires_grad) any = 1;
    if (!any) return MMU_OK;

    mmu_node *nd = calloc(1, sizeof *nd);
    mmu_edge *edges = calloc(n ? n : 1, sizeof *edges);
    if (!nd || !edges) {
        free(nd);
        free(edges);
        return mmu_fail(MMU_ENOMEM, "%s: out of memory recording the autograd graph", mmu_op_table[op].name);
    }
    nd->refcount = 1;
    nd->op = op;
    nd->n_inputs = n;
    nd->inputs = edges;
    for (int i = 0; i < n; i++) {
        mmu_tensor *in = inputs[i];
        if (!in) continue;
        edges[i].dtype = in->dtype;
        edges[i].ndim = in->ndim;
        memcpy(edges[i].shape, in->shape, sizeof in->shape);
        if (!in->requires_grad) continue;
        edges[i].needs_grad = 1;
        if (in->grad_fn) {
            edges[i].fn = in->grad_fn;
            mmu_node_incref(in->grad_fn);
        } else {
            edges[i].leaf = in;
            mmu_tensor_incref(in);
        }
    }
    nd->out_ndim = out->ndim;
    memcpy(nd->out_shape, out->shape, sizeof out->shape);
    mmu_node_decref(out->grad_fn);
    out->grad_fn = nd;
    out->requires_grad = 1;
    *node = nd;
    return MMU_OK;
}

void mmu_save(mmu_node *n, int slot, mmu_tensor *t) {
    mmu_tensor_incref(t);
    mmu_tensor_decref(n->saved[slot]);
    n->saved[slot] = t;
}

mmu_status mmu_save_output(mmu_node *n, int slot, mmu_tensor *out) {
    mmu_tensor *view = NULL;
    mmu_status st = mmu_tensor_detach(&view, out);
    if (st) return st;
    mmu_tensor_decref(n->saved[slot]);
    n->saved[slot] = view;
    return MMU_OK;
}

void mmu_node_incref(mmu_node *n) {
    if (n) __atomic_add_fetch(&n->refcount, 1, __ATOMIC_RELAXED);
}

/* Drops what the backward needed and the edges to the rest of the graph. */
static void node_release(mmu_node *n) {
    for (int s = 0; s < MMU_MAX_SAVED; s++) MMU_CLEAR(n->saved[s]);
    for (int i = 0; i < n->n_inputs; i++) {
        mmu_node *fn = n->inputs[i].fn;
        mmu_tensor *leaf = n->inputs[i].leaf;
        n->inputs[i].fn = NULL;
        n->inputs[i].leaf = NULL;
        mmu_node_decref(fn);
        mmu_tensor_decref(leaf);
    }
    free(n->extra);
    n->extra = NULL;
    MMU_CLEAR(n->grad_acc);
    n->released = 1;
}

void mmu_node_decref(mmu_node *n) {
    /* Iterative: a long chain of nodes (an RNN, 10k ops) must not recurse
     * once per node when the last tensor of the chain dies. */
    mmu_node *stack_buf[64], **stack = stack_buf;
    size_t cap = 64, top = 0;
    if (!n) return;
    stack[top++] = n;
    while (top) {
        mmu_node *cur = stack[--top];
        if (__atomic_sub_fetch(&cur->refcount, 1, __ATOMIC_ACQ_REL) != 0) continue;
        for (int s = 0; s < MMU_MAX_SAVED; s++) mmu_tensor_decref(cur->saved[s]);
        for (int i = 0; i < cur->n_inputs; i++) {
            mmu_tensor_decref(cur->inputs[i].leaf);
            if (!cur->inputs[i].fn) continue;
            if (top == cap) {
                mmu_node **bigger = malloc(2 * cap * sizeof *bigger);
                if (!bigger) { mmu_node_decref(cur->inputs[i].fn); continue; } /* recurse instead */
                memcpy(bigger, stack, top * sizeof *stack);
                if (stack != stack_buf) free(stack);
                stack = bigger;
                cap *= 2;
            }
            stack[top++] = cur->inputs[i].fn;
        }
        mmu_tensor_decref(cur->grad_acc);
        free(cur->extra);
        free(cur->inputs);
        free(cur);
    }
    if (stack != stack_buf) free(stack);
}

/* acc += g, elementwise, float32, same shape */
static void add_inplace(float *acc, const float *g, int64_t n) {
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)
    for (int64_t i = 0; i < n; i++) acc[i] += g[i];
}

mmu_status mmu_accumulate(mmu_tensor **acc, mmu_tensor *g) {
    if (!*acc) {
        mmu_tensor_incref(g);
        *acc = g;
        return MMU_OK;
    }
    if (!mmu_same_shape(*acc, g) || (*acc)->dtype != MMU_FLOAT32 || g->dtype != MMU_FLOAT32)
        return mmu_fail(MMU_ERUNTIME, "autograd: cannot accumulate a gradient of shape %s into one of shape %s",
                        mmu_shape_str(g), mmu_shape_str(*acc));
    if (!mmu_tensor_is_exclusive(*acc)) {
        /* someone else sees this buffer (a user's .grad view, a shared pass-through
         * gradient): accumulate into a fresh copy instead of writing through it */
        mmu_tensor *copy = NULL;
        mmu_status st = mmu_tensor_clone(&copy, *acc);
        if (st) return st;
        mmu_tensor_decref(*acc);
        *acc = copy;
    }
    add_inplace(mmu_f32(*acc), mmu_f32(g), g->numel);
    return MMU_OK;
}

mmu_status mmu_reduce_to_shape(mmu_tensor **out, mmu_tensor *g, int ndim, const int64_t *shape) {
    if (g->ndim == ndim && !memcmp(g->shape, shape, ndim * sizeof *shape)) {
        mmu_tensor_incref(g);
        *out = g;
        return MMU_OK;
    }
    /* g's shape is the broadcast of `shape` with others: sum the leading extra
     * dims and the dims where `shape` has 1, then view as `shape`. */
    int lead = g->ndim - ndim;
    unsigned mask = 0;
    for (int d = 0; d < g->ndim; d++)
        if (d < lead || (shape[d - lead] == 1 && g->shape[d] != 1)) mask |= 1u << d;
    mmu_tensor *summed = NULL;
    mmu_status st;
    if (mask) {
        st = mmu_reduce(&summed, MMU_RED_SUM, g, mask, 1);
        if (st) return st;
    } else {
        summed = g;
        mmu_tensor_incref(g);
    }
    st = mmu_tensor_view(out, summed, ndim, shape);
    mmu_tensor_decref(summed);
    return st;
}

/* Leaves (parameters) are shared by graphs that different threads may
 * backpropagate at the same time: their .grad is read, replaced and added to
 * only under this lock (torch's AccumulateGrad has one too). */
static pthread_mutex_t g_leaf_lock = PTHREAD_MUTEX_INITIALIZER;

mmu_tensor *mmu_get_grad(mmu_tensor *t) {
    pthread_mutex_lock(&g_leaf_lock);
    mmu_tensor *g = t->grad;
    mmu_tensor_incref(g);
    pthread_mutex_unlock(&g_leaf_lock);
    return g;
}

void mmu_set_grad(mmu_tensor *t, mmu_tensor *g) {
    mmu_tensor_incref(g);
    pthread_mutex_lock(&g_leaf_lock);
    mmu_tensor *old = t->grad;
    t->grad = g;
    pthread_mutex_unlock(&g_leaf_lock);
    mmu_tensor_decref(old);
}

static mmu_status accumulate_leaf(mmu_tensor *leaf, mmu_tensor *g) {
    pthread_mutex_lock(&g_leaf_lock);
    mmu_status st = mmu_accumulate(&leaf->grad, g);
    pthread_mutex_unlock(&g_leaf_lock);
    return st;
}

static int g_epoch;

mmu_status mmu_backward(mmu_tensor *root, mmu_tensor *grad, int retain_graph) {
    mmu_status st = MMU_OK;
    mmu_tensor *g0 = NULL;
    mmu_node **nodes = NULL, **ready = NULL;
    size_t n_nodes = 0, cap = 0, n_ready = 0;
    int prev_mode = mmu_set_grad_enabled(0);

    if (!root->requires_grad) {
        st = mmu_fail(MMU_ERUNTIME, "backward: the tensor does not require grad and has no grad_fn "
                      "(did you forget requires_grad=True, or run under no_grad?)");
        goto done;
    }
    if (grad) {
        if (grad->dtype != MMU_FLOAT32 || !mmu_same_shape(grad, root)) {
            st = mmu_fail(MMU_EVALUE, "backward: grad has shape %s (%s) but the tensor has shape %s (float32)",
                          mmu_shape_str(grad), mmu_dtype_name(grad->dtype), mmu_shape_str(root));
            goto done;
        }
        g0 = grad;
        mmu_tensor_incref(g0);
    } else {
        if (root->numel != 1) {
            st = mmu_fail(MMU_ERUNTIME, "backward: grad can be implicitly created only for scalar outputs; "
                          "the tensor has shape %s, pass grad=", mmu_shape_str(root));
            goto done;
        }
        if ((st = mmu_tensor_full(&g0, MMU_FLOAT32, root->ndim, root->shape, 1.0))) goto done;
    }
    if (!root->grad_fn) { /* a leaf: its gradient is the seed */
        st = accumulate_leaf(root, g0);
        goto done;
    }
    if (root->grad_fn->released) {
        st = mmu_fail(MMU_ERUNTIME, "backward: trying to backward through the graph a second time; "
                      "its saved tensors were freed (pass retain_graph=True to the first backward)");
        goto done;
    }

    /* 1. collect reachable nodes (each once) and count their consumers */
    int epoch = __atomic_add_fetch(&g_epoch, 1, __ATOMIC_RELAXED);
    cap = 64;
    nodes = malloc(cap * sizeof *nodes);
    if (!nodes) { st = mmu_fail(MMU_ENOMEM, "backward: out of memory"); goto done; }
    nodes[n_nodes++] = root->grad_fn;
    mmu_node_incref(root->grad_fn);
    root->grad_fn->epoch = epoch;
    root->grad_fn->pending = 0;
    for (size_t k = 0; k < n_nodes; k++) {
        mmu_node *n = nodes[k];
        for (int i = 0; i < n->n_inputs; i++) {
            mmu_node *fn = n->inputs[i].fn;
            if (!fn) continue;
            if (fn->epoch != epoch) {
                fn->epoch = epoch;
                fn->pending = 0;
                if (n_nodes == cap) {
                    mmu_node **bigger = realloc(nodes, 2 * cap * sizeof *nodes);
                    if (!bigger) { st = mmu_fail(MMU_ENOMEM, "backward: out of memory"); goto done; }
                    nodes = bigger;
                    cap *= 2;
                }
                nodes[n_nodes++] = fn;
                mmu_node_incref(fn);
            }
            fn->pending++;
        }
    }

    /* 2. run each node once all its consumers have sent their gradient */
    ready = malloc(n_nodes * sizeof *ready);
    if (!ready) { st = mmu_fail(MMU_ENOMEM, "backward: out of memory"); goto done; }
    MMU_CLEAR(root->grad_fn->grad_acc);
    root->grad_fn->grad_acc = g0;
    g0 = NULL;
    ready[n_ready++] = root->grad_fn;
    while (n_ready) {
        mmu_node *n = ready[--n_ready];
        mmu_tensor *g = n->grad_acc;
        n->grad_acc = NULL;
        if (n->released) {
            mmu_tensor_decref(g);
            st = mmu_fail(MMU_ERUNTIME, "backward: trying to backward through the graph a second time "
                          "(node %s was already freed; pass retain_graph=True)", mmu_op_table[n->op].name);
            goto done;
        }
        mmu_tensor *gin_buf[8] = {0}, **gin = gin_buf;
        if (n->n_inputs > 8 && !(gin = calloc(n->n_inputs, sizeof *gin))) {
            mmu_tensor_decref(g);
            st = mmu_fail(MMU_ENOMEM, "backward: out of memory");
            goto done;
        }
        if (g) st = mmu_op_table[n->op].backward(n, g, gin);
        mmu_tensor_decref(g);
        for (int i = 0; i < n->n_inputs; i++) {
            mmu_edge *e = &n->inputs[i];
            if (!st && gin[i] && e->needs_grad) {
                if (gin[i]->ndim != e->ndim || memcmp(gin[i]->shape, e->shape, e->ndim * sizeof(int64_t)))
                    st = mmu_fail(MMU_ERUNTIME, "backward of %s produced a gradient of shape %s for input %d "
                                  "of shape %s (internal error)", mmu_op_table[n->op].name,
                                  mmu_shape_str(gin[i]), i, mmu_dims_str(e->ndim, e->shape));
                else if (e->fn)
                    st = mmu_accumulate(&e->fn->grad_acc, gin[i]);
                else if (e->leaf)
                    st = accumulate_leaf(e->leaf, gin[i]);
            }
            mmu_tensor_decref(gin[i]);
            if (e->fn && --e->fn->pending == 0) ready[n_ready++] = e->fn;
        }
        if (gin != gin_buf) free(gin);
        if (st) goto done;
        if (!retain_graph) node_release(n);
    }

done:
    for (size_t k = 0; k < n_nodes; k++) {
        MMU_CLEAR(nodes[k]->grad_acc);
        mmu_node_decref(nodes[k]);
    }
    free(nodes);
    free(ready);
    mmu_tensor_decref(g0);
    mmu_set_grad_enabled(prev_mode);
    return st;
}
