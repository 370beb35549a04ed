"""Data-parallel training over MPI (issue 16): 2 ranks with batch B each against one process with batch
2B (each global batch the concatenation of the two ranks' batches), for a VQ-VAE with EMA VQ, k-means init
and dead-code restarts, a VQGAN with its discriminator, the GPT language model and gradient accumulation;
codebooks bit-identical across ranks; a resumed run; a model mismatch detected at start. One
`mpirun -np 2` runs every case (tests/_dist_train_cases.py); skipped where mpi4py or mpirun is absent."""
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _dist_train_cases as C  # noqa: E402
import _mpi  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    _mpi.require_mpi()
    out = tmp_path_factory.mktemp("dist_train")
    env = dict(os.environ, OMP_NUM_THREADS="1", MMU_DIST_TIMEOUT="60",
               PYTHONPATH=os.pathsep.join(p for p in (str(_mpi.REPO), os.environ.get("PYTHONPATH")) if p))
    cmd = _mpi.mpirun_command(2, os.path.join(HERE, "_dist_train_cases.py"), [out])
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out


def _load(out, case, rank):
    with np.load(os.path.join(out, f"{case}_rank{rank}.npz")) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture
def one_thread():
    import mmu
    prev = mmu.get_num_threads()
    mmu.set_num_threads(1)
    yield
    mmu.set_num_threads(prev)


@pytest.mark.parametrize("case", ["vqvae", "vqgan", "lm", "accum"])
def test_two_ranks_equal_one_process_with_twice_the_batch(runs, case, one_thread):
    r0, r1 = _load(runs, case, 0), _load(runs, case, 1)
    # every rank ends with the same model, bit for bit (codebooks included: EMA statistics all-reduced,
    # k-means init and restarts decided on rank 0 and broadcast)
    for k in r0:
        np.testing.assert_array_equal(r0[k], r1[k], err_msg=f"{case}: {k} differs between the ranks")
    ref = C.make_reference(case)
    assert set(ref) == set(r0)
    for k, b in ref.items():
        a = r0[k]
        if a.dtype.kind != "f" or not a.size:
            np.testing.assert_array_equal(a, b, err_msg=k)
            continue
        scale = float(np.max(np.abs(b))) or 1.0
        # the bound is 1e-6 relative (max |diff| / max |tensor|); measured 4e-7 (vqvae), 5e-7 (lm),
        # 2e-6 (accum: 4 micro-batches summed in another order), 1e-5 (vqgan, whose GAN game amplifies
        # rounding: one process fed the same images in another order moves as far)
        tol = {"vqvae": 1e-6, "lm": 1e-6, "accum": 5e-6, "vqgan": 5e-5}[case]
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * scale, err_msg=f"{case}: {k}")
    if case in ("vqvae", "accum"):   # k-means init ran (the codebook starts at zeros)
        assert np.abs(r0["quantize.embed"]).sum() > 0


def test_reference_run_restarts_dead_codes(monkeypatch, one_thread):
    # the VQ-VAE case exercises both sync paths: k-means init and at least one dead-code restart
    import mmu.quantizers.vq as V
    calls = {"kmeans": 0, "restart": 0}
    init, expire = V.VectorQuantize._init_kmeans, V.VectorQuantize._expire_codes

    def counting_init(self, flats):
        calls["kmeans"] += 1
        return init(self, flats)

    def counting_expire(self, flats):
        before = self.embed.numpy().copy()
        expire(self, flats)
        calls["restart"] += int(not np.array_equal(before, self.embed.numpy()))
    monkeypatch.setattr(V.VectorQuantize, "_init_kmeans", counting_init)
    monkeypatch.setattr(V.VectorQuantize, "_expire_codes", counting_expire)
    C.make_reference("vqvae")
    assert calls["kmeans"] == 1 and calls["restart"] >= 1


def test_distributed_resume_continues_the_run(runs):
    # 10 steps with a checkpoint, then fresh trainers on both ranks resume it to 20: the same model as the
    # uninterrupted 2-rank run, bit for bit
    full, resumed = _load(runs, "vqvae", 0), _load(runs, "resume", 0)
    other = _load(runs, "resume", 1)
    for k in full:
        np.testing.assert_array_equal(full[k], resumed[k], err_msg=k)
        np.testing.assert_array_equal(resumed[k], other[k], err_msg=k)


def test_model_mismatch_is_detected_at_start_on_every_rank(runs):
    for rank in range(2):
        with open(os.path.join(runs, f"mismatch_rank{rank}.txt")) as f:
            msg = f.read()
        assert "the ranks hold different models" in msg
        assert "'quantize.embed' is (1, 16, 4) float32 on rank 0 but (1, 32, 4) float32 on rank 1" in msg
        assert "ranks differing from rank 0: [1]" in msg


CLI_SCRIPT = """
import json, os, sys
import numpy as np
from PIL import Image
from mmu.__main__ import main
from mmu import distributed as dist
root = sys.argv[1]
imgs = os.path.join(root, "imgs")
if dist.get_rank() == 0:
    os.makedirs(imgs, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(os.path.join(imgs, f"{i}.png"))
    with open(os.path.join(root, "cfg.json"), "w") as f:
        json.dump({"tokenizer": "VQVAE", "config": {"hidden_channels": 8, "res_channels": 4, "num_res_blocks": 1,
                   "downsample": 2, "embed_dim": 4, "codebook_size": 16, "quantizer": "ema_vq"},
                   "train": {"steps": 4, "batch_size": 2, "log_every": 1, "progress": False},
                   "data": {"size": 16, "channels": 3}}, f)
dist.barrier()
train = ["train", "--config", os.path.join(root, "cfg.json"), "--data", imgs, "--out", os.path.join(root, "run")]
codes = [main(train), main(train + ["--resume", "--steps", "6"]),
         main(["compare", "--tokenizers", "vqvae-fsq", "--steps", "2", "--fast", "--out", os.path.join(root, "rep")])]
print("CODES", dist.get_rank(), codes, file=sys.stderr)
"""


def test_cli_train_and_compare_under_mpirun(tmp_path):
    res = _mpi.run_mpi(tmp_path, CLI_SCRIPT, np=2, timeout=240, args=[tmp_path], env={"MMU_DIST_TIMEOUT": "60"})
    assert res.returncode == 0, res.output
    assert "CODES 0 [0, 0, 0]" in res.stderr and "CODES 1 [0, 0, 0]" in res.stderr, res.output
    # rank 0 alone prints (one header per command) and writes
    assert res.stdout.count("mmu train: VQVAE") == 2 and res.stdout.count("mmu compare:") == 1, res.output
    run = tmp_path / "run"
    for f in ("model.safetensors", "history.csv", "loss_curves.png", "eval.json"):
        assert (run / f).is_file(), f
    with open(run / "history.csv") as f:
        steps = [int(float(line.split(",")[0])) for line in f.read().splitlines()[1:] if line.split(",")[0]]
    assert sorted(set(steps)) == [1, 2, 3, 4, 5, 6]     # resumed from step 4 on both ranks
    assert (tmp_path / "rep" / "report.md").is_file()
