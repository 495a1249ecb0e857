"""Two-process gloo DDP on CPU: ranks agree, match one process, and resume exactly."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from _toy import ToyModel, toy_dataset
from muni.errors import ConfigError
from muni.training import TrainConfig, load_checkpoint, train
from muni.training import distributed

CFG = dict(steps=12, batch_size=16, lr=1e-2, weight_decay=0.01, warmup_steps=3, grad_clip=0.5,
           ema_decay=0.9, seed=4, log_every=4, ckpt_every=4, num_threads=1)


def _params(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.named_parameters()}


def _worker(rank: int, port: int, root: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_RANK=str(rank))
    distributed.setup()
    try:
        root_p = Path(root)
        assert distributed.world() == distributed.World(rank, 2, rank)
        torch.manual_seed(100 + rank)  # different init per rank: DDP must broadcast rank 0's
        m = ToyModel(noise=0.0)
        train(m, toy_dataset(), TrainConfig(**CFG), root_p / "ddp", progress=False)
        save_file(_params(m), str(root_p / f"ddp-rank{rank}.safetensors"))
        # exact resume under DDP, with per-rank noise from the global RNG
        noisy = {**CFG, "steps": 10}
        torch.manual_seed(7)
        train(ToyModel(), toy_dataset(), TrainConfig(**noisy), root_p / "full", progress=False)
        torch.manual_seed(7)
        train(ToyModel(), toy_dataset(), TrainConfig(**{**noisy, "steps": 5}), root_p / "part",
              progress=False)
        m_res = ToyModel()  # initialised from whatever the RNG holds: the checkpoint must win
        train(m_res, toy_dataset(), TrainConfig(**noisy), root_p / "part", resume=True,
              progress=False)
        save_file(_params(m_res), str(root_p / f"resumed-rank{rank}.safetensors"))
        try:
            train(ToyModel(), toy_dataset(), TrainConfig(**{**CFG, "batch_size": 15}),
                  root_p / "bad", progress=False)
        except ConfigError as e:
            (root_p / f"error-rank{rank}.txt").write_text(str(e))
    finally:
        distributed.cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(root)), nprocs=2, join=True)
    return root


def test_ranks_agree_and_match_single_process(ddp_run, tmp_path):
    r0, r1 = (load_file(str(ddp_run / f"ddp-rank{r}.safetensors")) for r in range(2))
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    torch.manual_seed(100)  # rank 0's init
    m = ToyModel(noise=0.0)
    train(m, toy_dataset(), TrainConfig(**CFG), tmp_path, progress=False)
    for k, v in _params(m).items():
        torch.testing.assert_close(r0[k], v, atol=1e-5, rtol=1e-5)
    ck = load_checkpoint(ddp_run / "ddp")
    assert ck.info["world_size"] == 2 and ck.step == 12
    assert not torch.equal(ck.tensors["rng/0/torch"], ck.tensors["rng/1/torch"])


def test_ddp_resume_is_bitwise(ddp_run):
    for r in range(2):
        res = load_file(str(ddp_run / f"resumed-rank{r}.safetensors"))
        full = load_checkpoint(ddp_run / "full").group("model")
        assert all(torch.equal(res[k], full[k]) for k in res)
    a, b = load_checkpoint(ddp_run / "full"), load_checkpoint(ddp_run / "part")
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)


def test_global_batch_must_divide_world_size(ddp_run):
    for r in range(2):
        msg = (ddp_run / f"error-rank{r}.txt").read_text()
        assert "batch_size=15" in msg and "world size 2" in msg
