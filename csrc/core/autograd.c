/* Define-by-run autograd.
 *
 * Each differentiable op calls mmu_record(), which creates a node holding one
 * edge per input (the input's grad_fn, or the leaf itself) plus whatever the
 * op saves for its backward. The engine collects the nodes reachable from
 * the roots, counts for each node how many consumers will send it a gradient,
 * and processes nodes once all their consumers are done (Kahn's algorithm):
 * every node runs exactly once, after its gradient is complete. Unless
 * retain_graph is set, each node drops its saved tensors and edges as soon
 * as it has run, so the graph's memory is returned during the backward.
 *
 * mmu_backward() sends every gradient to the leaves' .grad. mmu_grad()
 * (torch.autograd.grad) runs the same engine in capture mode: gradients of
 * the requested inputs are collected into new tensors, and the graph is
 * pruned first — a node runs only if it leads to a requested input, and
 * edges leading nowhere are switched off for the run (needs_grad cleared,
 * restored afterwards) so backward functions skip those gradients.
 *
 * Threads: several threads may backpropagate through one graph at once (two
 * losses sharing a trunk, the same graph with retain_graph=True). What a run
 * accumulates — gradients, pending counts, what it prunes — lives in the run
 * (run_node), never in the shared nodes. The graph's own state (edges, saved
 * tensors, released/holders) changes only under g_graph_lock, held to collect
 * a graph and to hand a node back, never around a kernel. A run without
 * retain_graph dooms the nodes it will run when it collects them (no later run
 * may start through them: one of two such runs succeeds, the other raises the
 * usual "second time" error), and a node's saved tensors go only once no run
 * holds it. A node's exec_lock is held around its backward call, because a
 * pruning run switches the node's edges off for that call. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "mmu.h"

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
    if (pthread_mutex_init(&nd->exec_lock, NULL)) {
        free(nd);
        free(edges);
        return mmu_fail(MMU_ERUNTIME, "%s: cannot create a lock for the autograd graph", mmu_op_table[op].name);
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
    n->saved_version[slot] = t ? mmu_version(t) : 0;
    n->saved_output_mask &= ~(1u << slot);
}

mmu_status mmu_check_saved_versions(const mmu_node *n, const char *who) {
    for (int s = 0; s < MMU_MAX_SAVED; s++) {
        const mmu_tensor *t = n->saved[s];
        if (!t || mmu_version(t) == n->saved_version[s]) continue;
        return mmu_fail(MMU_ERUNTIME, "%s: one of the variables needed for gradient computation has been modified by "
                        "an inplace operation: the %s tensor of shape %s saved by %s (saved tensor %d%s) is at "
                        "version %llu; expected version %llu instead. Write into a clone, or compute it again "
                        "after the write", who, mmu_dtype_name(t->dtype), mmu_shape_str(t),
                        mmu_op_table[n->op].name, s, n->saved_output_mask & (1u << s) ? ", the op's output" : "",
                        (unsigned long long)mmu_version(t), (unsigned long long)n->saved_version[s]);
    }
    return MMU_OK;
}

mmu_status mmu_save_output(mmu_node *n, int slot, mmu_tensor *out) {
    mmu_tensor *view = NULL;
    mmu_status st = mmu_tensor_detach(&view, out);
    if (st) return st;
    mmu_tensor_decref(n->saved[slot]);
    n->saved[slot] = view;
    n->saved_version[slot] = mmu_version(view);
    n->saved_output_mask |= 1u << slot;
    return MMU_OK;
}

void mmu_node_incref(mmu_node *n) {
    if (n) __atomic_add_fetch(&n->refcount, 1, __ATOMIC_RELAXED);
}

/* Guards the graph structure every run walks: edges, saved tensors, released,
 * holders, freed and the collection scratch (epoch, run_index). Held to
 * collect a graph and to hand nodes back, never around a backward kernel. */
static pthread_mutex_t g_graph_lock = PTHREAD_MUTEX_INITIALIZER;

void mmu_graph_lock(void) { pthread_mutex_lock(&g_graph_lock); }
void mmu_graph_unlock(void) { pthread_mutex_unlock(&g_graph_lock); }

/* With the graph lock held: once n is released and no run holds it, drops what
 * the backward needed and the edges to the rest of the graph. */
