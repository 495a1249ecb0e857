"""Checkpoints and weight files: safetensors for every tensor, JSON for the rest.

Nothing here unpickles: loading never calls ``torch.load`` or ``pickle``, and pickled files
(``.pt``, ``.pth``, ``.ckpt``, ... or any file starting with pickle / torch-zip magic) are
refused with a `CheckpointError`.

A run directory::

    out_dir/
      latest                        name of the newest complete checkpoint, e.g. "ckpt-1200"
      ckpt-1200/state.safetensors   every tensor (model/, ema/, optim/, rng/, data/ prefixes)
      ckpt-1200/checkpoint.json     step, config, meta, optimizer hyperparameters, the sha256 of
                                    the tensor file and of this JSON itself ("info_sha256")
      log.csv

A checkpoint directory is written to a temporary directory inside ``out_dir``, fsynced, and
renamed to ``ckpt-<step>`` in one ``os.replace``; the ``latest`` pointer is replaced the same
way. A crash at any point leaves the previous checkpoint complete and ``latest`` pointing to
a complete checkpoint. Only the newest ``keep_last`` checkpoints are kept, and the one before
the newest (the recovery point should the next step diverge, see `rewind`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import nn

import muni
from muni.errors import CheckpointError

FORMAT_VERSION = 2  # 2: checkpoint.json carries its own checksum
STATE_FILE, INFO_FILE = "state.safetensors", "checkpoint.json"      # training checkpoint
LATEST = "latest"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")
_TMP_PREFIX = ".tmp-"
_CKPT_NAME = re.compile(r"ckpt-(\d+)")
INFO_SHA = "info_sha256"  # the checksum of the JSON metadata without this key


def _info_text(info: dict[str, Any]) -> str:
    """The canonical JSON text of `info` (what `INFO_SHA` covers)."""
    return json.dumps(info, indent=2, sort_keys=True, allow_nan=False)


# ---------------------------------------------------------------------------- writing


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _saveable(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, detached tensors; tied (storage-sharing) tensors are copied apart."""
    out, seen = {}, set()
    for k, v in tensors.items():
        v = v.detach().cpu().contiguous()
        ptr = (v.untyped_storage().data_ptr(), v.storage_offset())
        if v.numel() and ptr in seen:
            v = v.clone()
        seen.add(ptr)
        out[k] = v
    return out


