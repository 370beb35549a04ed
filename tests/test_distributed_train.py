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
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * scale, err_msg=f"{case}: {k}")
    if case in ("vqvae", "accum"):   # the restarts and k-means init ran: not the initial codebook
        assert np.abs(r0["quantize.embed"]).sum() > 0


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
