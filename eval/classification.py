"""Classification metrics of a split as an evaluator (`train/evaluators.py`): accuracy, NLL
(nats), Brier score and expected calibration error of the paradigm's predictions (softmax of its
logits).

    config.evals.calibration = dict(type="classification", split="test", bins=15)

Fields: `every` (steps; 0 = at the end), `split` (default data.eval_split), `bins` (ECE's
equal-width bins, default 15), `batch_size` (default data.eval_batch_size). Metrics: `accuracy`,
`nll`, `brier`, `ece` (`eval/uncertainty_scores.predictive`, as `python -m eval.uncertainty`
scores each model; `eval/calibration.py`, tested against per-bin loops).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

import data as data_lib
from eval import calibration, uncertainty_scores
from train import evaluators
from train.errors import ConfigError

FIELDS = ("type", "every", "split", "bins", "batch_size")


class Classification:
  """The evaluator (see the module docstring); `Classification(name, section, run)(state)`.
  `python -m eval` (eval/report.py) reads its split and logits from one."""

  def __init__(self, name: str, section: Any, run: Any):
    s = evaluators.fields(name, section, FIELDS)
    config = run.config
    self.bins = int(s.get("bins", 15))
    self.batch_size = int(s.get("batch_size", 0)) or int(config.data.eval_batch_size)
    num_classes = int(getattr(run.model, "num_classes", 0) or 0)
    if (config.paradigm != "supervised" or config.supervised.loss != "cross_entropy" or
        num_classes < 2 or config.data.seq_len or self.bins < 1):
      raise ConfigError(f"evals.{name}.type='classification' takes a classifier (supervised, "
                        f"cross-entropy, >= 2 classes) and bins >= 1; got paradigm="
                        f"{config.paradigm!r}, {num_classes} classes, bins={self.bins}")
    split = s.get("split") or config.data.eval_split
    self.x, self.y, _ = data_lib.split_arrays(config.data, split, config.seed)
    self._predict = jax.jit(run.paradigm.predict)

  def logits(self, state: Any) -> np.ndarray:
    """The paradigm's logits (N, C) of the split, float64."""
    return evaluators.in_batches(lambda b: self._predict(state, b), self.x, self.batch_size)

  def score(self, logits: np.ndarray) -> dict[str, float]:
    """The metrics of `logits` (N, C) of the split: `eval.uncertainty`'s per-model scores."""
    return uncertainty_scores.predictive(calibration.softmax(logits), self.y, self.bins)

  def __call__(self, state: Any) -> dict[str, float]:
    return self.score(self.logits(state))
