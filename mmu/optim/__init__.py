"""mmu.optim: AdamW (fused C update), Adam, SGD, gradient clipping, LR schedules, EMA weights."""
