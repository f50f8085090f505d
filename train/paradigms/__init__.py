"""Paradigms: one step factory each. `get(name).make(model, config, total_steps=N)` returns a
`Paradigm` of pure functions that the loop jit-compiles; the loop never looks inside a state or
a batch.

A paradigm is a module with:
- `defaults() -> {section: ConfigDict}`: the config sections it owns, with their defaults
  (`train.config.base(paradigm)` adds them);
- `validate(config)`: checks of those sections' values (ConfigError naming field and value);
- `PRECISIONS`: the `train.precision` values it implements;
- `check_data(config, model)`: rejects a model without the methods the paradigm calls (its
  docstring lists them) or data it cannot train on, before any compute;
- `make(model, config, *, total_steps) -> Paradigm`;
- optionally `CONSOLE_METRICS`: the metric names the console line shows (default: all).

`REGISTRY` maps names to those modules; a new paradigm is one module and one line here (or
`register(name, module)` from outside the package).
"""

from __future__ import annotations

from types import ModuleType

from train.errors import ConfigError
from train.paradigms import adversarial, diffusion, reconstruction, supervised
from train.paradigms.common import (
  Paradigm,
  check_examples,
  fixed_inputs,
  reduce_eval,
  require,
)

REGISTRY: dict[str, ModuleType] = {
    "supervised": supervised,
    "reconstruction": reconstruction,
    "adversarial": adversarial,
    "diffusion": diffusion,
}

__all__ = ["REGISTRY", "Paradigm", "check_examples", "fixed_inputs", "get", "reduce_eval",
           "register", "require"]


def get(name: str) -> ModuleType:
  """The paradigm module called `name`; an unknown name lists the valid ones."""
  if name not in REGISTRY:
    raise ConfigError(f"paradigm={name!r}; expected one of {sorted(REGISTRY)}")
  return REGISTRY[name]


def register(name: str, module: ModuleType) -> None:
  """Adds a paradigm module (see the module docstring for what it defines) under `name`."""
  for attr in ("defaults", "validate", "PRECISIONS", "check_data", "make"):
    if not hasattr(module, attr):
      raise TypeError(f"paradigm {name!r}: module {module.__name__} defines no {attr!r}")
  REGISTRY[name] = module
