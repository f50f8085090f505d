"""What the PyTorch twins share (`benchmarks.torch_workloads`): the `Twin` tuple, batch
conversion, and the optimizers, schedules, updates and averages written as strata's paradigms
configure them."""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
from torch import nn


class Twin(NamedTuple):
  """A PyTorch workload: `step(batch)` trains one step and returns the loss tensor;
  `convert(batch)` turns a strata batch ({"inputs", "label", "mask"} arrays) into the tensors
  `step` takes."""
  model: nn.Module
  step: Callable[[dict[str, torch.Tensor]], torch.Tensor]
  convert: Callable[[dict[str, Any]], dict[str, torch.Tensor]]

  @property
  def parameters(self) -> int:
    return sum(p.numel() for p in self.model.parameters())


def _tensors(batch: dict[str, Any], channels_first: int = 0) -> dict[str, torch.Tensor]:
  """numpy copies of a batch as tensors; inputs (B, *spatial, C) -> (B, C, *spatial) when
  `channels_first` gives the number of spatial axes."""
  out = {k: torch.from_numpy(np.array(v)) for k, v in batch.items()}
  if "label" in out:
    out["label"] = out["label"].long()  # the index dtype cross_entropy takes
  if channels_first:
    x = out["inputs"]
    if x.ndim == 1 + channels_first:  # no channel axis
      x = x.unsqueeze(-1)
    out["inputs"] = x.movedim(-1, 1).contiguous()
  return out


def _require(model: Any, field: str, allowed: tuple) -> None:
  value = model.get(field, allowed[0])
  if value not in allowed:
    raise ValueError(f"model.{field}={value!r}: the PyTorch twin implements only {list(allowed)}")


def _lr_lambda(o: Any, steps: int) -> Callable[[int], float]:
  """strata's schedule (train.optim) as a multiplier of the base rate: linear warm-up, then
  constant or cosine down to end_lr_factor."""
  def f(step: int) -> float:
    if o.warmup_steps and step < o.warmup_steps:
      return step / o.warmup_steps
    if o.schedule in ("cosine", "warmup_cosine"):
      span = max(steps - o.warmup_steps, 1)
      frac = min(max(step - o.warmup_steps, 0) / span, 1.0)
      return o.end_lr_factor + (1 - o.end_lr_factor) * 0.5 * (1 + math.cos(math.pi * frac))
    return 1.0
  return f


def _optimizer(params: list[nn.Parameter], o: Any, steps: int, lr: float | None = None):
  """`config.optim` as a torch optimizer and scheduler: Adam, or AdamW decaying only the
  parameters of two or more dimensions (strata's decay mask)."""
  if o.name not in ("adam", "adamw"):
    raise ValueError(f"optim.name={o.name!r}: the PyTorch twins implement 'adam' and 'adamw'")
  kw = dict(lr=lr or o.learning_rate, betas=(o.b1, o.b2), eps=o.eps, foreach=True)
  if o.name == "adamw" and o.weight_decay > 0:
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": o.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, **kw)
  elif o.name == "adamw":
    opt = torch.optim.AdamW(params, weight_decay=0.0, **kw)
  else:
    opt = torch.optim.Adam(params, **kw)
  return opt, torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(o, steps))


def _update(loss: torch.Tensor, params: list[nn.Parameter], opt: Any, sched: Any,
            clip: float = 0.0) -> torch.Tensor:
  """Backward pass, optional global-norm clipping, optimizer and schedule step."""
  opt.zero_grad(set_to_none=True)
  loss.backward()
  if clip > 0:
    nn.utils.clip_grad_norm_(params, clip, foreach=True)
  opt.step()
  sched.step()
  return loss.detach()


def _supervised_step(model: nn.Module, config: Any, loss_fn: Callable) -> Callable:
  params = list(model.parameters())
  opt, sched = _optimizer(params, config.optim, config.train.steps)

  def step(batch):
    return _update(loss_fn(model(batch["inputs"]), batch), params, opt, sched,
                   config.optim.clip_norm)
  return step


def _ema(average: list[torch.Tensor], params: list[nn.Parameter], decay: float,
         step: int) -> None:
  """strata's `state.update_average`: weight min(decay, (1 + step) / (10 + step)) on the old."""
  w = min(decay, (1.0 + step) / (10.0 + step))
  with torch.no_grad():
    torch._foreach_lerp_(average, [p.detach() for p in params], 1.0 - w)
