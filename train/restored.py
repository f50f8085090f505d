"""One restore path for every tool that reads a trained run (the evaluation tools through
`eval.restore`, training through `data.synthetic`'s generator): a trained workdir as its config,
model, paradigm and train state, with predictions through the paradigm's own `predict`.

    run = restored.restore("runs/mnist1d_cnn", overrides={"report.bins": "10"})
    logits = run.predict(x)                # (N, num_classes), in chunks of one jitted call
    x, labels, stats = run.split("test")   # the split as the run's evaluation pipeline serves it
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import ml_collections as mlc
import numpy as np

import data as data_lib
from train import checkpoint, paradigms
from train import config as config_lib
from train import state as state_lib


@dataclasses.dataclass
class Restored:
  """A trained run: `config` (with overrides applied), `model`, `paradigm` (made from them),
  `state` (the checkpoint's train state, without optimizer state) and its `step`."""

  workdir: str
  config: mlc.ConfigDict
  model: nn.Module
  paradigm: paradigms.Paradigm
  state: state_lib.TrainState
  step: int
  _predict: Any = dataclasses.field(default=None, repr=False)

  @property
  def variables(self) -> dict[str, Any]:
    """{"params": ..., **model_state}: what `model.apply` takes."""
    return {"params": self.state.params, **self.state.model_state}

  def predict(self, inputs: np.ndarray, batch_size: int | None = None,
              state: state_lib.TrainState | None = None) -> np.ndarray:
    """The paradigm's `predict` over `inputs` (N, ...) in chunks of `batch_size` (default
    `data.eval_batch_size`), one compiled function; `state` replaces the run's (e.g. compressed
    parameters)."""
    if self.paradigm.predict is None:
      raise ValueError(f"--workdir={self.workdir} holds a paradigm={self.config.paradigm!r} run, "
                       "which makes no predictions")
    if self._predict is None:
      self._predict = jax.jit(self.paradigm.predict)
    chunk = batch_size or int(self.config.data.eval_batch_size)
    state = self.state if state is None else state
    return np.concatenate([np.asarray(self._predict(state, inputs[i:i + chunk]))
                           for i in range(0, len(inputs), chunk)])

  def predict_fn(self):
    """One jitted function `inputs -> outputs`, the paradigm's `predict` with the run's state
    bound (what latency is measured on)."""
    state = self.state
    return jax.jit(lambda inputs: self.paradigm.predict(state, inputs))

  def split(self, split: str, keep_classes: tuple[int, ...] | None = None):
    """(inputs, labels, normalisation statistics) of `split` through the run's evaluation
    pipeline (`data.split_arrays`)."""
    return data_lib.split_arrays(self.config.data, split, self.config.seed, keep_classes)


def restore(workdir: str, overrides: dict[str, Any] | None = None, step: int | None = None,
            paradigm: str | None = None) -> Restored:
  """The run in `workdir` at its newest restorable checkpoint (or `step`), its config's
  `SECTION.FIELD` values replaced by `overrides` (`--set` items) and validated.

  Fields and sections its saved config lacks (a run from before they existed) get their
  defaults (`train.config.with_defaults`).

  Raises:
    CheckpointError: nothing to restore in `workdir`.
    FlagError: an override that names no field or has a value of the wrong type or range.
    ValueError: `paradigm` given and the run is of another paradigm.
  """
  model, tree, config_dict, step = checkpoint.load_workdir(workdir, step)
  config = config_lib.with_defaults(config_dict)
  module = paradigms.get(config.paradigm)
  if paradigm is not None and config.paradigm != paradigm:
    raise ValueError(f"--workdir={workdir} holds a paradigm={config.paradigm!r} run; expected "
                     f"paradigm={paradigm!r}")
  config_lib.override(config, overrides or {})
  state = state_lib.TrainState(step=tree.get("step", step), params=tree["params"], opt_state=None,
                               model_state=dict(tree.get("model_state") or {}),
                               ema_params=tree.get("ema_params"))
  made_config = config
  if config.get("distill", {}).get("teachers"):
    # a distilled student predicts alone: its teachers (and their workdirs) are for training
    made_config = config.copy_and_resolve_references()
    made_config.distill.teachers = ()
  made = module.make(model, made_config, total_steps=max(1, int(config.train.steps)))
  return Restored(workdir, config, model, made, state, step)
