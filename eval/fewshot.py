"""Few-shot linear probe on frozen features, big_vision's `evaluators/fewshot_lsr.py`: a
classifier's penultimate features (`intermediates/features`) of `shots` training examples per
class, standardised, fitted in closed form by L2-regularised least squares to +-1 one-hot
targets, then scored by accuracy on a held-out split.

    config.evals.probe = dict(type="fewshot", every=500, shots=(1, 10), l2_reg=1.0)

Fields: `every` (steps; 0 = at the end), `train_split` (default data.train_split), `split`
(default data.eval_split), `shots` (examples per class, a tuple: one accuracy each), `l2_reg`
(the ridge penalty; big_vision's default is 2^10 for ~1,000-d features), `seed` (which training
examples are the shots), `batch_size` (feature batches; default data.eval_batch_size).
Metrics: `accuracy_{k}shot` for each k in `shots`.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

import data as data_lib
from train import evaluators
from train.errors import ConfigError

FIELDS = ("type", "every", "train_split", "split", "shots", "l2_reg", "seed", "batch_size")


def ridge_accuracy(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                   l2_reg: float, num_classes: int) -> float:
  """Accuracy on (x_test, y_test) of the least-squares classifier fitted to (x (N, D), y (N,))
  as big_vision's `_fewshot_acc_fn`: features standardised with the training shots' mean and
  std (+1e-5), W = (X^T X + l2 I)^-1 X^T (2 onehot(y) - 1), prediction argmax(x W). In float64."""
  x, x_test = np.asarray(x, np.float64), np.asarray(x_test, np.float64)
  mean, std = x.mean(0, keepdims=True), x.std(0, keepdims=True) + 1e-5
  x, x_test = (x - mean) / std, (x_test - mean) / std
  targets = 2.0 * np.eye(num_classes)[np.asarray(y)] - 1.0
  w = np.linalg.solve(x.T @ x + l2_reg * np.eye(x.shape[1]), x.T @ targets)
  return float(np.mean(np.argmax(x_test @ w, axis=1) == np.asarray(y_test)))


def pick_shots(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
  """Indices of `shots` examples of each class (in a seeded random order), sorted."""
  order = np.random.default_rng(seed).permutation(len(labels))
  picked = [order[labels[order] == c][:shots] for c in np.unique(labels)]
  short = [int(c) for c, p in zip(np.unique(labels), picked) if len(p) < shots]
  if short:
    raise ConfigError(f"shots={shots}: classes {short} have fewer training examples")
  return np.sort(np.concatenate(picked))


class FewShot:
  """The evaluator (see the module docstring); `FewShot(name, section, run)(state)`."""

  def __init__(self, name: str, section: Any, run: Any):
    where = f"evals.{name}"
    s = evaluators.fields(name, section, FIELDS)
    config, model = run.config, run.model
    self.shots = tuple(int(k) for k in s.get("shots", (10,)))
    self.l2_reg = float(s.get("l2_reg", 1.0))
    seed = int(s.get("seed", 0))
    self.batch_size = int(s.get("batch_size", 0)) or int(config.data.eval_batch_size)
    if not self.shots or min(self.shots) < 1 or self.l2_reg <= 0:
      raise ConfigError(f"{where}: shots={self.shots}, l2_reg={self.l2_reg}; expected shot "
                        "counts >= 1 and l2_reg > 0")
    self.num_classes = int(getattr(model, "num_classes", 0) or 0)
    if config.paradigm != "supervised" or self.num_classes < 2 or config.data.seq_len:
      raise ConfigError(f"{where}.type='fewshot' probes a classifier's features; the run is a "
                        f"paradigm={config.paradigm!r} model with {self.num_classes} classes")
    train_split = s.get("train_split") or config.data.train_split
    split = s.get("split") or config.data.eval_split
    x, y, _ = data_lib.split_arrays(config.data, train_split, config.seed)
    self.train = {k: pick_shots(y, k, seed) for k in self.shots}
    keep = np.unique(np.concatenate(list(self.train.values())))
    self.x, self.y = x[keep], y[keep]
    self.train = {k: np.searchsorted(keep, idx) for k, idx in self.train.items()}
    self.x_test, self.y_test, _ = data_lib.split_arrays(config.data, split, config.seed)

    def features(variables, x):
      _, state = model.apply(variables, x, train=False, mutable=["intermediates"])
      f = state["intermediates"]["features"][0]
      return f.reshape(f.shape[0], -1)

    self._features = jax.jit(features)

  def features(self, state: Any, x: np.ndarray) -> np.ndarray:
    """The model's penultimate features (N, D) of inputs `x`, in batches."""
    variables = {"params": state.params, **(state.model_state or {})}
    return evaluators.in_batches(lambda b: self._features(variables, b), x, self.batch_size)

  def __call__(self, state: Any) -> dict[str, float]:
    f, f_test = self.features(state, self.x), self.features(state, self.x_test)
    return {f"accuracy_{k}shot": ridge_accuracy(f[idx], self.y[idx], f_test, self.y_test,
                                                self.l2_reg, self.num_classes)
            for k, idx in self.train.items()}
