"""FSQ and LFQ benchmarks, forward + backward.

fsq_8555: FSQ([8,5,5,5]) on 16384 rows vs torch running the same formula (bound, STE round, /(L//2)).
lfq_d13: LFQ(dim=13) with the entropy loss (weight 0.1, gamma 1, inv_temperature 100) and commitment
  (0.25), N=4096 rows, vs torch doing what vector-quantize-pytorch does: logits against all 2^13 codes,
  softmax, per-sample and batch-mean entropies (log clamped at 1e-5), sign STE, bit indices.
lfq_d18 (262,144 codes): at N=1024 both; and mmu at N=16384 against torch at N=1024 (torch's
  materialised (N, 2^18) probabilities need ~8 GiB at N=1024-2048; see benchmarks/lfq_memory.py for
  peak memory measured in subprocesses). The ratio of the last case is per call, not per row: divide
  mmu's time by 16 for the per-row comparison.
"""
import numpy as np

FSQ_LEVELS = [8, 5, 5, 5]


def _fsq_inputs(rng):
    return {"z": rng.standard_normal((16, 1024, 4), dtype=np.float32) * 2,
            "g": rng.standard_normal((16, 1024, 4), dtype=np.float32)}


def _fsq_mmu(fw, d):
    from mmu.quantizers import FSQ
    q = FSQ(FSQ_LEVELS)
    z, g = fw.tensor(d["z"], requires_grad=True), fw.tensor(d["g"])

    def step():
        z.grad = None
        out, idx, _ = q(z)
        out.backward(g)
    return step


def _fsq_torch(fw, d):
    torch = fw.mod
    L = torch.tensor(FSQ_LEVELS, dtype=torch.int32)
    half_l = (L - 1) * (1 + 1e-3) / 2
    offset = torch.where(L % 2 == 0, 0.5, 0.0)
    shift = (offset / half_l).atanh()
    hw = L // 2
    basis = torch.cumprod(torch.tensor([1] + FSQ_LEVELS[:-1]), 0)
    z, g = fw.tensor(d["z"], requires_grad=True), fw.tensor(d["g"])

    def step():
        z.grad = None
        b = (z + shift).tanh() * half_l - offset
        q = b + (b.round() - b).detach()
        out = q / hw
        idx = ((out * hw + hw) * basis).sum(-1).to(torch.int64)  # noqa: F841  (as FSQ returns them)
        out.backward(g)
    return step


def _lfq_inputs(N, d):
    def make(rng):
        return {"x": rng.standard_normal((1, N, d), dtype=np.float32) * 0.05,
                "g": rng.standard_normal((1, N, d), dtype=np.float32)}
    return make


def _lfq_mmu(N=None):
    def setup(fw, d):
        from mmu.quantizers import LFQ
        q = LFQ(dim=d["x"].shape[-1])
        x = fw.tensor(d["x"][:, :N], requires_grad=True)
        g = fw.tensor(d["g"][:, :N])

        def step():
            x.grad = None
            out, idx, loss = q(x)
            ((out * g).sum() + loss).backward()
        return step
    return setup


def _lfq_torch(N=None):
    def setup(fw, d):
        torch = fw.mod
        dim = d["x"].shape[-1]
        mask = 2 ** torch.arange(dim - 1, -1, -1)
        bits = ((torch.arange(2 ** dim)[..., None].int() & mask) != 0).float()
        codebook = bits * 2.0 - 1.0  # (2^d, d), codebook_scale 1
        x = fw.tensor(d["x"][:, :N], requires_grad=True)
        g = fw.tensor(d["g"][:, :N])

        def ent(p):
            return (-p * p.clamp(min=1e-5).log()).sum(-1)

        def step():
            x.grad = None
            q = torch.where(x > 0, 1.0, -1.0)
            idx = ((x > 0).int() * mask.int()).sum(-1)  # noqa: F841
            quantized = x + (q - x).detach()
            distance = -2 * torch.einsum("bnd,cd->bnc", x, codebook)
            prob = (-distance * 100.0).softmax(-1)
            per_sample = ent(prob).mean()
            avg = prob.reshape(-1, prob.shape[-1]).mean(0)
            aux = per_sample - 1.0 * ent(avg)
            commit = torch.nn.functional.mse_loss(x, q.detach())
            loss = aux * 0.1 + commit * 0.25
            ((quantized * g).sum() + loss).backward()
        return step
    return setup


def cases(h):
    return [
        h.Case("fsq_8555_n16384", None, _fsq_inputs, _fsq_mmu, _fsq_torch),
        h.Case("lfq_d13_n4096", None, _lfq_inputs(4096, 13), _lfq_mmu(), _lfq_torch()),
        h.Case("lfq_d18_n1024", None, _lfq_inputs(1024, 18), _lfq_mmu(), _lfq_torch()),
        h.Case("lfq_d18_mmu16384_torch1024", None, _lfq_inputs(16384, 18), _lfq_mmu(), _lfq_torch(1024)),
    ]
