"""OmniTokenizer (issue 15's benchmarks): mmu.models.omnitokenizer against its torch twin (benchmarks/torch_twins.py
TwinOmniTokenizer: the published code's modules, window attention by window_partition + softmax, temporal
attention by SDPA on (b h w, t, d) tokens), the same weights, the same work, in one process, taking turns.

    python benchmarks/bench_omnitokenizer.py                  # every case at 1 and 2 threads
    python benchmarks/bench_omnitokenizer.py --threads 1 --repeat 3
    python benchmarks/run.py --filter omnitokenizer --threads 1

Cases (each a Case of run.py): the model is the script's layout scaled down: 3 x 64 x 64 clips of 9 frames, patch 8
(an 8 x 8 grid), temporal patch 4 (3 latent frames), dim 128 (4 heads of 32), encoder blocks ttww with 4 x 4
windows, decoder tttt, 2 causal temporal blocks each side, an l2-normalised EMA codebook of 1024 codes of 8 dims.
  omnitokenizer_train_step   one Trainer step (forward, L1 x 4 + commitment, backward, clipping, AdamW) on a batch
                             of 4 clips, against TwinOmniTokenizer + omnitokenizer_train_step;
  omnitokenizer_encode       encode a batch of 8 clips -> (8, 3, 8, 8) codes (eval, no grad);
  omnitokenizer_decode       decode those codes -> clips.

Measured on the shared 2-core VM while ~8 other helpers ran (load average 14-17, other processes kept 1.8-1.9
CPUs busy: noisy), ms, median of 3, `python benchmarks/bench_omnitokenizer.py --threads ... --repeat 3`, three runs:
    threads  case                        mmu    torch  torch/mmu    other runs (torch/mmu)
    1        omnitokenizer_train_step   1115    1849   1.66         1.61
    1        omnitokenizer_encode        405     664   1.64         1.25   (8 clips: ~20 clips/s, 470 frames/s)
    1        omnitokenizer_decode        351     469   1.34         1.17
    2        omnitokenizer_train_step   1678    2612   1.56
    2        omnitokenizer_encode        489     887   1.81
    2        omnitokenizer_decode        416     690   1.66
After merging windowattn's C kernels (same machine, load 12-13, other processes 1.8 CPUs): 1 thread train step
659 / 1068 ms 1.62, encode 323 / 290 0.90, decode 225 / 319 1.42; 2 threads 1472 / 1707 1.16, encode 1.68, decode
1.37. Run-to-run swings of +-0.4 in a ratio at this load: take the figures as a range, not a point.
Where the step went before the last two changes: the PEG's depthwise Conv3d (a third of mmu's step: mmu's
depthwise conv3d was ~8x slower than its conv2d; then three conv2d taps with frame shifts, now one conv3d on
conv.c's direct depthwise 3-D kernel), mmu's normalize kernel on rows of 32 (4x slower than a composed l2 norm
then; norm.c's row path now, and the model calls F.normalize), chunk copies of GEGLU / to_kv halves (now two
products). What is left is mostly GEMM (the linears) on both sides. The window attention is windowattn's first
(composed) version; its C kernel will change the encoder's two 'w' blocks only.
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

FIELDS = dict(in_channels=3, resolution=64, num_frames=9, patch_size=8, temporal_patch_size=4, dim=128, dim_head=32,
              heads=4, enc_block="ttww", dec_block="tttt", temporal_depth=2, window_size=4, codebook_size=1024,
              codebook_dim=8)
TRAIN_BATCH, CODE_BATCH = 4, 8
LR, BETAS, CLIP = 1e-4, (0.5, 0.9), 1.0


def _twins():
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    import torch_twins
    return torch_twins


def _inputs(rng):
    import mmu
    from mmu.models.omnitokenizer import OmniTokenizer
    mmu.manual_seed(0)
    model = OmniTokenizer(**FIELDS)
    q = model.quantize
    e = rng.standard_normal((1, q.codebook_size, q.codebook_dim)).astype(np.float32)
    e /= np.linalg.norm(e, axis=-1, keepdims=True)
    q._set_buffers(embed=e, embed_avg=e, cluster_size=np.ones((1, q.codebook_size), np.float32))
    model.codebook_initted.fill_(1.0)
    clips = np.tanh(rng.standard_normal((CODE_BATCH, 3, 9, 64, 64))).astype(np.float32)
    return {"state": {k: v.numpy().copy() for k, v in model.state_dict().items()}, "clips": clips,
            "codes": model.encode(clips)}


def _model(d):
    from mmu.models.omnitokenizer import OmniTokenizer
    model = OmniTokenizer(**FIELDS)
    model.load_state_dict(d["state"])
    return model


def _twin(d):
    tt = _twins()
    model = _model(d)
    return tt.TwinOmniTokenizer(model.config.to_dict()).load_mmu_state(d["state"])


def _train_mmu(fw, d):
    import mmu
    model = _model(d)
    model.train()
    params = model.generator_parameters()
    opt = mmu.optim.AdamW(params, lr=LR, betas=BETAS, weight_decay=0.0)
    batch = np.ascontiguousarray(d["clips"][:TRAIN_BATCH])

    def step():  # mmu.train.Trainer's step (grad_accum 1, constant lr)
        model.zero_grad(set_to_none=True)
        loss, _ = model.training_step(batch, 0)
        loss.backward()
        mmu.optim.clip_grad_norm_(params, CLIP)
        opt.step()
        return loss.item()
    return step


def _train_torch(fw, d):
    import torch
    tt = _twins()
    twin = _twin(d).train()
    for name, p in twin.named_parameters():
        if ".spatial_rel_pos_bias." in name or ".context_norm." in name:
            p.requires_grad_(False)
    opt, sched = tt.twin_optimizer(twin, steps=10 ** 9, lr=LR, betas=BETAS, weight_decay=0.0, min_lr_ratio=1.0)
    clips = torch.from_numpy(d["clips"][:TRAIN_BATCH].copy())
    return lambda: tt.omnitokenizer_train_step(twin, opt, sched, clips, grad_clip=CLIP)[0]


def _encode_mmu(fw, d):
    model = _model(d).eval()
    return lambda: model.encode(d["clips"])


def _encode_torch(fw, d):
    import torch
    twin = _twin(d).eval()
    clips = torch.from_numpy(d["clips"])

    def run():
        with torch.inference_mode():
            return twin.encode(clips).numpy()
    return run


def _decode_mmu(fw, d):
    model = _model(d).eval()
    return lambda: model.decode(d["codes"])


def _decode_torch(fw, d):
    import torch
    twin = _twin(d).eval()
    codes = torch.from_numpy(d["codes"])

    def run():
        with torch.inference_mode():
            return twin.decode(codes).numpy()
    return run


def cases(h):
    return [h.Case("omnitokenizer_train_step", None, _inputs, _train_mmu, _train_torch),
            h.Case("omnitokenizer_encode", None, _inputs, _encode_mmu, _encode_torch),
            h.Case("omnitokenizer_decode", None, _inputs, _decode_mmu, _decode_torch)]


if __name__ == "__main__":
    import argparse
    sys.path.insert(0, HERE)
    import run
    ap = argparse.ArgumentParser(description="OmniTokenizer against its torch twin at each thread count, "
                                             "in one process")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--repeat", default="5")
    ap.add_argument("--warmup", default="1")
    ap.add_argument("--filter", default="omnitokenizer")
    a = ap.parse_args()
    for t in a.threads.split(","):
        run.main(["--filter", a.filter, "--threads", t, "--repeat", a.repeat, "--warmup", a.warmup])
        print()