def _write_dir_atomic(final: Path, tensors: dict[str, torch.Tensor], info: dict[str, Any],
                      tensors_name: str, info_name: str) -> Path:
    """Write ``final/{tensors_name, info_name}`` atomically (temp dir + rename)."""
    blob = safetensors.torch.save(_saveable(tensors))
    info = {**info, "format_version": FORMAT_VERSION, "muni_version": muni.__version__,
            "torch_version": torch.__version__,
            "files": {tensors_name: {"sha256": hashlib.sha256(blob).hexdigest(),
                                     "bytes": len(blob)}}}
    info[INFO_SHA] = hashlib.sha256(_info_text(info).encode()).hexdigest()
    text = _info_text(info)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX + final.name + "-", dir=final.parent))
    try:
        _write_file(tmp / tensors_name, blob)
        _write_file(tmp / info_name, text.encode())
        _fsync_dir(tmp)
        if final.exists():  # e.g. re-saved at the same step: move the old one out of the way
            old = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX + "old-", dir=final.parent))
            os.replace(final, old / final.name)
            shutil.rmtree(old)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def write_json_atomic(path: Path, obj: Any) -> Path:
    """Write `obj` as JSON to `path` through a temporary file and one rename (never half-written)."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / (_TMP_PREFIX + path.name)
    _write_file(tmp, text.encode())
    os.replace(tmp, path)
    return path


def checkpoint_steps(run_dir: str | os.PathLike) -> list[int]:
    """Steps of the complete ``ckpt-<step>`` directories in `run_dir`, ascending."""
    steps = []
    for p in Path(run_dir).glob("ckpt-*"):
        m = _CKPT_NAME.fullmatch(p.name)
        if m and p.is_dir() and not p.is_symlink():
            steps.append(int(m.group(1)))
    return sorted(steps)


def clean_stale_temps(run_dir: str | os.PathLike) -> None:
    """Remove temporary directories left by a process killed while writing."""
    for p in Path(run_dir).glob(_TMP_PREFIX + "*"):
        shutil.rmtree(p, ignore_errors=True)


def save_checkpoint(out_dir: str | os.PathLike, step: int, tensors: dict[str, torch.Tensor],
                    info: dict[str, Any], *, keep_last: int = 2) -> Path:
    """Write ``out_dir/ckpt-<step>`` atomically, point ``latest`` at it, prune old ones.

    Parameters
    ----------
    out_dir : path
        The run directory.
    step : int
        Training step the state corresponds to (steps completed).
    tensors : dict[str, Tensor]
        Every tensor of the state, flat keys (see the module docstring for prefixes).
    info : dict
        JSON-serialisable facts (config, meta, optimizer hyperparameters, ...); ``step``,
        ``format``, versions and the sha256 of the tensor file are added.
    keep_last : int
        How many of the newest checkpoints to keep (at least 1; the new one is always kept).
        The newest checkpoint before `step` is kept as well: should the step after `step`
        diverge, it is the state to resume from (`rewind`).

    Returns
    -------
    Path
        The checkpoint directory.
    """
    out_dir = Path(out_dir)
    name = f"ckpt-{step}"
    path = _write_dir_atomic(out_dir / name, tensors, {**info, "format": "muni-checkpoint",
                                                       "step": step}, STATE_FILE, INFO_FILE)
    point_latest(out_dir, step)
    steps = checkpoint_steps(out_dir)
    keep = set(steps[-max(1, keep_last):]) | {step} | set(_recovery_steps(steps, step))
    for old in steps:
        if old not in keep:
            shutil.rmtree(out_dir / f"ckpt-{old}", ignore_errors=True)
    return path


def _recovery_steps(steps: list[int], step: int) -> list[int]:
    """The newest of `steps` before `step`: the state a divergence right after `step` resumes from."""
    return [max(s for s in steps if s < step)] if any(s < step for s in steps) else []


def point_latest(out_dir: str | os.PathLike, step: int) -> None:
    """Atomically make ``out_dir/latest`` name ``ckpt-<step>``."""
    out_dir = Path(out_dir)
    tmp = out_dir / (_TMP_PREFIX + LATEST)
    _write_file(tmp, f"ckpt-{step}\n".encode())
    os.replace(tmp, out_dir / LATEST)
    _fsync_dir(out_dir)


def rewind(out_dir: str | os.PathLike, before: int) -> int | None:
    """Drop the checkpoints at or after step `before` and point ``latest`` at the newest one
    left; returns its step, or None when none is left (``latest`` is then removed too).

    After a divergence at step ``before + 1`` the checkpoint at `before` holds the very state
    whose next step fails (resuming it replays that step bitwise), so recovery starts from a
    checkpoint that was followed by finite steps. `save_checkpoint` never prunes that one.
    """
    out_dir = Path(out_dir)
    for s in checkpoint_steps(out_dir):
        if s >= before:
            shutil.rmtree(out_dir / f"ckpt-{s}")
    good = _recovery_steps(checkpoint_steps(out_dir), before)
    if good:
        point_latest(out_dir, good[0])
        return good[0]
    (out_dir / LATEST).unlink(missing_ok=True)
    return None


# ---------------------------------------------------------------------------- reading


@dataclass
class Checkpoint:
    """A loaded, verified checkpoint.

    Attributes
    ----------
    path : Path
        The checkpoint directory.
    info : dict
        The JSON file's content.
    tensors : dict[str, Tensor]
        Every tensor, flat keys.
    """

    path: Path
    info: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def step(self) -> int:
        return self.info["step"]

    @property
    def config(self) -> dict[str, Any]:
        return self.info.get("config", {})

    @property
    def meta(self) -> dict[str, Any]:
        return self.info.get("meta", {})

    def group(self, prefix: str) -> dict[str, torch.Tensor]:
        """Tensors under ``prefix/``, with the prefix stripped."""
        p = prefix + "/"
        return {k[len(p):]: v for k, v in self.tensors.items() if k.startswith(p)}

    def model_state(self, ema: bool = True) -> dict[str, torch.Tensor]:
        """The model's state dict, with EMA parameters substituted when present and `ema`."""
        state = self.group("model")
        if ema:
            state.update({k[len("shadow."):]: v for k, v in self.group("ema").items()
                          if k.startswith("shadow.")})
        return state


