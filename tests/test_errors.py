"""Bad input for every public entry point: right exception type, op named.

The spec: ValueError for shapes / values (mismatched shapes, wrong rank, bad
reduction string), TypeError for wrong dtype and non-numeric objects,
IndexError for out-of-range indices or dims, RuntimeError for autograd misuse
(backward through a freed graph). Messages name the op. We match on the op
name only (``match`` is a regex searched in the message), never on wording.
For Python operators the op may be named by method or by symbol (``add`` or
``+``), since Python itself reports ``unsupported operand type(s) for +`` when
an operator returns NotImplemented.
"""

import numpy as np
import pytest

import mmu
import mmu.functional as F  # noqa: N812


# ---------------------------------------------------------------- inputs
def t(*shape):
    """float32 tensor of the given shape (values in (0, 1))."""
    n = int(np.prod(shape)) if shape else 1
    return mmu.tensor(((np.arange(n, dtype=np.float32) % 7) / 8.0 + 0.1).reshape(shape))


def ti(values):
    return mmu.tensor(np.asarray(values, dtype=np.int64))


def tb(values):
    return mmu.tensor(np.asarray(values, dtype=bool))


def freed_graph_second_backward():
    x = mmu.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    y.backward()


def backward_wrong_grad_shape():
    x = mmu.tensor(np.ones((2, 3), np.float32), requires_grad=True)
    (x * 2.0).backward(mmu.ones(3, 2))


def backward_non_scalar():
    x = mmu.tensor(np.ones((2, 3), np.float32), requires_grad=True)
    (x * 2.0).backward()


def backward_without_grad_graph():
    mmu.tensor([1.0, 2.0]).sum().backward()


# operator names: method name or the symbol itself
ADD, SUB, MUL, DIV = r"add|\+", r"sub|-", r"mul|\*", r"div|/"
POW, NEG, MM = r"pow|\*\*", r"neg|-", r"matmul|@"
LT, GT, EQ = r"lt|less|<|compar", r"gt|greater|>|compar", r"eq|equal|==|compar"
AND, OR, INV = r"and|&", r"or|\|", r"invert|not|~"
IDX = r"index|getitem|subscript|slice"

V, T, I, R = ValueError, TypeError, IndexError, RuntimeError

