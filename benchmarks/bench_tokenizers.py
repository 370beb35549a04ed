"""Tokenizer benchmarks (issue 6): a training step (forward, backward, AdamW, the discriminator's step
for VQGAN) of VQ-VAE and of a small VQGAN, and encode / decode throughput, each against its PyTorch
twin (benchmarks/torch_twins.py: the same architecture with mmu's initial weights copied in, the same
batch and optimiser settings).

    python benchmarks/run.py --filter tokenizer --repeat 5
    python benchmarks/run.py --filter tokenizer --repeat 5 --threads 1   (robust on a shared machine)

On a machine where other processes take the cores, the 2-thread wall times swing by 10x (an OpenMP
barrier waits for a descheduled thread); the 1-thread table measures the work itself.
"""
import numpy as np

# The VQ-VAE of `mmu compare`'s default (non-fast) entry on 32 px RGB crops (hidden 64, 1 res block,
# f = 4, 32-d latents, 256 codes), batch 32.
VQVAE_FIELDS = dict(in_channels=3, hidden_channels=64, res_channels=32, num_res_blocks=1, downsample=4,
                    embed_dim=32, codebook_size=256, resolution=32, quantizer="vq")
VQVAE_BATCH = 32
# The small VQGAN: 64 px, ch 64, ch_mult [1, 2, 2], batch 8, L1 + codebook loss + PatchGAN
# (hinge, adaptive weight) when the discriminator is available; no LPIPS (not mirrored by the twin).
VQGAN_FIELDS = dict(in_channels=3, resolution=64, ch=64, ch_mult=[1, 2, 2], num_res_blocks=1,
                    attn_resolutions=[16], z_channels=64, embed_dim=64, codebook_size=1024, quantizer="vq",
                    perceptual_weight=0.0, disc_ndf=64, disc_layers=3, disc_start=0)
VQGAN_BATCH = 8
LR, BETAS, CLIP = 2e-4, (0.5, 0.9), 1.0


def has_discriminator():
    """True when mmu has what VQGAN's GAN terms need (NLayerDiscriminator + BatchNorm2d + adaptive_weight)."""
    import mmu
    import mmu.losses
    return all(hasattr(mmu.losses, n) for n in ("NLayerDiscriminator", "adaptive_weight")) and \
        hasattr(mmu.nn, "BatchNorm2d")


def mmu_optimizers(model, lr=LR, betas=BETAS, weight_decay=0.0):
    """AdamW over generator_parameters() (and the discriminator's), as mmu.train.Trainer builds them."""
    import mmu
    opt = mmu.optim.AdamW(model.generator_parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
    dopt = None
    if model.discriminator is not None:
        dopt = mmu.optim.AdamW([p for p in model.discriminator.parameters() if p.requires_grad], lr=lr,
                               betas=betas, weight_decay=weight_decay)
    return opt, dopt


def mmu_train_step(model, opt, batch, step, disc_opt=None, grad_clip=CLIP):
    """mmu.train.Trainer.train_step for grad_accum 1 and a constant lr: generator forward with the
    discriminator frozen, backward, clip_grad_norm_, AdamW; then the discriminator's step (step >=
    disc_start). Returns (loss, d_loss or None)."""
    import mmu
    model.zero_grad(set_to_none=True)
    disc = model.discriminator
    dparams = [] if disc is None else [p for p in disc.parameters() if p.requires_grad]
    for p in dparams:
        p.requires_grad_(False)
    try:
        out = model(batch, step)
        loss = out.loss.item()
        out.loss.backward()
    finally:
        for p in dparams:
            p.requires_grad_(True)
    gen = model.generator_parameters()
    if grad_clip:
        mmu.optim.clip_grad_norm_(gen, grad_clip)
    opt.step()
    d_value = None
    if disc is not None and disc_opt is not None and step >= model.config.disc_start:
        model.zero_grad(set_to_none=True)
        d, _ = model.discriminator_loss(batch, out.recon.detach(), step)
        d.backward()
        if grad_clip:
            mmu.optim.clip_grad_norm_(dparams, grad_clip)
        disc_opt.step()
        d_value = d.item()
    return loss, d_value


# ----------------------------------------------------------------------------------- cases
def _model(kind, fields):
    import mmu
    from mmu import tokenizers
    mmu.manual_seed(0)
    return getattr(tokenizers, kind)(**fields)


def _inputs(kind, fields, batch, encode_batch):
    def make(rng):
        model = _model(kind, fields)
        state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
        R, C = model.config.resolution, model.config.in_channels
        x = np.tanh(1.5 * rng.standard_normal((batch, C, R, R))).astype(np.float32)
        xe = np.tanh(1.5 * rng.standard_normal((encode_batch, C, R, R))).astype(np.float32)
        codes = model.encode(xe)
        return {"kind": kind, "fields": fields, "state": state, "x": x, "xe": xe, "codes": codes}
    return make


def _mmu_model(d):
    model = _model(d["kind"], d["fields"])
    model.load_state_dict(d["state"])
    return model


def _twin_model(d):
    from torch_twins import tokenizer_twin  # benchmarks/ is on sys.path when run.py collects this file
    return tokenizer_twin(_mmu_model(d))


def _train_mmu(fw, d):
    model = _mmu_model(d)
    model.train()
    opt, dopt = mmu_optimizers(model)
    x = fw.tensor(d["x"])
    # a fixed step >= disc_start: every call runs the full generator + discriminator step
    return lambda: mmu_train_step(model, opt, x, 1, dopt)


def _train_torch(fw, d):
    from torch_twins import make_optimizers, tokenizer_train_step
    twin = _twin_model(d)
    twin.train()
    opt, dopt = make_optimizers(twin, lr=LR, betas=BETAS)
    x = fw.tensor(d["x"])
    return lambda: tokenizer_train_step(twin, opt, x, 1, dopt, grad_clip=CLIP)


def _encode_mmu(fw, d):
    model = _mmu_model(d)
    return lambda: model.encode(d["xe"])


def _encode_torch(fw, d):
    twin = _twin_model(d)
    x = fw.tensor(d["xe"])
    return lambda: twin.encode(x).numpy()


def _decode_mmu(fw, d):
    model = _mmu_model(d)
    return lambda: model.decode(d["codes"])


def _decode_torch(fw, d):
    twin = _twin_model(d)
    codes = fw.mod.from_numpy(d["codes"])
    return lambda: twin.decode(codes).numpy()


def cases(h):
    try:
        gan = has_discriminator()
    except ImportError:
        gan = False
    vqgan = dict(VQGAN_FIELDS, use_discriminator=gan)
    tag = "" if gan else "_nodisc"  # no PatchGAN in this build: the step is L1 + codebook loss only
    out = []
    for name, kind, fields, batch, enc_batch in (("vqvae", "VQVAE", VQVAE_FIELDS, VQVAE_BATCH, 64),
                                                  ("vqgan" + tag, "VQGAN", vqgan, VQGAN_BATCH, 16)):
        inputs = _inputs(kind, fields, batch, enc_batch)
        out += [h.Case(f"tokenizer_{name}_train_step_b{batch}", None, inputs, _train_mmu, _train_torch),
                h.Case(f"tokenizer_{name}_encode_b{enc_batch}", None, inputs, _encode_mmu, _encode_torch),
                h.Case(f"tokenizer_{name}_decode_b{enc_batch}", None, inputs, _decode_mmu, _decode_torch)]
    return out