def _is_pickle(head: bytes) -> bool:
    """Pickle protocol >= 2 starts with 0x80 <proto>; torch.save's zip format with PK\\x03\\x04."""
    return (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head[:4] == b"PK\x03\x04"


def _refuse_file(path: Path, files: str) -> None:
    """A checkpoint path that is a single file: refuse, naming pickles as such."""
    with open(path, "rb") as f:
        head = f.read(4)
    if path.suffix.lower() in PICKLE_SUFFIXES or _is_pickle(head):
        raise CheckpointError(f"{path}: refusing to unpickle (pickles can run arbitrary code); "
                              f"muni saves a directory holding {files}")
    raise CheckpointError(f"{path}: muni loads a directory holding {files}, not a single file")


def _refuse_pickles(path: Path) -> None:
    for p in sorted(path.iterdir()):
        if p.suffix.lower() in PICKLE_SUFFIXES:
            raise CheckpointError(f"{p}: refusing to unpickle (found a {p.suffix} file in the "
                                  f"checkpoint; muni checkpoints are safetensors + JSON only)")


def _read_tensors(file: Path, expected: dict[str, Any]) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise CheckpointError(f"{file}: missing (the checkpoint is incomplete)")
    data = file.read_bytes()
    (n,) = struct.unpack("<Q", data[:8]) if len(data) >= 8 else (None,)
    looks_safetensors = n is not None and 8 + n <= len(data) and data[8:9] == b"{"
    if not looks_safetensors and _is_pickle(data[:4]):
        raise CheckpointError(f"{file}: refusing to unpickle: this is a pickle / torch.save file "
                              f"under a safetensors name, not a muni checkpoint")
    if expected.get("bytes") is not None and len(data) != expected["bytes"]:
        raise CheckpointError(f"{file}: {len(data)} bytes, expected {expected['bytes']} "
                              f"(truncated or overwritten)")
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected.get("sha256"):
        raise CheckpointError(f"{file}: sha256 {digest[:16]}... does not match the recorded "
                              f"{str(expected.get('sha256'))[:16]}... (corrupted file)")
    try:
        return safetensors.torch.load(data)
    except Exception as e:  # noqa: BLE001 -- safetensors raises its own error types
        raise CheckpointError(f"{file}: not a valid safetensors file ({e})") from None


def _read_dir(path: Path, tensors_name: str, info_name: str, fmt: str,
              expect_method: str | None) -> Checkpoint:
    _refuse_pickles(path)
    info_file = path / info_name
    if not info_file.is_file():
        raise CheckpointError(f"{info_file}: missing (not a muni {fmt} directory, or incomplete)")
    head = info_file.read_bytes()
    if _is_pickle(head[:4]):
        raise CheckpointError(f"{info_file}: refusing to unpickle: a pickle under a JSON name")
    try:
        info = json.loads(head.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{info_file}: not valid JSON ({e}); the file is corrupt") from None
    if not isinstance(info, dict) or info.get("format") != fmt:
        raise CheckpointError(f"{info_file}: format {info.get('format') if isinstance(info, dict) else None!r}, "
                              f"expected {fmt!r}")
    if info.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{info_file}: format version {info.get('format_version')!r}; this "
                              f"muni ({muni.__version__}) reads version {FORMAT_VERSION}")
    recorded = info.pop(INFO_SHA, None)
    if hashlib.sha256(_info_text(info).encode()).hexdigest() != recorded:
        raise CheckpointError(f"{info_file}: its content does not match its recorded checksum "
                              f"({INFO_SHA}); the file was edited or corrupted")
    _check_fields(info_file, info, tensors_name)
    method = (info.get("meta") or {}).get("method")
    if expect_method is not None and method != expect_method:
        raise CheckpointError(f"{path}: checkpoint of method {method!r}, expected "
                              f"{expect_method!r}")
    expected = (info.get("files") or {}).get(tensors_name, {})
    return Checkpoint(path, info, _read_tensors(path / tensors_name, expected))


# The JSON fields every reader relies on, and the types they must have.
_FIELDS: dict[str, tuple[type, ...]] = {
    "step": (int,), "config": (dict,), "meta": (dict,), "files": (dict,), "changes": (list,),
    "optimizer": (dict,), "data_pos": (int,), "elapsed_s": (int, float), "world_size": (int,),
    "window": (dict,)}


def _check_fields(info_file: Path, info: dict[str, Any], tensors_name: str) -> None:
    """Refuse a field of the wrong type or range with one line naming it."""
    for key, types in _FIELDS.items():
        if key in info and (not isinstance(info[key], types) or isinstance(info[key], bool)):
            raise CheckpointError(f"{info_file}: field {key!r} must be "
                                  f"{' or '.join(t.__name__ for t in types)}, got {info[key]!r:.60}")
    for key in ("step", "data_pos"):
        if info.get(key, 0) < 0 or (key == "step" and key not in info):
            raise CheckpointError(f"{info_file}: field {key!r} must be an integer >= 0")
    entry = info.get("files", {}).get(tensors_name)
    if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
            and type(entry.get("bytes")) is int):
        raise CheckpointError(f"{info_file}: field 'files' must record the sha256 and size of "
                              f"{tensors_name}")