static void node_maybe_free(mmu_node *n) {
    if (!n->released || n->holders || n->freed) return;
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
    n->freed = 1;
}

void mmu_node_release(mmu_node *n) {
    pthread_mutex_lock(&g_graph_lock);
    n->released = 1;
    node_maybe_free(n);
    pthread_mutex_unlock(&g_graph_lock);
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
        free(cur->extra);
        free(cur->inputs);
        pthread_mutex_destroy(&cur->exec_lock);
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

/* Whether op's backward adds into gin[i] when it is handed one, instead of making a
 * new gradient: a linear's weight and bias. The engine then hands it the leaf's own
 * .grad (when that is an exclusive float32 tensor of the leaf's shape), so a weight
 * used by several linears (tasks run as separate passes, grad accumulation) gets
 * each product added by the GEMM itself: no temporary the weight's size, no pass of
 * add_inplace over it. */
static int accumulates_into(mmu_op op, int i) { return op == MMU_OP_LINEAR && (i == 1 || i == 2); }

/* With g_leaf_lock held: e's leaf's .grad, referenced, if op's backward may add into it. */
static mmu_tensor *leaf_grad_to_accumulate(mmu_op op, int i, const mmu_edge *e) {
    mmu_tensor *acc = e->leaf ? e->leaf->grad : NULL;
    if (!accumulates_into(op, i) || !acc || acc->dtype != MMU_FLOAT32 || !mmu_tensor_is_exclusive(acc) ||
        acc->ndim != e->ndim || memcmp(acc->shape, e->shape, e->ndim * sizeof(int64_t)))
        return NULL;
    mmu_tensor_incref(acc);
    return acc;
}

static int g_epoch; /* under g_graph_lock */
static int64_t g_nodes_run, g_grads_computed;

int64_t mmu_autograd_nodes_run(void) { return __atomic_load_n(&g_nodes_run, __ATOMIC_RELAXED); }
int64_t mmu_autograd_grads_computed(void) { return __atomic_load_n(&g_grads_computed, __ATOMIC_RELAXED); }

/* node->want bits */
enum { WANT_TARGET = 1, WANT_RUN = 2 };

/* What mmu_grad asks of the engine; NULL for mmu_backward. */
typedef struct {
    int n_in;
    mmu_tensor *const *inputs;
    mmu_tensor **results; /* accumulated gradients, one per input */
    char *reached;        /* the input is on the graph (a zero gradient if none arrived) */
} grad_capture;

static int is_target_leaf(const grad_capture *cap, const mmu_tensor *leaf) {
    for (int k = 0; k < cap->n_in; k++)
        if (cap->inputs[k] == leaf) return 1;
    return 0;
}

/* out += g for every requested input equal to `leaf` (a leaf) or whose grad_fn is `fn` */
static mmu_status capture_grad(grad_capture *cap, const mmu_tensor *leaf, const mmu_node *fn, mmu_tensor *g) {
    for (int k = 0; k < cap->n_in; k++) {
        mmu_tensor *in = cap->inputs[k];
        if (leaf ? in != leaf : in->grad_fn != fn) continue;
        cap->reached[k] = 1;
        mmu_status st = g ? mmu_accumulate(&cap->results[k], g) : MMU_OK;
        if (st) return st;
    }
    return MMU_OK;
}

typedef struct { mmu_node *n; int i; } dfs_frame;

/* One node as one run sees it. */
typedef struct {
    mmu_node *n;          /* a reference of the run's own                      */
    mmu_tensor *grad;     /* the gradient of n's output accumulated so far     */
    int pending;          /* consumers that have yet to send their gradient    */
    size_t first_edge;    /* n's edges are edge_to/edge_on/edge_off[first_edge..] */
    unsigned char want;   /* WANT_* bits                                       */
    unsigned char target; /* n is a requested input's grad_fn (capture)        */
    unsigned char held;   /* still counted in n->holders                       */
} run_node;

/* With the graph lock held: the run is done with node k. */
static void run_drop(run_node *rn) {
    if (!rn->held) return;
    rn->held = 0;
    rn->n->holders--;
    node_maybe_free(rn->n);
}

/* Post-accumulate-grad hooks of one backward run (mmu.h): how many of the run's
 * edges have yet to deliver a gradient to each hooked leaf; the leaf's hooks run
 * when its count reaches 0, i.e. when its .grad is final for this backward. Set
 * up only when some leaf of the graph has hooks. */
mmu_status (*mmu_grad_hooks_run)(mmu_tensor *leaf);
void (*mmu_grad_hooks_free)(void *hooks);

typedef struct {
    int *slot_of_edge;  /* per edge of the run: its hooked leaf's slot, or -1 */
    mmu_tensor **leaf;  /* per slot: the leaf (held by the graph's edges until the last one ran) */
    int *left;          /* per slot: edges still to deliver */
    int n;
} run_hooks;

static mmu_status run_hooks_init(run_hooks *h, const run_node *nodes, size_t n_nodes, size_t n_edges,
                                 const unsigned char *edge_on, const int *edge_to, const char *who) {
    int any = 0;
    for (size_t k = 0; k < n_nodes && !any; k++)
        for (int i = 0; i < nodes[k].n->n_inputs; i++) {
            size_t ei = nodes[k].first_edge + i;
            mmu_tensor *leaf = nodes[k].n->inputs[i].leaf;
            if (edge_on[ei] && edge_to[ei] < 0 && leaf && leaf->grad_hooks) any = 1;
        }
    if (!any || !mmu_grad_hooks_run) return MMU_OK;
    h->slot_of_edge = malloc(n_edges * sizeof *h->slot_of_edge);
    h->leaf = malloc(n_edges * sizeof *h->leaf);
    h->left = malloc(n_edges * sizeof *h->left);
    if (!h->slot_of_edge || !h->leaf || !h->left) return mmu_fail(MMU_ENOMEM, "%s: out of memory", who);
    for (size_t k = 0; k < n_nodes; k++)
        for (int i = 0; i < nodes[k].n->n_inputs; i++) {
            size_t ei = nodes[k].first_edge + i;
            mmu_tensor *leaf = nodes[k].n->inputs[i].leaf;
            h->slot_of_edge[ei] = -1;
            if (!edge_on[ei] || edge_to[ei] >= 0 || !leaf || !leaf->grad_hooks) continue;
            int s = 0;
            while (s < h->n && h->leaf[s] != leaf) s++;
            if (s == h->n) h->leaf[h->n] = leaf, h->left[h->n++] = 0;
            h->left[s]++;
            h->slot_of_edge[ei] = s;
        }
    return MMU_OK;
}

/* Edge ei has delivered its gradient (or none): the leaf's hooks run after its last one. */
static mmu_status run_hooks_edge_done(run_hooks *h, size_t ei) {
    int s = h->slot_of_edge ? h->slot_of_edge[ei] : -1;
    if (s < 0 || --h->left[s]) return MMU_OK;
    return mmu_grad_hooks_run(h->leaf[s]);
}

static void run_hooks_free(run_hooks *h) {
    free(h->slot_of_edge);
    free(h->leaf);
    free(h->left);
}

/* The engine shared by mmu_backward and mmu_grad: roots[r] receives seeds[r]
 * (references stolen; NULL entries already consumed). `who` prefixes errors. */
static mmu_status run_engine(int n_roots, mmu_node **roots, mmu_tensor **seeds, int retain_graph,
                             grad_capture *cap, const char *who) {
    mmu_status st = MMU_OK;
    run_node *nodes = NULL;
    size_t *ready = NULL, *root_k = NULL;
    int *edge_to = NULL;                    /* run index of the edge's node, or -1 */
    unsigned char *edge_on = NULL;          /* the edge carries a gradient in this run */
    unsigned char *edge_off = NULL;         /* ... and is switched off for the call (pruned) */
    dfs_frame *stack = NULL;
    run_hooks hooks = {0};                  /* post-accumulate-grad hooks (backward only) */
    size_t n_nodes = 0, cap_nodes = 64, n_ready = 0, top = 0, cap_stack = 64, n_edges = 0;
    int locked = 0;

    nodes = calloc(cap_nodes, sizeof *nodes);
    stack = malloc(cap_stack * sizeof *stack);
    root_k = malloc((n_roots ? n_roots : 1) * sizeof *root_k);
    if (!nodes || !stack || !root_k) { st = mmu_fail(MMU_ENOMEM, "%s: out of memory", who); goto done; }

    pthread_mutex_lock(&g_graph_lock);
    locked = 1;
    int epoch = ++g_epoch;

    /* 1. collect the reachable nodes in post-order (every node after all the
     * nodes it feeds from), iteratively: graphs can be 10k nodes deep. A
     * released node is not walked through: its edges are gone or going. */
    for (int r = 0; r < n_roots; r++) {
        if (roots[r]->released) {
            st = mmu_fail(MMU_ERUNTIME, "%s: trying to backward through the graph a second time; its saved tensors "
                          "were freed (pass retain_graph=True to the first backward%s)", who, cap ? " or grad" : "");
            goto done;
        }
        if (roots[r]->epoch == epoch) continue;
        roots[r]->epoch = epoch;
        stack[top++] = (dfs_frame){roots[r], 0};
        while (top) {
            dfs_frame *f = &stack[top - 1];
            if (!f->n->released && f->i < f->n->n_inputs) {
                mmu_node *fn = f->n->inputs[f->i++].fn;
                if (!fn || fn->epoch == epoch) continue;
                fn->epoch = epoch;
                if (top == cap_stack) {
                    dfs_frame *bigger = realloc(stack, 2 * cap_stack * sizeof *stack);
                    if (!bigger) { st = mmu_fail(MMU_ENOMEM, "%s: out of memory", who); goto done; }
                    stack = bigger;
                    cap_stack *= 2;
                }
                stack[top++] = (dfs_frame){fn, 0};
                continue;
            }
            if (n_nodes == cap_nodes) {
                run_node *bigger = realloc(nodes, 2 * cap_nodes * sizeof *nodes);
                if (!bigger) { st = mmu_fail(MMU_ENOMEM, "%s: out of memory", who); goto done; }
                nodes = bigger;
                cap_nodes *= 2;
            }
            nodes[n_nodes] = (run_node){.n = f->n, .first_edge = n_edges};
            f->n->run_index = (int)n_nodes++;
            n_edges += f->n->n_inputs;
            mmu_node_incref(f->n);
            top--;
        }
    }
    for (int r = 0; r < n_roots; r++) root_k[r] = roots[r]->run_index;

    /* the edges as this run sees them: a live node's edge carries a gradient
     * when it has somewhere to go (its needs_grad at record time) */
    edge_to = malloc((n_edges ? n_edges : 1) * sizeof *edge_to);
    edge_on = calloc(n_edges ? n_edges : 1, 1);
    edge_off = calloc(n_edges ? n_edges : 1, 1);
    ready = malloc((n_nodes ? n_nodes : 1) * sizeof *ready);
    if (!edge_to || !edge_on || !edge_off || !ready) { st = mmu_fail(MMU_ENOMEM, "%s: out of memory", who); goto done; }
    for (size_t k = 0; k < n_nodes; k++) {
        mmu_node *n = nodes[k].n;
        for (int i = 0; i < n->n_inputs; i++) {
            mmu_edge *e = &n->inputs[i];
            size_t ei = nodes[k].first_edge + i;
            edge_to[ei] = !n->released && e->fn ? e->fn->run_index : -1;
            edge_on[ei] = !n->released && (e->fn || e->leaf);
        }
    }

    /* 2. which nodes run: all of them for backward; for grad, those with an
     * edge to a requested leaf or to a node that is wanted (post-order makes
     * every producer decided before its consumers) */
    if (!cap) {
        for (size_t k = 0; k < n_nodes; k++) {
            if (nodes[k].n->released) {
                st = mmu_fail(MMU_ERUNTIME, "%s: trying to backward through the graph a second time "
                              "(node %s was already freed; pass retain_graph=True)", who,
                              mmu_op_table[nodes[k].n->op].name);
                goto done;
            }
            nodes[k].want = WANT_RUN;
        }
    } else {
        for (int k = 0; k < cap->n_in; k++) {
            mmu_node *fn = cap->inputs[k]->grad_fn;
            if (fn && fn->epoch == epoch) nodes[fn->run_index].want = WANT_TARGET, nodes[fn->run_index].target = 1;
        }
        for (size_t k = 0; k < n_nodes; k++) {
            run_node *rn = &nodes[k];
            if (rn->n->released && !rn->target) {
                st = mmu_fail(MMU_ERUNTIME, "%s: trying to backward through the graph a second time "
                              "(node %s was already freed; pass retain_graph=True)", who, mmu_op_table[rn->n->op].name);
                goto done;
            }
            for (int i = 0; i < rn->n->n_inputs; i++) {
                size_t ei = rn->first_edge + i;
                mmu_tensor *leaf = rn->n->inputs[i].leaf;
                if ((edge_to[ei] >= 0 && nodes[edge_to[ei]].want) ||
                    (edge_on[ei] && leaf && is_target_leaf(cap, leaf))) rn->want |= WANT_RUN;
            }
        }
        /* switch off the edges of running nodes that lead nowhere */
        for (size_t k = 0; k < n_nodes; k++) {
            run_node *rn = &nodes[k];
            if (!(rn->want & WANT_RUN)) continue;
            for (int i = 0; i < rn->n->n_inputs; i++) {
                size_t ei = rn->first_edge + i;
                mmu_tensor *leaf = rn->n->inputs[i].leaf;
                if (!edge_on[ei] || (edge_to[ei] >= 0 && nodes[edge_to[ei]].want)) continue;
                if (leaf && is_target_leaf(cap, leaf)) {
                    for (int j = 0; j < cap->n_in; j++)
                        if (cap->inputs[j] == leaf) cap->reached[j] = 1;
                    continue;
                }
                edge_on[ei] = 0;
                edge_off[ei] = 1;
            }
        }
    }
    for (size_t k = 0; k < n_nodes; k++) {
        if (!(nodes[k].want & WANT_RUN)) continue;
        for (int i = 0; i < nodes[k].n->n_inputs; i++) {
            size_t ei = nodes[k].first_edge + i;
            if (edge_on[ei] && edge_to[ei] >= 0) nodes[edge_to[ei]].pending++;
        }
    }
    /* the run holds every node it collected; without retain_graph it dooms
     * those it runs, so no run starts through them from now on */
    for (size_t k = 0; k < n_nodes; k++) {
        nodes[k].held = 1;
        nodes[k].n->holders++;
        if (!retain_graph && (nodes[k].want & WANT_RUN)) nodes[k].n->released = 1;
    }
    pthread_mutex_unlock(&g_graph_lock);
    locked = 0;
    if (!cap && (st = run_hooks_init(&hooks, nodes, n_nodes, n_edges, edge_on, edge_to, who))) goto done;

    /* 3. seed the roots, then run each node once all its consumers have sent their gradient */
    for (int r = 0; r < n_roots; r++) {
        if (!seeds[r]) continue;
        st = mmu_accumulate(&nodes[root_k[r]].grad, seeds[r]);
        MMU_CLEAR(seeds[r]);
        if (st) goto done;
    }
    for (size_t k = n_nodes; k-- > 0;)
        if (nodes[k].want && nodes[k].pending == 0) ready[n_ready++] = k;
    while (n_ready) {
        run_node *rn = &nodes[ready[--n_ready]];
        mmu_node *n = rn->n;
        mmu_tensor *g = rn->grad;
        rn->grad = NULL;
        if (cap && rn->target && (st = capture_grad(cap, NULL, n, g))) {
            mmu_tensor_decref(g);
            goto done;
        }
        if (!(rn->want & WANT_RUN)) {
            mmu_tensor_decref(g);
            continue;
        }
        mmu_tensor *gin_buf[8] = {0}, **gin = gin_buf;
        if (n->n_inputs > 8 && !(gin = calloc(n->n_inputs, sizeof *gin))) {
            mmu_tensor_decref(g);
            st = mmu_fail(MMU_ENOMEM, "%s: out of memory", who);
            goto done;
        }
        const unsigned char *on = edge_on + rn->first_edge, *off = edge_off + rn->first_edge;
        const int *to = edge_to + rn->first_edge;
        if (g && (st = mmu_check_saved_versions(n, who))) {
            mmu_tensor_decref(g);
            if (gin != gin_buf) free(gin);
            goto done;
        }
        unsigned added_in_place = 0; /* bit i: gin[i] was the leaf's .grad, added to by the backward */
        if (g) {
            int leaf_locked = 0;
            if (!cap)
                for (int i = 0; i < n->n_inputs && i < 32; i++) {
                    if (!on[i] || to[i] >= 0 || !accumulates_into(n->op, i)) continue;
                    if (!leaf_locked) pthread_mutex_lock(&g_leaf_lock);
                    leaf_locked = 1;
                    if ((gin[i] = leaf_grad_to_accumulate(n->op, i, &n->inputs[i]))) added_in_place |= 1u << i;
                }
            pthread_mutex_lock(&n->exec_lock);
            for (int i = 0; i < n->n_inputs; i++)
                if (off[i]) n->inputs[i].needs_grad = 0;
            st = mmu_op_table[n->op].backward(n, g, gin);
            for (int i = 0; i < n->n_inputs; i++)
                if (off[i]) n->inputs[i].needs_grad = 1;
            pthread_mutex_unlock(&n->exec_lock);
            if (leaf_locked) pthread_mutex_unlock(&g_leaf_lock); /* held while the backward wrote into .grad */
            __atomic_add_fetch(&g_nodes_run, 1, __ATOMIC_RELAXED);
        }
        mmu_tensor_decref(g);
        for (int i = 0; i < n->n_inputs; i++) {
            mmu_edge *e = &n->inputs[i];
            if (gin[i]) __atomic_add_fetch(&g_grads_computed, 1, __ATOMIC_RELAXED);
            if (!st && gin[i] && on[i] && (added_in_place >> i & 1u)) {
                /* already in the leaf's .grad */
            } else if (!st && gin[i] && on[i]) {
                if (gin[i]->ndim != e->ndim || memcmp(gin[i]->shape, e->shape, e->ndim * sizeof(int64_t)))
                    st = mmu_fail(MMU_ERUNTIME, "backward of %s produced a gradient of shape %s for input %d "
                                  "of shape %s (internal error)", mmu_op_table[n->op].name,
                                  mmu_shape_str(gin[i]), i, mmu_dims_str(e->ndim, e->shape));
                else if (to[i] >= 0)
                    st = mmu_accumulate(&nodes[to[i]].grad, gin[i]);
                else if (e->leaf)
                    st = cap ? capture_grad(cap, e->leaf, NULL, gin[i]) : accumulate_leaf(e->leaf, gin[i]);
            }
            mmu_tensor_decref(gin[i]);
            if (to[i] >= 0 && on[i] && --nodes[to[i]].pending == 0) ready[n_ready++] = to[i];
            if (!st && on[i] && to[i] < 0) st = run_hooks_edge_done(&hooks, rn->first_edge + i);
        }
        if (gin != gin_buf) free(gin);
        if (st) goto done;
        /* hand the node back: without retain_graph its memory returns now */
        pthread_mutex_lock(&g_graph_lock);
        run_drop(rn);
        pthread_mutex_unlock(&g_graph_lock);
    }

done:
    if (!locked) pthread_mutex_lock(&g_graph_lock);
    for (size_t k = 0; k < n_nodes; k++) run_drop(&nodes[k]);
    pthread_mutex_unlock(&g_graph_lock);
    for (size_t k = 0; k < n_nodes; k++) {
        mmu_tensor_decref(nodes[k].grad);
        mmu_node_decref(nodes[k].n);
    }
    for (int r = 0; r < n_roots; r++) MMU_CLEAR(seeds[r]);
    run_hooks_free(&hooks);
    free(edge_to);
    free(edge_on);
    free(edge_off);
    free(root_k);
    free(stack);
    free(nodes);
    free(ready);
    return st;
}

mmu_status mmu_backward(mmu_tensor *root, mmu_tensor *grad, int retain_graph) {
    mmu_status st = MMU_OK;
    mmu_tensor *g0 = NULL;
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
        if (!st && root->grad_hooks && mmu_grad_hooks_run) st = mmu_grad_hooks_run(root);
        goto done;
    }
    /* a freed graph is refused by the engine, under its lock */
    mmu_node *root_fn = root->grad_fn;
    st = run_engine(1, &root_fn, &g0, retain_graph, NULL, "backward"); /* takes g0 */
    g0 = NULL;

done:
    mmu_tensor_decref(g0);
    mmu_set_grad_enabled(prev_mode);
    return st;
}

