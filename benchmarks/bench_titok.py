"""TiTok (issue 15's benchmarks): mmu.models.titok.TiTok against its torch twin (benchmarks/torch_twins.py
TwinTiTok), the same weights (mmu's initial ones copied into the twin), the same work, in one process, taking
turns.

    python benchmarks/bench_titok.py                   # every case at 1 and 2 threads (run.py's table)
    python benchmarks/bench_titok.py --threads 1 --repeat 3
    python benchmarks/run.py --filter titok --threads 1

Cases (each a Case of run.py, collected from cases(h)); the model is TiTok at 32 px, patches of 4 (8 x 8 = 64
patches), K = 64 tokens of 12 over 4096 codes, encoder and decoder of 4 layers of width 128 (4 heads):
  titok_train_step   one mmu.train.Trainer step (batch 16: forward, mse + quantizer loss, backward, global-norm
                     clipping, AdamW) -- against TwinTiTok + torch_twins.tokenizer_train_step;
  titok_encode       encode of 64 images -> (64, 64) codes (eval, no_grad) -- against TwinTiTok.encode;
  titok_decode       decode of (64, 64) codes -> 64 images -- against TwinTiTok.decode.

Measured on the shared 2-core VM, ms, median of 5, `python benchmarks/bench_titok.py --threads 1,2 --repeat 5`,
after the attention kernel chose its blocks from the sequence length (129 tokens: one key block, row blocks of
48 + 48 + 33 instead of 64 + 64 + 1) and the last encoder / decoder layer computes only the rows it keeps
(attention_of_heads' query_rows: the K latents / the N patches). Other processes kept 1.6-1.9 CPUs busy (load
average 16-17), so these ratios are loaded ones, above the quiet ones (a quiet run before these changes: train
step 292.6 / 351.1 ms, 1.20x at 1 thread, 1.21x at 2):
    threads  case               mmu     torch   torch/mmu
    1        titok_train_step    905     1351    1.49
    1        titok_encode        665     1216    1.83
    1        titok_decode        621      791    1.27
    2        titok_train_step    740     1325    1.79
    2        titok_encode        646     1430    2.21
    2        titok_decode        614      983    1.60
CPU seconds of the train step at 1 thread per phase (process time, min of 5, same process, load ~14; less
sensitive to the load than wall time): mmu forward 92 / backward 167 / clipping + AdamW 1.6 ms = 261 ms, torch
129 / 240 / 8 = 376 ms (1.44x); the same measure before the two changes: mmu 106 / 189 / 1.6 = 297 ms (1.27x).
The twin's encode pays for 1d-tokenizer's distance matrix (N x 4096, |z|^2 + |e|^2 - 2 z.e materialised), mmu's
nearest-code search never forms it; decode is the decoder's transformer on both sides.
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

CONFIG = dict(resolution=32, patch_size=4, in_channels=3, encoder_width=128, encoder_depth=4, encoder_heads=4,
              decoder_width=128, decoder_depth=4, decoder_heads=4, num_latent_tokens=64, token_size=12,
              codebook_size=4096)
BATCH, EVAL_BATCH = 16, 64
LR, BETAS, WEIGHT_DECAY, CLIP = 1e-4, (0.9, 0.99), 1e-4, 1.0


def _twins():
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    import torch_twins
    return torch_twins


def _model(state=None):
    import mmu
    from mmu.models.titok import TiTok
    mmu.manual_seed(0)
    model = TiTok(**CONFIG)
    if state is not None:
        model.load_state_dict(state)
    return model


def _inputs(rng):
    model = _model()
    images = np.tanh(rng.standard_normal((EVAL_BATCH, 3, 32, 32))).astype(np.float32)
    return {"state": {k: v.numpy().copy() for k, v in model.state_dict().items()}, "images": images,
            "codes": model.encode(images)}


def _train_mmu(fw, d):
    import mmu
    model = _model(d["state"])
    model.train()
    params = model.generator_parameters()
    opt = mmu.optim.AdamW(params, lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY)
    batch = d["images"][:BATCH]

    def step():  # mmu.train.Trainer's step (grad_accum 1, constant lr)
        model.zero_grad(set_to_none=True)
        loss, _ = model.training_step(batch, 0)
        loss.backward()
        mmu.optim.clip_grad_norm_(params, CLIP)
        opt.step()
        return loss.item()
    return step


def _twin(d):
    tt = _twins()
    return tt, tt.titok_twin(_model(d["state"]))


def _train_torch(fw, d):
    import torch
    tt, twin = _twin(d)
    twin.train()
    opt, _ = tt.make_optimizers(twin, lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY)
    batch = torch.from_numpy(d["images"][:BATCH])
    return lambda: tt.tokenizer_train_step(twin, opt, batch, 0, grad_clip=CLIP)[0]


def _encode_mmu(fw, d):
    model = _model(d["state"])
    return lambda: model.encode(d["images"])


def _encode_torch(fw, d):
    import torch
    _, twin = _twin(d)
    images = torch.from_numpy(d["images"])
    return lambda: twin.encode(images)


def _decode_mmu(fw, d):
    model = _model(d["state"])
    return lambda: model.decode(d["codes"])


def _decode_torch(fw, d):
    import torch
    _, twin = _twin(d)
    codes = torch.from_numpy(d["codes"])
    return lambda: twin.decode(codes)


def cases(h):
    return [h.Case("titok_train_step", None, _inputs, _train_mmu, _train_torch),
            h.Case("titok_encode", None, _inputs, _encode_mmu, _encode_torch),
            h.Case("titok_decode", None, _inputs, _decode_mmu, _decode_torch)]


if __name__ == "__main__":
    import argparse
    sys.path.insert(0, HERE)
    import run
    ap = argparse.ArgumentParser(description="TiTok against its torch twin at each thread count, in one process")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--repeat", default="5")
    ap.add_argument("--warmup", default="1")
    ap.add_argument("--filter", default="titok")
    a = ap.parse_args()
    for t in a.threads.split(","):
        run.main(["--filter", a.filter, "--threads", t, "--repeat", a.repeat, "--warmup", a.warmup])
        print()