def find_latest(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint ``latest`` points to (the newest ``ckpt-*`` if the pointer is missing).

    Raises
    ------
    CheckpointError
        When ``latest`` names anything but a ``ckpt-<step>`` directory inside `run_dir`
        (an absolute path, ``..``, a link): a run directory never points outside itself.
    """
    run_dir = Path(run_dir)
    pointer = run_dir / LATEST
    if pointer.is_file():
        try:
            name = pointer.read_text().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{pointer}: unreadable ({e})") from None
        target = run_dir / name
        if not _CKPT_NAME.fullmatch(name) or target.is_symlink():
            raise CheckpointError(f"{pointer}: holds {name[:80]!r}, not the name of a ckpt-<step> "
                                  f"directory of this run")
        if target.is_dir():
            return target
    steps = checkpoint_steps(run_dir)
    return run_dir / f"ckpt-{steps[-1]}" if steps else None


def load_checkpoint(path: str | os.PathLike, *, expect_method: str | None = None) -> Checkpoint:
    """Load and verify a training checkpoint.

    Parameters
    ----------
    path : path
        A ``ckpt-<step>`` directory, or a run directory (its ``latest`` checkpoint is used).
    expect_method : str, optional
        Refuse a checkpoint whose ``meta["method"]`` differs.

    Raises
    ------
    CheckpointError
        Naming the file and the reason: missing, truncated or corrupted (sha256 / parse),
        pickled, wrong format version, or another method.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run directory")
    if path.is_file():
        _refuse_file(path, f"{STATE_FILE} and {INFO_FILE} (or a run directory)")
    if not (path / INFO_FILE).exists() and not (path / STATE_FILE).exists():
        found = find_latest(path)
        if found is None:
            raise CheckpointError(f"{path}: no checkpoint here (no '{LATEST}' file, no ckpt-* "
                                  f"directories, no {INFO_FILE})")
        path = found
    return _read_dir(path, STATE_FILE, INFO_FILE, "muni-checkpoint", expect_method)


def load_state_into(model: nn.Module, tensors: dict[str, torch.Tensor], strict: bool = True) -> None:
    """Copy `tensors` into `model` in place, with a clear error on any mismatch.

    Raises
    ------
    CheckpointError
        Listing missing and unexpected keys (when `strict`) and every shape mismatch.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    shapes = [f"{k}: {tuple(tensors[k].shape)} in the file, {tuple(own[k].shape)} in the model"
              for k in sorted(set(own) & set(tensors)) if tensors[k].shape != own[k].shape]
    problems = []
    if strict and missing:
        problems.append(f"missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    if strict and unexpected:
        problems.append(f"unexpected keys {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
    if shapes:
        problems.append("shape mismatch " + "; ".join(shapes[:10]))
    if problems:
        raise CheckpointError(f"weights do not fit {type(model).__name__}: " + "; ".join(problems)
                              + " (was it trained with another model config?)")
    model.load_state_dict({k: v for k, v in tensors.items() if k in own}, strict=strict)


# ---------------------------------------------------------------------------- state codecs


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors ``{"<param idx>/<name>": T}`` and JSON.

    The JSON part holds the param groups (hyperparameters, param indices) and any non-tensor
    per-parameter state.
    """
    tensors, scalars = {}, {}
    for idx, entry in state["state"].items():
        for name, v in entry.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{idx}/{name}"] = v
            else:
                scalars.setdefault(str(idx), {})[name] = v
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()}
              for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `flatten_optimizer`: a dict for ``optimizer.load_state_dict``."""
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        idx, name = key.split("/", 1)
        state.setdefault(int(idx), {})[name] = v
    for idx, entry in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(entry)
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
              for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def _u8(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def capture_rng() -> dict[str, torch.Tensor]:
    """This process's RNG states (torch CPU, its current CUDA device, numpy, python) as uint8 tensors."""
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state()  # this rank's device
    _, keys, pos, has_gauss, cached = np.random.get_state()
    out["numpy"] = _u8(np.asarray(keys, "<u4").tobytes() + struct.pack("<qqd", pos, has_gauss, cached))
    version, internal, gauss_next = random.getstate()
    out["python"] = _u8(np.asarray(internal, "<u4").tobytes()
                        + struct.pack("<qqd", version, gauss_next is not None, gauss_next or 0.0))
    return out


def restore_rng(state: dict[str, torch.Tensor]) -> None:
    """Inverse of `capture_rng`."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    raw = state["numpy"].numpy().tobytes()
    pos, has_gauss, cached = struct.unpack("<qqd", raw[-24:])
    np.random.set_state(("MT19937", np.frombuffer(raw[:-24], "<u4"), pos, has_gauss, cached))
    raw = state["python"].numpy().tobytes()
    version, has_next, gauss_next = struct.unpack("<qqd", raw[-24:])
    internal = tuple(int(x) for x in np.frombuffer(raw[:-24], "<u4"))
    random.setstate((version, internal, gauss_next if has_next else None))


__all__ = ["Checkpoint", "FORMAT_VERSION", "save_checkpoint", "load_checkpoint", "find_latest",
           "checkpoint_steps", "clean_stale_temps", "write_json_atomic", "point_latest", "rewind",
           "load_state_into", "flatten_optimizer", "unflatten_optimizer", "capture_rng",
           "restore_rng"]
