"""Data parallel pieces that need no MPI: gradient buckets (order, sizes, when they start), the model
signature check, the sharded loaders (torch's DistributedSampler), and the Trainer with distributed=True
in one process (equal to distributed=False)."""
import numpy as np
import pytest

import mmu
from mmu import nn
from mmu.distributed import data_parallel as dp


def _mlp():
    mmu.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 5), nn.Linear(5, 2))


def test_buckets_reverse_order_and_cap():
    m = _mlp()
    names = [n for n, _ in m.named_parameters()]
    # a 100-byte cap: buckets of whole parameters, last layers first
    r = dp.GradientReducer(m.named_parameters(), bucket_cap_mb=100 / 2**20)
    params = dict(m.named_parameters())
    order = [[next(n for n in names if params[n] is p) for p in b.params] for b in r.buckets]
    # 8 + 40 + 20 = 68 bytes; + 80 would pass 100: a new bucket; 80 + 16 = 96; + 48 would pass it
    assert order == [["2.bias", "2.weight", "1.bias"], ["1.weight", "0.bias"], ["0.weight"]]
    assert dp.GradientReducer(m.parameters()).num_buckets == 1    # 25 MB holds them all
    with pytest.raises(ValueError, match="bucket_cap_mb"):
        dp.GradientReducer(m.parameters(), bucket_cap_mb=0)


def test_buckets_start_during_backward_and_leave_grads_exact():
    m = _mlp()
    x = mmu.tensor(np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32))
    r = dp.GradientReducer(m.parameters(), bucket_cap_mb=100 / 2**20)
    launched = []
    orig = r._launch
    r._launch = lambda b: (launched.append(r.buckets.index(b)), orig(b))
    r.prepare(sync=False)            # a non-final micro-batch: nothing starts
    m(x).sum().backward()
    assert launched == []
    r.prepare(sync=True)
    m(x).sum().backward()            # the final one: every bucket starts from a hook, in index order
    assert launched == list(range(r.num_buckets)) and r._in_backward == r.num_buckets
    g = {n: p.grad.numpy().copy() for n, p in m.named_parameters()}
    r.finish()                       # one process: the average is the gradient itself
    assert r.last_launched_in_backward == r.num_buckets
    ref = _mlp()
    ref(x).sum().backward()
    ref(x).sum().backward()
    for n, p in ref.named_parameters():
        np.testing.assert_array_equal(g[n], p.grad.numpy())
        np.testing.assert_array_equal(dict(m.named_parameters())[n].grad.numpy(), p.grad.numpy())
    r.remove()


def test_unused_parameter_keeps_grad_none():
    m = _mlp()
    r = dp.GradientReducer(m.parameters())
    r.prepare(sync=True)
    x = mmu.tensor(np.ones((2, 3), np.float32))
    m[1](m[0](x)).sum().backward()   # layer 2 unused
    r.finish()
    assert m[2].weight.grad is None and m[0].weight.grad is not None
    with pytest.raises(RuntimeError, match="prepare"):
        r.finish()


def test_signature_and_single_process_check():
    m = _mlp()
    sig = dp.check_same_model(m)
    assert sig[0] == ("parameter", "0.weight", (4, 3), "float32") and len(sig) == 6


def test_loader_shards_like_distributed_sampler():
    torch = pytest.importorskip("torch")
    from torch.utils.data import DistributedSampler
    from mmu.data.loader import shard_positions
    for n, w in ((10, 3), (12, 4), (7, 2)):
        for r in range(w):
            ref = list(DistributedSampler(range(n), num_replicas=w, rank=r, shuffle=False))
            assert shard_positions(n, r, w).tolist() == ref
    x = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    got = []
    for r in range(2):
        ld = mmu.data.DataLoader(x, 5, seed=3, rank=r, world_size=2)
        got.append(np.concatenate([b.ravel() for b in ld]))
    assert sorted(np.concatenate(got).tolist()) == list(range(10))   # each sample once over the ranks
    with pytest.raises(ValueError, match="world_size"):
        mmu.data.DataLoader(x, 2, rank=0)
    with pytest.raises(ValueError, match="state is for 1 rank"):
        mmu.data.DataLoader(x, 2, rank=0, world_size=2).load_state_dict({"epoch": 0, "position": 0})


def test_trainer_distributed_true_in_one_process_equals_off():
    from mmu.train import Trainer, TrainConfig
    data = np.tanh(np.random.default_rng(0).standard_normal((16, 1, 8, 8))).astype(np.float32)
    out = []
    for flag in (False, True):
        mmu.manual_seed(0)
        m = mmu.tokenizers.VQVAE(in_channels=1, hidden_channels=8, res_channels=4, num_res_blocks=1, downsample=2,
                                 embed_dim=4, codebook_size=8, quantizer="ema_vq", resolution=8)
        tr = Trainer(m, data, TrainConfig(steps=3, batch_size=4, grad_accum=2, progress=False, distributed=flag))
        assert tr.distributed is flag and tr.is_main_process
        tr.fit()
        out.append({k: v.numpy().copy() for k, v in m.state_dict().items()})
    for k in out[0]:
        np.testing.assert_array_equal(out[0][k], out[1][k], err_msg=k)


def test_finish_gives_leaves_sharing_one_gradient_their_own():
    # autograd hands a and b the same gradient tensor for a + b; the averages must not alias it
    a, b = nn.Parameter(np.ones(3, np.float32)), nn.Parameter(np.ones(3, np.float32))
    r = dp.GradientReducer([a, b])
    r.prepare(sync=True)
    (a + b).sum().backward()
    assert np.shares_memory(a.grad.numpy(), b.grad.numpy())
    r.finish()
    assert not np.shares_memory(a.grad.numpy(), b.grad.numpy())
    np.testing.assert_array_equal(a.grad.numpy(), np.ones(3, np.float32))
    np.testing.assert_array_equal(b.grad.numpy(), np.ones(3, np.float32))


def test_a_dropped_reducer_unregisters_its_hooks():
    import gc
    import weakref
    m = _mlp()
    r = dp.GradientReducer(m.parameters())
    ref = weakref.ref(r)
    del r
    gc.collect()
    assert ref() is None            # the hooks did not keep it (nor its buffers) alive
    x = mmu.tensor(np.ones((2, 3), np.float32))
    m(x).sum().backward()           # and backward runs without it
    assert m[0].weight.grad is not None
