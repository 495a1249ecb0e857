"""`torchrun --nproc_per_node 2 -m muni train` for MUNI on CPU/gloo, through the real CLI entry.

One run of a tiny MUNI (3 steps, global batch 8) on the quick PolyMNIST-Quadrant build, which
is cached in the session's MUNI_CACHE_DIR (the subprocesses share it): exit 0, rank 0 alone
writes one checkpoint, one log.csv and the final sample sheets, and the checkpoint loads.
End to end (two torch processes): marked ``slow``.
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys

import pytest
import torch

TINY_MODEL = ["model.codec.width=8", "model.codec.flow_width=8", "model.codec.embed_dim=16",
              "model.codec.mlp_width=16", "model.codec.flow_nfe=2", "model.latent_dim=4",
              "model.prior_hidden=16", "model.prior_depth=1", "model.agg_hidden=16", "model.prior_nfe=2"]

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("incomplete", [0.0, 0.9])
def test_torchrun_two_ranks_trains_muni(tmp_path, cache_dir, incomplete):
    """Also on incomplete tuples, where a modality may be absent from a rank's whole batch and
    its encoder and decoder sit out the step (DDP then looks for unused parameters)."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUNI_CACHE_DIR": str(cache_dir),
           "MUNI_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "muni", "train", "--method", "muni", "--dataset", "polymnist-quadrant",
           "--preset", "quick", "--out", str(out), "--no-progress",
           "--set", "train.steps=3", "train.batch_size=8", "train.log_every=1", "train.ckpt_every=0",
           "train.num_threads=1", f"data.incomplete={incomplete}", *TINY_MODEL]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    # rank 0 alone prints
    assert proc.stdout.count("muni train: muni on polymnist-quadrant/quick") == 1, proc.stdout
    assert proc.stdout.count("done: 3 steps") == 1, proc.stdout
    assert proc.stdout.count("learn from step 1000 on") == 1, proc.stdout  # the refiners' start
    assert "so they never learn" in proc.stdout, proc.stdout

    # exactly one checkpoint dir (ckpt_every=0: only at the end), no temp dirs left by a second
    # writer, 'latest' points at it
    entries = sorted(p.name for p in out.iterdir())
    assert [e for e in entries if e.startswith("ckpt-")] == ["ckpt-3"], entries
    assert not [e for e in entries if e.startswith(".tmp-")], entries
    assert (out / "latest").read_text().strip() == "ckpt-3"
    assert (out / "summary.json").is_file() and (out / "samples" / "final").is_dir()

    # log.csv written once: a header and one row per step, no duplicates from rank 1
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]

    from muni.registry import load_model
    from muni.training import load_checkpoint

    ck = load_checkpoint(out)
    assert ck.step == 3 and ck.info["world_size"] == 2
    assert ck.config["batch_size"] == 8
    assert not torch.equal(ck.tensors["rng/0/torch"], ck.tensors["rng/1/torch"])
    model = load_model(out, expect_method="muni")
    assert model.cfg.latent_dim == 4 and set(model.modalities) >= {"digit", "quadrant"}
    with torch.no_grad():
        gen = model.generate({}, ["digit"], n=2, generator=torch.Generator().manual_seed(0))
    assert gen["digit"].shape == (2,)
