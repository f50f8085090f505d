"""The catalog recipes' learning rates against their anchors' formulas, transcribed from the
anchors' files (not through our code or optax), at steps 0, the end of warm-up, half-way and the
last step:

  python -m benchmarks.recipe_anchors      # the markdown table of docs/recipes.md

- cifar10_resnet20: He et al. 2016, section 4.2: 0.1, divided by 10 at 32k and 48k of 64k
  iterations.
- imagenet_resnet50: google/flax `examples/imagenet/train.py:create_learning_rate_fn`: linear
  from 0 over `warmup_epochs * steps_per_epoch`, then `optax.cosine_decay_schedule` over
  `(num_epochs - warmup_epochs) * steps_per_epoch`, joined at the warm-up's end.
- imagenet_vit_s16: big_vision `utils.create_learning_rate_schedule(decay_type="cosine")`:
  base * 0.5 (1 + cos(pi * clip((t - w) / (T - w), 0, 1))) * min(1, t / w).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

RECIPES = ("cifar10_resnet20", "imagenet_resnet50", "imagenet_vit_s16")


def he2016(step: int, base: float = 0.1, boundaries: tuple[int, ...] = (32_000, 48_000)
           ) -> float:
  """The ResNet CIFAR-10 schedule: `base` divided by 10 at each boundary iteration."""
  return base * 0.1 ** sum(step >= b for b in boundaries)


def flax_imagenet(step: int, base: float, warmup_steps: int, decay_steps: int) -> float:
  """flax's `create_learning_rate_fn`: optax.linear_schedule(0, base, warmup_steps) before the
  boundary, optax.cosine_decay_schedule(base, decay_steps) (alpha 0) from it, at step - warmup."""
  if step < warmup_steps:
    return base * step / warmup_steps
  t = min(step - warmup_steps, decay_steps)
  return base * 0.5 * (1.0 + math.cos(math.pi * t / decay_steps))


def big_vision(step: int, base: float, warmup_steps: int, total_steps: int) -> float:
  """big_vision's `create_learning_rate_schedule` with decay_type="cosine"."""
  progress = float(np.clip((step - warmup_steps) / float(total_steps - warmup_steps), 0.0, 1.0))
  lr = base * 0.5 * (1.0 + math.cos(math.pi * progress))
  return lr * min(1.0, step / warmup_steps) if warmup_steps else lr


def anchor(name: str, config) -> tuple[Callable[[int], float], str]:
  """(learning rate at an update step, where the formula comes from) for recipe `name`, from
  the anchor's own settings (the values its file sets, not ours)."""
  if name == "cifar10_resnet20":
    return he2016, "He et al. 2016, sec. 4.2"
  if name == "imagenet_resnet50":
    steps_per_epoch = 1_281_167 // 1024  # train.py: num_examples // batch_size
    return (lambda s: flax_imagenet(s, 0.1 * 1024 / 256, 5 * steps_per_epoch,
                                    95 * steps_per_epoch),
            "flax examples/imagenet/train.py:create_learning_rate_fn")
  if name == "imagenet_vit_s16":
    total = int(90 * 1_268_355 / 1024)  # total_epochs * train[:99%] / batch_size
    return (lambda s: big_vision(s, 1e-3, 10_000, total),
            "big_vision utils.create_learning_rate_schedule")
  raise ValueError(f"no anchor for {name!r}; expected one of {list(RECIPES)}")


def probe_steps(config) -> dict[str, int]:
  """{label: update step}: 0, the end of warm-up and half-way (or each drop of a step
  schedule and the step before it), and the last."""
  total = config.train.steps // config.optim.grad_accum_steps
  o = config.optim
  marks = {"0": 0}
  if o.schedule == "step":  # each drop and the step before it (the first is half-way)
    for b in o.step_boundaries:
      drop = int(b * total)
      marks[f"before a drop ({drop - 1})"] = drop - 1
      marks[f"drop ({drop})"] = drop
  else:
    marks[f"end of warm-up ({o.warmup_steps})"] = o.warmup_steps
    marks[f"half-way ({total // 2})"] = total // 2
  marks[f"last ({total - 1})"] = total - 1
  return marks


def rows(name: str) -> list[tuple[str, float, float]]:
  """[(step label, ours, anchor's)] for recipe `name`."""
  from train import config as config_lib
  from train import optim

  config = config_lib.load(f"experiments.{name}")
  ours = optim.schedule(config.optim, config.train.steps // config.optim.grad_accum_steps)
  theirs, _ = anchor(name, config)
  return [(label, float(ours(step)), theirs(step))
          for label, step in probe_steps(config).items()]


def main(argv: list[str]) -> None:
  print("| recipe | update step | ours | anchor's formula | anchor |")
  print("|---|---|---|---|---|")
  from train import config as config_lib
  for name in RECIPES:
    _, source = anchor(name, config_lib.load(f"experiments.{name}"))
    for label, ours, theirs in rows(name):
      print(f"| {name} | {label} | {ours:.6g} | {theirs:.6g} | {source} |")


if __name__ == "__main__":
  from train import cli

  cli.run(main)
