"""Exponential moving average of a model's parameters, for sampling and evaluation."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn


class EMA:
    """Shadow copies of a model's floating-point parameters, averaged over training.

    After each optimizer step, ``update(model)`` sets
    ``shadow <- d * shadow + (1 - d) * param`` with ``d = min(decay, (1 + n) / (10 + n))``
    after ``n`` previous updates: the warm-up of the decay keeps early shadows from being
    dominated by the random initialisation. Buffers are not averaged (the model's own are used).

    Parameters
    ----------
    model : nn.Module
        The model whose parameters are tracked; the shadow starts as a copy of them.
    decay : float
        Target decay in [0, 1), e.g. 0.999.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().clone() for name, p in model.named_parameters()
            if p.is_floating_point()}

    def _params(self, model: nn.Module) -> list[torch.Tensor]:
        params = dict(model.named_parameters())
        return [params[name] for name in self.shadow]

    @torch.no_grad()
    def update(self, model: nn.Module, exact: Iterable[str] = ()) -> None:
        """Move the shadow towards the model's current parameters (call after each step).

        Parameters named in `exact` (e.g. a frozen stage of a two-stage model) are copied, not
        averaged, so the shadow never mixes weights from before and after freezing.
        """
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        self.num_updates += 1
        torch._foreach_lerp_(list(self.shadow.values()),
                             [p.detach() for p in self._params(model)], 1.0 - d)
        params = dict(model.named_parameters())
        for name in exact:
            self.shadow[name].copy_(params[name])

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily put the shadow weights into `model` (restored on exit, even on error)."""
        params = self._params(model)
        backup = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, s in zip(params, self.shadow.values()):
                p.copy_(s)
        try:
            yield model
        finally:
            with torch.no_grad():
                for p, b in zip(params, backup):
                    p.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``{"num_updates": int64 scalar, "shadow.<param name>": tensor}`` (safetensors-ready)."""
        out = {"num_updates": torch.tensor(self.num_updates, dtype=torch.int64)}
        out.update({f"shadow.{k}": v for k, v in self.shadow.items()})
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore from `state_dict` output; parameter names and shapes must match."""
        names = {k[len("shadow."):] for k in state if k.startswith("shadow.")}
        if names != set(self.shadow) or "num_updates" not in state:
            missing, extra = sorted(set(self.shadow) - names), sorted(names - set(self.shadow))
            raise ValueError(f"EMA state does not match the model: missing {missing}, "
                             f"unexpected {extra}")
        with torch.no_grad():
            for k, v in self.shadow.items():
                src = state[f"shadow.{k}"]
                if src.shape != v.shape:
                    raise ValueError(f"EMA shadow {k!r}: shape {tuple(src.shape)} in the state, "
                                     f"{tuple(v.shape)} in the model")
                v.copy_(src)
        self.num_updates = int(state["num_updates"])
