"""Show-o training step (issue 13's benchmark "the training step against the twin"): one Trainer step of
mmu.models.show_o.ShowO — a mixed batch of T2I (masked image tokens under omni-attention), LM and MMU
sequences, forward, backward, global-norm clipping, AdamW — against benchmarks/torch_twins.py TwinShowO
with mmu's initial weights on the same sequences (torch_twins.showo_step_inputs builds them with mmu's
prompt builders; mmu's side also draws its masking and builds its prompts and masks inside the timed
step, the twin's are made once).

The same losses, exactly, by less work on mmu's side: mmu computes logits only where its losses read
them (the masked image tokens of T2I, ShowO.t2i_loss_positions; the answers' predecessors of MMU,
ShowO.mmu_loss_positions), and its last layer only at those rows (TransformerLM with an index
logits_at: no other output depends on them), while the twin, as Show-o's public code, computes every
image position's and every text position's logits after the full last layer; attention runs on the
fused heads (F.qkv_heads: QK LayerNorm + partial RoPE in one pass; F.attention_of_heads); and the three
tasks (one batch size) run as ONE packed pass, [lm | t2i | mmu] side by side under a block-diagonal mask
(ShowO._packed_losses: each weight packed once per pass, the LM's 64 rows inside the larger products, one
weight-gradient product per weight), where the twin makes one pass per task. The T2I
and MMU twin parity (tests/test_show_o_twin.py) compares the logits at mmu's rows.

    python benchmarks/run.py --filter show_o_train --repeat 3 --warmup 1 --threads 1
    python benchmarks/run.py --filter show_o_train --repeat 3 --warmup 1 --threads 2

Configs (every sequence: 64 text positions + [SOI] 256 image tokens [EOI], as the sampling benchmark):
  tiny  4 layers of 128 (the ShowOConfig defaults), 512 text ids + 256 codes, 4 rows per task;
  100m  12 layers of 768, 8192 text ids + 4096 codes (~104M parameters), 1 row per task.
"""
import numpy as np

PROMPT, IMAGE = 64, 256
CONFIGS = {
    "tiny": (dict(llm_vocab_size=512, codebook_size=256, dim=128, num_layers=4, num_heads=4), 4),
    "100m": (dict(llm_vocab_size=8192, codebook_size=4096, dim=768, num_layers=12, num_heads=12), 1),
}
LR, BETAS, WEIGHT_DECAY, CLIP = 1e-4, (0.9, 0.999), 0.01, 1.0


def _model(fields):
    import mmu
    from mmu.models.show_o import ShowO, ShowOConfig, default_image_tokenizer
    cfg = ShowOConfig(num_vq_tokens=IMAGE, max_text_len=PROMPT - 1,
                      image_tokenizer=default_image_tokenizer(fields["codebook_size"], resolution=64), **fields)
    mmu.manual_seed(0)
    return ShowO(cfg)


def _inputs(name):
    fields, rows = CONFIGS[name]

    def make(rng):
        model = _model(fields)
        state = {k: v.numpy().copy() for k, v in model.state_dict().items() if k.startswith("lm.")}
        v = fields["llm_vocab_size"]
        text = lambda n: rng.integers(3, v, (rows, n))  # ids >= 3: not [SOT] / [EOT] (1, 2)
        codes = rng.integers(0, fields["codebook_size"], (rows, IMAGE))
        batch = {"t2i": {"text_ids": text(PROMPT - 8), "codes": codes}, "lm": {"text_ids": text(PROMPT - 2)},
                 "mmu": {"codes": codes[::-1].copy(), "question_ids": text(PROMPT // 2 - 2),
                         "answer_ids": text(PROMPT // 2 - 2)}}
        return {"name": name, "state": state, "batch": batch}
    return make


def _mmu_model(d):
    model = _model(CONFIGS[d["name"]][0])
    model.load_state_dict(d["state"], strict=False)  # the transformer; the frozen tokenizer is not timed
    model.train()
    return model


def _train_mmu(fw, d):
    import mmu
    model = _mmu_model(d)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = mmu.optim.AdamW(params, lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY)

    def step():  # mmu.train.Trainer's step (grad_accum 1, constant lr)
        model.zero_grad(set_to_none=True)
        loss, _ = model.training_step(d["batch"], 0)
        loss.backward()
        mmu.optim.clip_grad_norm_(params, CLIP)
        opt.step()
        return loss.item()
    return step


def _train_torch(fw, d):
    from torch_twins import TwinShowO, showo_optimizer, showo_step_inputs, showo_train_step
    model = _mmu_model(d)
    twin = TwinShowO(model.config.to_dict()).load_mmu_state(d["state"])
    twin.train()
    ids, labels, ratio, drop = model.t2i_training_inputs(d["batch"]["t2i"]["text_ids"],
                                                         model.image_token_ids(d["batch"]["t2i"]["codes"]))
    inputs = showo_step_inputs(model, d["batch"], (ids, labels, ratio, drop))
    opt, sched = showo_optimizer(twin, steps=10 ** 9, lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY, min_lr_ratio=1.0)
    return lambda: showo_train_step(twin, opt, sched, inputs, grad_clip=CLIP)[0]


def cases(h):
    return [h.Case(f"show_o_train_step_{name}", None, _inputs(name), _train_mmu, _train_torch) for name in CONFIGS]
