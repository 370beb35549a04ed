"""mmu.io: checkpoints as safetensors files (readable by the safetensors package and PyTorch)."""
