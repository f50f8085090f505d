"""One evaluator interface for training and after (big_vision's `evaluators/`, kauldron's
`evals`): an evaluator is built from its own config section and called with a train state, live
or restored; it returns metrics.

    config.evals.probe = dict(type="fewshot", every=500, shots=(10,))
    config.evals.fid = dict(type="frechet", every=1000, reference="runs/digits_cnn")

During training each runs every `every` steps (0: at the end), its metrics written to
metrics.jsonl and TensorBoard under its name; `python -m eval.evaluate --workdir W` restores the
run and calls the same evaluators on its checkpoint. An evaluation's settings are not training
settings: changing them never blocks a resume (`evals.*` is a resumable change).

Types (`type`, default "paradigm"):
- "paradigm": the paradigm's own `eval_step` summed over a split (`split`, `source`,
  `batch_size`): what `data.eval_split` gets: accuracy and loss (NLL) of a classifier, bits per
  token of a language model, the loss and ELBO of an autoencoder or VAE, the denoising loss of
  diffusion. Built into the run (`train.run.build`), which streams it; outside training,
  `train.paradigm_eval.ParadigmEval` runs the same pipeline and reduction.
- the rest are resolved by name from `TYPES` ("module:factory"), as big_vision's trainer finds
  `big_vision.evaluators.<type>`: the implementations live in eval/, which may use what train/
  offers; train/ names them, and imports them only when a config asks for one. `register` adds
  a type of your own.

A factory is `factory(name, section, run) -> Evaluator`: `section` is the config section (a
ConfigDict; it reads every field it uses and refuses unknown ones with a `ConfigError` naming
`evals.NAME.FIELD`), `run` anything with `.config`, `.model` and `.paradigm` (a `train.run.Run`
or a `train.restored.Restored`). Building checks what can be checked before the first step (the
split exists, a reference run restores). The evaluator is `evaluator(state) -> {metric: float}`.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Protocol

import ml_collections as mlc
import numpy as np

from train.errors import ConfigError


class Evaluator(Protocol):
  def __call__(self, state: Any) -> dict[str, float]: ...


Factory = Callable[[str, mlc.ConfigDict, Any], Evaluator]

# type -> "module:attribute" of its factory, imported when a config names the type.
TYPES: dict[str, str | Factory] = {
    "classification": "eval.classification:Classification",  # accuracy, NLL, Brier, ECE
    "fewshot": "eval.fewshot:FewShot",        # a linear probe of frozen features, k shots a class
    "frechet": "eval.frechet:Frechet",        # Frechet distance of samples (and class accuracy)
    "forecast": "eval.forecast:Forecast",     # rolling-origin MASE and sMAPE
}
BUILT_IN = "paradigm"
# ... and of the built-in type outside the loop (by name: that module imports the loop, which
# imports this one)
BUILT_IN_FACTORY = "train.paradigm_eval:ParadigmEval"
PARADIGM_FIELDS = ("type", "split", "every", "batch_size", "source")


def register(type_name: str, factory: Factory) -> None:
  """Adds an evaluator type; a name already taken by another factory is an error."""
  if type_name == BUILT_IN or TYPES.get(type_name, factory) is not factory:
    raise ValueError(f"evaluator type {type_name!r} is already registered")
  TYPES[type_name] = factory


def type_of(section: Any) -> str:
  return section.get("type", BUILT_IN) or BUILT_IN


def check_type(type_name: str, where: str) -> None:
  """Raises ConfigError for a type neither built in nor in `TYPES`, naming the known ones."""
  if type_name != BUILT_IN and type_name not in TYPES:
    raise ConfigError(f"{where}.type={type_name!r}; expected one of "
                      f"{[BUILT_IN, *sorted(TYPES)]}")


def factory(type_name: str, where: str) -> Factory:
  """The factory of `type_name`, imported if named by module.

  Raises:
    ConfigError: an unknown type, naming the known ones.
  """
  check_type(type_name, where)
  target = BUILT_IN_FACTORY if type_name == BUILT_IN else TYPES[type_name]
  if isinstance(target, str):
    module, _, attr = target.partition(":")
    target = getattr(importlib.import_module(module), attr)
  return target


def build(name: str, section: mlc.ConfigDict, run: Any) -> Evaluator:
  """The evaluator `evals.NAME` (a "paradigm" one is `train.paradigm_eval.ParadigmEval`; the
  loop streams those itself, stoppable between batches)."""
  return factory(type_of(section), f"evals.{name}")(name, section, run)


def every(name: str, section: Any) -> int:
  """The period of `evals.NAME` in steps (0: at the end of the run).

  Raises:
    ConfigError: not an integer >= 0, naming the field.
  """
  value = section.get("every", 0)
  if not isinstance(value, int) or isinstance(value, bool) or value < 0:
    raise ConfigError(f"evals.{name}.every={value!r}; expected an integer >= 0")
  return value


def fields(name: str, section: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
  """`evals.NAME` as a dict (every field read), its fields checked against `allowed`.

  Raises:
    ConfigError: a field outside `allowed`, naming it.
  """
  unknown = sorted(set(section.keys()) - set(allowed))
  if unknown:
    raise ConfigError(f"evals.{name} (type {type_of(section)!r}) has field(s) {unknown}; "
                      f"expected some of {list(allowed)}")
  return section.to_dict() if hasattr(section, "to_dict") else dict(section)


def in_batches(fn: Callable[[np.ndarray], Any], x: np.ndarray, batch_size: int) -> np.ndarray:
  """`fn` over `x` (N, ...) in chunks of `batch_size` (the last one shorter), concatenated as
  float64."""
  return np.concatenate([np.asarray(fn(x[i:i + batch_size]), np.float64)
                         for i in range(0, len(x), batch_size)])