CASES = [
    # ------------------------------------------------------------ creation
    ("tensor_str", lambda: mmu.tensor("abc"), T, "tensor"),
    ("tensor_none", lambda: mmu.tensor(None), T, "tensor"),
    ("tensor_dict", lambda: mmu.tensor({"a": 1}), T, "tensor"),
    ("tensor_object_list", lambda: mmu.tensor([object(), object()]), T, "tensor"),
    ("tensor_int_requires_grad", lambda: mmu.tensor([1, 2], requires_grad=True), T,
     "tensor|requires_grad"),
    ("requires_grad__int64", lambda: ti([1, 2]).requires_grad_(), T, "requires_grad"),
    ("zeros_negative", lambda: mmu.zeros(-1, 2), V, "zeros"),
    ("zeros_str", lambda: mmu.zeros("a"), T, "zeros"),
    ("ones_none", lambda: mmu.ones(None), T, "ones"),
    ("ones_float64_dtype", lambda: mmu.ones(2, dtype=np.float64), T, "ones"),
    ("full_str_value", lambda: mmu.full((2,), "x"), T, "full"),
    ("full_negative", lambda: mmu.full((2, -3), 1.0), V, "full"),
    ("arange_step0", lambda: mmu.arange(0, 5, 0), V, "arange"),
    ("arange_str", lambda: mmu.arange("a"), T, "arange"),
    ("randn_negative", lambda: mmu.randn(2, -1), V, "randn"),
    ("rand_str", lambda: mmu.rand("x"), T, "rand"),
    ("zeros_like_str", lambda: mmu.zeros_like("a"), T, "zeros_like"),
    ("ones_like_none", lambda: mmu.ones_like(None), T, "ones_like"),
    ("manual_seed_str", lambda: mmu.manual_seed("a"), T, "manual_seed"),
    ("set_num_threads_0", lambda: mmu.set_num_threads(0), V, "set_num_threads"),
    ("set_num_threads_str", lambda: mmu.set_num_threads("a"), T, "set_num_threads"),
    # ------------------------------------------------------------ tensor API / autograd
    ("item_multi_element", lambda: t(2, 3).item(), V, "item"),
    ("size_dim_oob", lambda: t(2, 3).size(2), I, "size"),
    ("len_0d", lambda: len(mmu.tensor(1.0)), T, "len"),
    ("backward_freed_graph", freed_graph_second_backward, R, "backward"),
    ("backward_wrong_grad_shape", backward_wrong_grad_shape, V, "backward"),
    # torch raises RuntimeError for the next two; the spec's classes could make
    # them ValueError: accept either, require the op to be named.
    ("backward_non_scalar", backward_non_scalar, (R, V), "backward"),
    ("backward_no_graph", backward_without_grad_graph, (R, V), "backward"),
    # ------------------------------------------------------------ arithmetic
    ("add_shape", lambda: t(2, 3) + t(4), V, ADD),
    ("add_str", lambda: t(2) + "a", T, ADD),
    ("add_none", lambda: t(2) + None, T, ADD),
    ("radd_dict", lambda: {} + t(2), T, ADD),
    ("mul_shape_bcast_fail", lambda: t(4, 1, 5) * t(3, 4), V, MUL),
    ("div_shape", lambda: t(2, 3) / t(3, 2), V, DIV),
    ("div_str", lambda: t(2) / "a", T, DIV),
    ("pow_str", lambda: t(2) ** "a", T, POW),
    ("pow_method_str", lambda: t(2).pow("a"), T, "pow"),
    ("neg_bool", lambda: -tb([True]), T, NEG),
    ("matmul_op_shape", lambda: t(3, 4) @ t(5, 6), V, MM),
    ("matmul_shape", lambda: mmu.matmul(t(3, 4), t(5, 6)), V, "matmul"),
    ("matmul_method_shape", lambda: t(3, 4).matmul(t(5, 6)), V, "matmul"),
    ("matmul_1d_1d_shape", lambda: mmu.matmul(t(3), t(4)), V, "matmul"),
    ("matmul_2d_1d_shape", lambda: mmu.matmul(t(3, 4), t(3)), V, "matmul"),
    ("matmul_0d", lambda: mmu.matmul(mmu.tensor(2.0), t(2)), V, "matmul"),
    ("matmul_batch_mismatch", lambda: mmu.matmul(t(2, 3, 4), t(3, 4, 5)), V, "matmul"),
    ("matmul_int64", lambda: mmu.matmul(ti([[1, 2], [3, 4]]), ti([[1, 2], [3, 4]])), T,
     "matmul"),
    ("matmul_str", lambda: mmu.matmul(t(2, 2), "a"), T, "matmul"),
    ("matmul_none", lambda: mmu.matmul(None, t(2, 2)), T, "matmul"),
    ("maximum_shape", lambda: mmu.maximum(t(2, 3), t(4)), V, "maximum"),
    ("maximum_none", lambda: mmu.maximum(t(2), None), T, "maximum"),
    # ------------------------------------------------------------ comparisons / logic
    ("gt_str", lambda: t(2) > "a", T, GT),
    ("eq_shape", lambda: t(2, 3) == t(4), V, EQ),
    ("and_float", lambda: tb([True, False]) & t(2), T, AND),
    ("or_shape", lambda: tb([True, False]) | tb([True, False, True]), V, OR),
    ("invert_float", lambda: ~t(2), T, INV),
    # ------------------------------------------------------------ unary
    ("exp_int64", lambda: mmu.exp(ti([1, 2])), T, "exp"),
    ("exp_method_int64", lambda: ti([1, 2]).exp(), T, "exp"),
    ("exp_str", lambda: mmu.exp("a"), T, "exp"),
    ("log_int64", lambda: mmu.log(ti([1, 2])), T, "log"),
    ("log_none", lambda: mmu.log(None), T, "log"),
    ("sqrt_bool", lambda: mmu.sqrt(tb([True])), T, "sqrt"),
    ("sqrt_dict", lambda: mmu.sqrt({}), T, "sqrt"),
    ("abs_int64", lambda: mmu.abs(ti([-1, 2])), T, "abs"),
    ("tanh_int64", lambda: mmu.tanh(ti([1])), T, "tanh"),
    ("sigmoid_int64", lambda: mmu.sigmoid(ti([1])), T, "sigmoid"),
    ("relu_int64", lambda: F.relu(ti([1, -1])), T, "relu"),
    ("relu_method_bool", lambda: tb([True]).relu(), T, "relu"),
    ("gelu_int64", lambda: F.gelu(ti([1])), T, "gelu"),
    ("gelu_bad_approximate", lambda: F.gelu(t(2), approximate="fast"), V, "gelu"),
    ("silu_bool", lambda: F.silu(tb([True])), T, "silu"),
    ("F_sigmoid_str", lambda: F.sigmoid("a"), T, "sigmoid"),
    ("F_tanh_none", lambda: F.tanh(None), T, "tanh"),
    ("clamp_int64", lambda: mmu.clamp(ti([1, 5]), min=0.0), T, "clamp"),
    ("clamp_str_min", lambda: t(2).clamp(min="a"), T, "clamp"),
    # ------------------------------------------------------------ reductions
    ("sum_dim_oob", lambda: t(2, 3).sum(2), I, "sum"),
    ("sum_dim_neg_oob", lambda: t(2, 3).sum(-3), I, "sum"),
    ("sum_dup_dims", lambda: t(2, 3).sum((0, 0)), V, "sum"),
    ("sum_none_input", lambda: mmu.sum(None), T, "sum"),
    ("mean_dim_str", lambda: t(2, 3).mean("a"), T, "mean"),
    ("mean_dim_oob", lambda: mmu.mean(t(2, 3), dim=(0, 2)), I, "mean"),
    ("amax_dim_oob", lambda: mmu.amax(t(2, 3), dim=(0, 5)), I, "amax"),
    ("amin_str_input", lambda: mmu.amin("a"), T, "amin"),
    ("amin_dim_oob", lambda: t(2, 3).amin(-3), I, "amin"),
    ("argmax_dim5", lambda: t(2, 3).argmax(5), I, "argmax"),
    ("argmax_fn_dim5", lambda: mmu.argmax(t(2, 3), dim=5), I, "argmax"),
    ("argmin_dim_neg3", lambda: mmu.argmin(t(2, 3), dim=-3), I, "argmin"),
    ("argmax_str_input", lambda: mmu.argmax("a"), T, "argmax"),
    # ------------------------------------------------------------ shape ops
    ("reshape_incompatible", lambda: t(2, 3).reshape(4, 2), V, "reshape"),
    ("reshape_two_neg1", lambda: t(2, 3).reshape(-1, -1), V, "reshape"),
    ("reshape_neg1_not_divisible", lambda: t(2, 3).reshape(4, -1), V, "reshape"),
    ("reshape_fn_incompatible", lambda: mmu.reshape(t(2, 3), (7,)), V, "reshape"),
    ("reshape_str", lambda: t(2, 3).reshape("a"), T, "reshape"),
    ("view_incompatible", lambda: t(2, 3).view(5), V, "view|reshape"),
    ("permute_wrong_len", lambda: t(2, 3, 4).permute(0, 1), V, "permute"),
    ("permute_repeated", lambda: t(2, 3, 4).permute(0, 0, 1), V, "permute"),
    ("permute_oob", lambda: t(2, 3, 4).permute(0, 1, 3), I, "permute"),
    ("permute_fn_oob", lambda: mmu.permute(t(2, 3), (1, 2)), I, "permute"),
    ("transpose_oob", lambda: t(2, 3).transpose(0, 2), I, "transpose"),
    ("transpose_fn_oob", lambda: mmu.transpose(t(2, 3), -3, 0), I, "transpose"),
    ("flatten_oob", lambda: t(2, 3).flatten(3), I, "flatten"),
    ("flatten_start_after_end", lambda: t(2, 3, 4).flatten(2, 1), V, "flatten"),
    ("unsqueeze_oob", lambda: t(2, 3).unsqueeze(4), I, "unsqueeze"),
    ("unsqueeze_neg_oob", lambda: t(2, 3).unsqueeze(-4), I, "unsqueeze"),
    ("squeeze_oob", lambda: t(2, 1).squeeze(2), I, "squeeze"),
    ("expand_incompatible", lambda: t(3, 4).expand(3, 5), V, "expand"),
    ("expand_fewer_dims", lambda: t(3, 4).expand(4), V, "expand"),
    ("expand_neg1_new_dim", lambda: t(3).expand(-1, 3), V, "expand"),
    # ------------------------------------------------------------ indexing
    ("index_int_oob", lambda: t(3, 4)[3], I, IDX),
    ("index_int_neg_oob", lambda: t(3, 4)[:, -5], I, IDX),
    ("index_too_many", lambda: t(3)[0, 0], I, IDX),
    ("index_negative_step", lambda: t(5)[::-1], V, IDX),
    ("index_str", lambda: t(3)["a"], T, IDX),
    ("index_dict", lambda: t(3)[{}], T, IDX),
    ("index_float_tensor", lambda: t(3, 2)[t(2)], T, IDX),
    ("index_int64_oob", lambda: t(3, 2)[ti([0, 3])], I, IDX),
    ("index_int64_neg_oob", lambda: t(3, 2)[ti([-4])], I, IDX),
    ("index_list_oob", lambda: t(3)[[0, 5]], I, IDX),
    # torch says IndexError, the spec's classes say ValueError (a shape): either
    ("index_mask_wrong_shape", lambda: t(3, 4)[tb(np.ones((4, 3), bool))], (I, V), IDX),
    # ------------------------------------------------------------ cat / stack
    ("floordiv_requires_grad", lambda: mmu.tensor([1.0, 2.0], requires_grad=True) // 2, T, "floordiv"),
    ("cat_mismatch", lambda: mmu.cat([t(2, 3), t(2, 4)], dim=0), V, "cat"),
    ("cat_rank_mismatch", lambda: mmu.cat([t(2, 3), t(3)]), V, "cat"),
    ("cat_empty", lambda: mmu.cat([]), V, "cat"),
    ("cat_dim_oob", lambda: mmu.cat([t(2, 3), t(2, 3)], dim=2), I, "cat"),
    ("cat_str_item", lambda: mmu.cat([t(2), "a"]), T, "cat"),
    ("cat_none", lambda: mmu.cat(None), T, "cat"),
    ("stack_mismatch", lambda: mmu.stack([t(2, 3), t(3, 2)]), V, "stack"),
    ("stack_dim_oob", lambda: mmu.stack([t(2), t(2)], dim=3), I, "stack"),
    ("stack_empty", lambda: mmu.stack([]), V, "stack"),
    ("stack_none_item", lambda: mmu.stack([t(2), None]), T, "stack"),
    # ------------------------------------------------------------ where / masked_fill
    ("where_float_cond", lambda: mmu.where(t(2), t(2), t(2)), T, "where"),
    ("where_shape", lambda: mmu.where(tb([True, False]), t(3), t(2)), V, "where"),
    ("where_str", lambda: mmu.where(tb([True, False]), "a", t(2)), T, "where"),
    ("masked_fill_float_mask", lambda: t(2, 3).masked_fill(t(2, 3), 0.0), T, "masked_fill"),
    ("masked_fill_shape", lambda: t(2, 3).masked_fill(tb(np.ones((3, 2), bool)), 0.0), V,
     "masked_fill"),
    ("masked_fill_str_value", lambda: t(2).masked_fill(tb([True, False]), "a"), T,
     "masked_fill"),
    ("masked_fill_fn_none", lambda: mmu.masked_fill(None, tb([True]), 1.0), T, "masked_fill"),
    # ------------------------------------------------------------ gather / index_select
    ("gather_float_index", lambda: t(3, 4).gather(1, t(3, 2)), T, "gather"),
    ("gather_negative_index", lambda: t(3, 4).gather(1, ti([[0, -1]] * 3)), I, "gather"),
    ("gather_index_too_big", lambda: t(3, 4).gather(1, ti([[0, 4]] * 3)), I, "gather"),
    ("gather_rank_mismatch", lambda: t(3, 4).gather(1, ti([0, 1])), V, "gather"),
    ("gather_index_larger_than_input", lambda: t(3, 4).gather(1, ti(np.zeros((4, 4)))), V,
     "gather"),
    ("gather_dim_oob", lambda: mmu.gather(t(3, 4), 2, ti([[0]] * 3)), I, "gather"),
    ("gather_str_input", lambda: mmu.gather("a", 0, ti([[0]])), T, "gather"),
    ("index_select_oob", lambda: t(3, 4).index_select(0, ti([0, 3])), I, "index_select"),
    ("index_select_negative", lambda: t(3, 4).index_select(1, ti([-1])), I, "index_select"),
    ("index_select_float", lambda: mmu.index_select(t(3, 4), 0, t(2)), T, "index_select"),
    ("index_select_2d_index", lambda: t(3, 4).index_select(0, ti([[0, 1]])), V,
     "index_select"),
    ("index_select_dim_oob", lambda: t(3, 4).index_select(2, ti([0])), I, "index_select"),
    # ------------------------------------------------------------ linear
    ("linear_in_features", lambda: F.linear(t(8, 64), t(32, 63)), V, "linear"),
    ("linear_bias_shape", lambda: F.linear(t(2, 4), t(5, 4), t(4)), V, "linear"),
    ("linear_weight_3d", lambda: F.linear(t(2, 4), t(5, 4, 1)), V, "linear"),
    ("linear_input_0d", lambda: F.linear(mmu.tensor(1.0), t(5, 4)), V, "linear"),
    ("linear_int64", lambda: F.linear(ti([[1, 2]]), t(3, 2)), T, "linear"),
    ("linear_str", lambda: F.linear("x", t(5, 4)), T, "linear"),
    ("linear_bias_dict", lambda: F.linear(t(2, 4), t(5, 4), {}), T, "linear"),
    # ------------------------------------------------------------ softmax / layer_norm
    ("softmax_dim_oob", lambda: F.softmax(t(2, 3), dim=2), I, "softmax"),
    ("softmax_int64", lambda: F.softmax(ti([1, 2]), dim=0), T, "softmax"),
    ("log_softmax_dim_oob", lambda: F.log_softmax(t(2, 3), dim=-3), I, "log_softmax"),
    ("log_softmax_str", lambda: F.log_softmax("a", dim=0), T, "log_softmax"),
    ("layer_norm_shape", lambda: F.layer_norm(t(2, 3), (4,)), V, "layer_norm"),
    ("layer_norm_too_many_dims", lambda: F.layer_norm(t(3), (1, 3)), V, "layer_norm"),
    ("layer_norm_weight_shape", lambda: F.layer_norm(t(2, 3), (3,), weight=t(4)), V,
     "layer_norm"),
    ("layer_norm_bias_shape", lambda: F.layer_norm(t(2, 3), (3,), bias=t(2)), V, "layer_norm"),
    ("layer_norm_int64", lambda: F.layer_norm(ti([[1, 2]]), (2,)), T, "layer_norm"),
    # ------------------------------------------------------------ embedding
    ("embedding_float_index", lambda: F.embedding(t(3), t(5, 4)), T, "embedding"),
    ("embedding_index_oob", lambda: F.embedding(ti([0, 5]), t(5, 4)), I, "embedding"),
    ("embedding_index_negative", lambda: F.embedding(ti([-1]), t(5, 4)), I, "embedding"),
    ("embedding_weight_1d", lambda: F.embedding(ti([0]), t(5)), V, "embedding"),
    ("embedding_weight_int64", lambda: F.embedding(ti([0]), ti(np.zeros((5, 4)))), T,
     "embedding"),
    ("embedding_str", lambda: F.embedding("a", t(5, 4)), T, "embedding"),
    # ------------------------------------------------------------ losses
    ("ce_bad_reduction", lambda: F.cross_entropy(t(4, 5), ti([0, 1, 2, 3]), reduction="avg"),
     V, "cross_entropy"),
    ("ce_float_target", lambda: F.cross_entropy(t(4, 5), t(4)), T, "cross_entropy"),
    ("ce_target_oob", lambda: F.cross_entropy(t(4, 5), ti([0, 1, 5, 3])), I, "cross_entropy"),
    ("ce_target_negative", lambda: F.cross_entropy(t(4, 5), ti([0, -1, 2, 3])), I,
     "cross_entropy"),
    ("ce_batch_mismatch", lambda: F.cross_entropy(t(4, 5), ti([0, 1, 2])), V, "cross_entropy"),
    ("ce_spatial_mismatch", lambda: F.cross_entropy(t(2, 3, 4), ti(np.zeros((2, 5)))), V,
     "cross_entropy"),
    ("ce_int64_input", lambda: F.cross_entropy(ti(np.zeros((2, 3))), ti([0, 1])), T,
     "cross_entropy"),
    ("ce_label_smoothing_gt_1", lambda: F.cross_entropy(t(4, 5), ti([0, 1, 2, 3]),
                                                        label_smoothing=1.5),
     V, "cross_entropy"),
    ("ce_str_input", lambda: F.cross_entropy("x", ti([0])), T, "cross_entropy"),
    ("mse_bad_reduction", lambda: F.mse_loss(t(3), t(3), reduction="mean "), V, "mse_loss"),
    ("mse_shape", lambda: F.mse_loss(t(3, 4), t(5)), V, "mse_loss"),
    ("mse_int64", lambda: F.mse_loss(ti([1, 2]), ti([1, 2])), T, "mse_loss"),
    ("mse_none_target", lambda: F.mse_loss(t(3), None), T, "mse_loss"),
    ("l1_bad_reduction", lambda: F.l1_loss(t(3), t(3), reduction="batchmean"), V, "l1_loss"),
    ("l1_shape", lambda: F.l1_loss(t(2, 3), t(3, 2)), V, "l1_loss"),
    ("l1_bool", lambda: F.l1_loss(tb([True]), tb([False])), T, "l1_loss"),
    ("l1_str_input", lambda: F.l1_loss("a", t(3)), T, "l1_loss"),
    # ---- issue 11: ints past int64 and inf / 1e300 as sizes, dims, strides, scale factors raised
    # OverflowError ("int too big to convert") naming nothing; each now names op and argument
    ("zeros_2_64", lambda: mmu.zeros(2 ** 64), V, "zeros: size"),
    ("zeros_2_62", lambda: mmu.zeros(2 ** 62), V, "zeros: size"),
    ("randn_2_63", lambda: mmu.randn(2 ** 63), V, "randn: size"),
    ("ones_product_too_large", lambda: mmu.ones(2 ** 31, 2 ** 31), V, "ones: size"),
    ("reshape_2_64", lambda: t(2, 3).reshape(2 ** 64), V, "reshape: shape"),
    ("expand_2_64", lambda: t(2, 3).expand(2 ** 64, 3), V, "expand: shape"),
    ("permute_2_64", lambda: t(2, 3).permute(0, 2 ** 64), V, "permute: dims"),
    ("sum_dim_2_70", lambda: t(2, 3).sum(dim=2 ** 70), I, "sum: dim"),
    ("softmax_dim_2_64", lambda: F.softmax(t(2, 3), 2 ** 64), I, "softmax: dim"),
    ("cat_dim_2_64", lambda: mmu.cat([t(2, 3), t(2, 3)], 2 ** 64), I, "cat: dim"),
    ("gather_dim_2_64", lambda: mmu.gather(t(2, 3), 2 ** 64, ti([[0]])), I, "gather: dim"),
    ("index_select_dim_below_int64", lambda: mmu.index_select(t(2, 3), -2 ** 63 - 1, ti([0])), I,
     "index_select: dim"),
    ("argmax_dim_2_64", lambda: mmu.argmax(t(2, 3), 2 ** 64), I, "argmax: dim"),
    ("max_dim_2_64", lambda: t(2, 3).max(2 ** 64), I, "max: dim"),
    ("normalize_dim_2_64", lambda: F.normalize(t(2, 3), dim=2 ** 64), I, "normalize: dim"),
    ("conv2d_stride_2_64", lambda: F.conv2d(t(1, 1, 3, 3), t(1, 1, 1, 1), stride=2 ** 64), V, "conv2d: stride"),
    ("max_pool2d_kernel_2_64", lambda: F.max_pool2d(t(1, 1, 3, 3), 2 ** 64), V, "max_pool2d: kernel_size"),
    ("avg_pool2d_divisor_2_64", lambda: F.avg_pool2d(t(1, 1, 4, 4), 2, divisor_override=2 ** 64), V,
     "avg_pool2d: divisor_override"),
    ("interpolate_scale_1e300", lambda: F.interpolate(t(1, 1, 2, 2), scale_factor=1e300), V,
     "interpolate: scale_factor"),
    ("cross_entropy_ignore_2_64", lambda: F.cross_entropy(t(2, 3), ti([0, 1]), ignore_index=2 ** 64), V,
     "cross_entropy: ignore_index"),
    ("int_mod_2_70", lambda: ti([1, 2]) % 2 ** 70, V, "mod"),
    ("setitem_2_63", lambda: t(3).__setitem__(2 ** 63, 1.0), I, "index"),
    ("full_1e300_float32", lambda: mmu.full((2,), 1e300), V, "full: fill_value"),
    ("full_2_70_int64", lambda: mmu.full((2,), 2 ** 70), V, "full: fill_value"),
    # ---- issue 11: messages that did not name the op (found by tests/test_api_fuzz.py)
    ("std_dim_3", lambda: mmu.std(t(2, 3), dim=3), I, "std: dim"),
    ("std_repeated_dim", lambda: mmu.std(t(2, 3, 4), dim=(2, -1)), V, "std: dim"),
    ("arange_nan", lambda: mmu.arange(float("nan")), V, "arange: end"),
    ("arange_inf_step", lambda: mmu.arange(0, 5, float("inf")), V, "arange: step"),
    ("logsumexp_dim_5", lambda: mmu.logsumexp(t(2, 3), 5), I, "logsumexp: dim"),
    ("logsumexp_int64", lambda: mmu.logsumexp(ti([1, 2]), 0), T, "logsumexp"),
    ("randn_requires_grad_tensor", lambda: mmu.randn(2, requires_grad=t(3)), T, "randn: requires_grad"),
    ("sum_keepdim_tensor", lambda: t(2, 3).sum(0, keepdim=t(3)), T, "sum: keepdim"),
    ("dropout_training_tensor", lambda: F.dropout(t(3), training=t(3)), T, "dropout: training"),
    ("interpolate_align_corners_tensor",
     lambda: F.interpolate(t(1, 1, 2, 2), size=4, mode="bilinear", align_corners=t(2)), T, "interpolate"),
    ("max_pool2d_return_indices_tensor", lambda: F.max_pool2d(t(1, 1, 4, 4), 2, return_indices=t(2)), T,
     "max_pool2d: return_indices"),
    ("backward_retain_graph_tensor",
     lambda: (t(2).requires_grad_() * 2.0).sum().backward(retain_graph=t(3)), T, "backward: retain_graph"),
    ("requires_grad__tensor", lambda: t(3).requires_grad_(t(2)), T, "requires_grad"),
    ("size_of_0d", lambda: t().size(-1), I, "size"),
    ("fill__tensor_value", lambda: t(2, 3).fill_(t(2, 3)), V, "fill_"),
    ("fill__float32_overflow", lambda: t(2).fill_(1e300), V, "fill_"),
    ("int_mod_complex", lambda: ti([1]) % complex(1, 2), T, "mod"),
    ("int_mod_broadcast", lambda: ti([1, 2]) % ti([1, 2, 3]), V, "mod"),
    ("int_floordiv_zero_is_runtime_error", lambda: ti([1]) // 0, R, "floordiv"),
    ("transpose_float_dim", lambda: t(2, 3).transpose(0, 0.5), T, "transpose: dim"),
    ("stack_float_dim", lambda: mmu.stack([t(2), t(2)], dim=0.5), T, "stack: dim"),
    ("flatten_slice_dim", lambda: t(2, 3).flatten(start_dim=slice(1)), T, "flatten: dim"),
    ("tril_float_diagonal", lambda: mmu.tril(t(2, 3), diagonal=0.5), T, "tril: diagonal"),
    ("split_float_sections", lambda: t(4).split([1.5, 2.5]), T, "split"),
    ("l1_reduction_unhashable", lambda: F.l1_loss(t(2), t(2), reduction=slice(1)), V, "l1_loss: reduction"),
    ("gelu_approximate_array", lambda: F.gelu(t(2), approximate=np.ones(2)), V, "gelu: approximate"),
    ("layer_norm_float_shape", lambda: F.layer_norm(t(2, 3), 3.0), T, "layer_norm: normalized_shape"),
    ("pad_mode_unhashable", lambda: F.pad(t(1, 2, 2), (1, 1), mode=slice(1)), V, "pad: mode"),
    ("cross_entropy_smoothing_str", lambda: F.cross_entropy(t(2, 3), ti([0, 1]), label_smoothing="x"), T,
     "cross_entropy: label_smoothing"),
    ("sub__alpha_object", lambda: t(2).sub_(t(2), alpha=object()), T, "sub_: alpha"),
    ("maximum_ellipsis", lambda: mmu.maximum(Ellipsis, t(2)), T, "maximum"),
    ("zeros_like_int_requires_grad", lambda: mmu.zeros_like(ti([1]), requires_grad=True), T, "zeros_like"),
    ("arange_numpy_step_huge_end", lambda: mmu.arange(1, 2 ** 70, np.int64(-1)), V, "arange"),
    ("norm_inf_of_empty", lambda: mmu.norm(mmu.zeros(2, 0), float("inf")), V, "norm"),
    ("group_norm_huge_groups_empty_channels", lambda: F.group_norm(mmu.zeros(2, 0), 2 ** 62), V, "group_norm"),
    ("rotary_cos_sin_ragged", lambda: F.rotary_cos_sin([[1, 2], [3]], 16), V, "rotary_cos_sin"),
    ("rotary_cos_sin_huge_head_dim", lambda: F.rotary_cos_sin(np.zeros(0), 2 ** 70), V, "rotary_cos_sin"),
    ("imul_alpha_overflow", lambda: ti([1]).mul_(2 ** 63, alpha=np.int64(2)), V, "mul_"),
    # ---- issue 11: nn layers given odd arguments (tensors as flags, huge sizes) named nothing
    ("Linear_bias_tensor", lambda: mmu.nn.Linear(2, 3, bias=t(3)), T, "Linear: bias"),
    ("LayerNorm_size_2_64", lambda: mmu.nn.LayerNorm(2 ** 64), V, "LayerNorm: normalized_shape"),
    ("BatchNorm1d_features_2_63", lambda: mmu.nn.BatchNorm1d(2 ** 63), V, "BatchNorm1d: num_features"),
    ("BatchNorm2d_rank", lambda: mmu.nn.BatchNorm2d(3)(t(2, 3)), V, "BatchNorm2d"),
    ("GroupNorm_affine_tensor", lambda: mmu.nn.GroupNorm(1, 2, affine=t(2)), T, "GroupNorm: affine"),
    ("RMSNorm_eps_list", lambda: mmu.nn.RMSNorm(3, eps=[1]), T, "RMSNorm: eps"),
    ("LeakyReLU_slope_str", lambda: mmu.nn.LeakyReLU(""), T, "LeakyReLU: negative_slope"),
    ("Softmax_on_str", lambda: mmu.nn.Softmax(0)("x"), T, "Softmax"),
    ("Unflatten_size_int", lambda: mmu.nn.Unflatten(1, 2), T, "Unflatten: unflattened_size"),
    ("Unflatten_0d", lambda: mmu.nn.Unflatten(0, (1,))(t()), I, "Unflatten: dim"),
    ("Unflatten_mismatch", lambda: mmu.nn.Unflatten(1, (2, 2))(t(2, 3)), V, "Unflatten"),
    ("Unflatten_ambiguous_empty", lambda: mmu.nn.Unflatten(0, (2, -1))(t(2, 0)), V, "Unflatten: unflattened_size"),
    ("Upsample_scale_slice", lambda: mmu.nn.Upsample(scale_factor=slice(1)), T, "Upsample: scale_factor"),
    ("GELU_approximate_array", lambda: mmu.nn.GELU(np.ones(2)), V, "GELU: approximate"),
]

_ids = [c[0] for c in CASES]
assert len(_ids) == len(set(_ids)), "duplicate ids"


@pytest.mark.parametrize("fn,exc,match", [c[1:] for c in CASES], ids=_ids)
def test_bad_input_raises(fn, exc, match):
    with pytest.raises(exc, match=match) as info:
        fn()
    # the op must raise its own error, not a generic one from a failed call:
    # "got an unexpected keyword argument" / "takes N positional arguments"
    # would mean the test (or the binding's signature) is wrong, not the input.
    msg = str(info.value)
    assert "unexpected keyword" not in msg and "positional argument" not in msg, msg


@pytest.mark.parametrize("fn,needles", [
    (lambda: F.linear(t(8, 64), t(32, 63)), ("64", "63")),
    (lambda: mmu.matmul(t(3, 4), t(5, 6)), ("4", "5")),
    (lambda: mmu.cat([t(2, 3), t(2, 7)], dim=0), ("3", "7")),
    (lambda: t(2, 3).reshape(4, 5), ("4", "5")),
], ids=["linear", "matmul", "cat", "reshape"])
def test_shape_errors_name_the_shapes(fn, needles):
    with pytest.raises(ValueError) as info:
        fn()
    for n in needles:
        assert n in str(info.value), f"{n!r} not in message {str(info.value)!r}"


def test_interpreter_and_grad_mode_survive_errors():
    """After a burst of failing calls (some under no_grad) mmu still works."""
    # autograd cases are left out: under no_grad they fail for another reason
    plain = [c for c in CASES if "backward" not in c[0] and "requires_grad" not in c[0]]
    assert len(plain) > 150
    for _, fn, exc, _ in plain:
        with pytest.raises(exc):
            with mmu.no_grad():
                fn()
    assert mmu.is_grad_enabled()
    x = mmu.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0])


def test_failed_op_does_not_touch_inputs():
    x = mmu.tensor(np.arange(6, dtype=np.float32).reshape(2, 3), requires_grad=True)
    with pytest.raises(ValueError):
        mmu.matmul(x, x)
    with pytest.raises(ValueError):
        x.reshape(4, 2)
    np.testing.assert_array_equal(x.numpy(), np.arange(6).reshape(2, 3))
    assert x.grad is None and x.requires_grad