mmu_status mmu_grad(mmu_tensor **results, int n_out, mmu_tensor *const *outputs, mmu_tensor *const *grad_outputs,
                    int n_in, mmu_tensor *const *inputs, int retain_graph, int allow_unused) {
    static const char *who = "autograd.grad";
    mmu_status st = MMU_OK;
    mmu_node **roots = NULL;
    mmu_tensor **seeds = NULL;
    char *reached = NULL;
    int n_roots = 0;
    int prev_mode = mmu_set_grad_enabled(0);
    for (int k = 0; k < n_in; k++) results[k] = NULL;

    if (n_out < 1 || n_in < 1) {
        st = mmu_fail(MMU_EVALUE, "%s: needs at least one output and one input (got %d outputs, %d inputs)", who,
                      n_out, n_in);
        goto done;
    }
    for (int k = 0; k < n_in; k++)
        if (!inputs[k]->requires_grad) {
            st = mmu_fail(MMU_ERUNTIME, "%s: input %d (shape %s) does not require grad; only tensors with "
                          "requires_grad=True (or produced from them) can be differentiated", who, k,
                          mmu_shape_str(inputs[k]));
            goto done;
        }
    roots = calloc(n_out, sizeof *roots);
    seeds = calloc(n_out, sizeof *seeds);
    reached = calloc(n_in, 1);
    if (!roots || !seeds || !reached) { st = mmu_fail(MMU_ENOMEM, "%s: out of memory", who); goto done; }
    grad_capture cap = {n_in, inputs, results, reached};

    for (int i = 0; i < n_out; i++) {
        mmu_tensor *y = outputs[i], *go = grad_outputs ? grad_outputs[i] : NULL, *seed = NULL;
        if (!y->requires_grad) {
            st = mmu_fail(MMU_ERUNTIME, "%s: output %d (shape %s) does not require grad and does not have a "
                          "grad_fn", who, i, mmu_shape_str(y));
            goto done;
        }
        if (go) {
            if (go->dtype != MMU_FLOAT32 || !mmu_same_shape(go, y)) {
                st = mmu_fail(MMU_EVALUE, "%s: grad_outputs[%d] has shape %s (%s) but output %d has shape %s "
                              "(float32)", who, i, mmu_shape_str(go), mmu_dtype_name(go->dtype), i, mmu_shape_str(y));
                goto done;
            }
            seed = go;
            mmu_tensor_incref(seed);
        } else {
            if (y->numel != 1) {
                st = mmu_fail(MMU_ERUNTIME, "%s: grad can be implicitly created only for scalar outputs; output %d "
                              "has shape %s, pass grad_outputs", who, i, mmu_shape_str(y));
                goto done;
            }
            if ((st = mmu_tensor_full(&seed, MMU_FLOAT32, y->ndim, y->shape, 1.0))) goto done;
        }
        if (!y->grad_fn) { /* a leaf output: its own gradient is the seed */
            st = capture_grad(&cap, y, NULL, seed);
            mmu_tensor_decref(seed);
            if (st) goto done;
            continue;
        }
        roots[n_roots] = y->grad_fn;
        seeds[n_roots++] = seed;
    }
    if (n_roots) st = run_engine(n_roots, roots, seeds, retain_graph, &cap, who);
    if (st) goto done;

    for (int k = 0; k < n_in; k++) {
        if (!reached[k]) {
            if (allow_unused) continue;
            st = mmu_fail(MMU_ERUNTIME, "%s: input %d (shape %s) appears to not have been used in the graph "
                          "(the outputs do not depend on it); set allow_unused=True if this is the desired "
                          "behavior", who, k, mmu_shape_str(inputs[k]));
            goto done;
        }
        if (!results[k]) { /* on the graph, but every path multiplies by zero */
            if ((st = mmu_tensor_zeros(&results[k], MMU_FLOAT32, inputs[k]->ndim, inputs[k]->shape))) goto done;
        } else if (!mmu_tensor_is_exclusive(results[k])) {
            /* a pass-through gradient (the seed itself, or one shared with another input): hand out a copy */
            mmu_tensor *copy = NULL;
            if ((st = mmu_tensor_clone(&copy, results[k]))) goto done;
            mmu_tensor_decref(results[k]);
            results[k] = copy;
        }
    }

done:
    if (st)
        for (int k = 0; k < n_in; k++) MMU_CLEAR(results[k]);
    if (seeds)
        for (int i = 0; i < n_out; i++) mmu_tensor_decref(seeds[i]);
    free(roots);
    free(seeds);
    free(reached);
    mmu_set_grad_enabled(prev_mode);
    return st;
}
