"""Classification metrics from streamed sufficient statistics, in NumPy.

A `Statistics` holds what every metric here needs, accumulated batch by batch (`update`) and
merged across batches, shards or hosts (`merge`, `all_processes`):

- `confusion` (C, C) counts, rows the true class and columns the arg-max prediction, which give
  accuracy, per-class precision / recall / F1 and their macro, micro and weighted averages;
- `top_k_hits`, the count of examples whose true class is among the k highest scores, per k;
- `scores` (N, C) and `labels` (N,), the per-example probabilities kept for the curve metrics
  (ROC AUC, average precision): an area under a curve is a function of the ranks of every score,
  so its exact sufficient statistic is the scores themselves (4 C bytes an example); merging
  concatenates them.

Conventions follow scikit-learn, with every one of the C classes included (sklearn's
`labels=range(C)`): a ratio whose denominator is 0 is 0 (`zero_division=0`); ROC AUC counts ties
as one half; "PR AUC" is average precision, sum_n (R_n - R_{n-1}) P_n over the distinct
thresholds (not the trapezoid, which is optimistic). Multi-class areas are one-vs-rest, averaged
over the classes that have both positives and negatives.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

AVERAGES = ("macro", "micro", "weighted")


class Statistics(NamedTuple):
  """Sufficient statistics of a C-class classifier's predictions (see the module docstring)."""

  confusion: np.ndarray      # (C, C) int64
  ks: tuple[int, ...]        # the k of each top_k_hits entry
  top_k_hits: np.ndarray     # (len(ks),) int64
  scores: np.ndarray         # (N, C) float32 probabilities
  labels: np.ndarray         # (N,) int64

  @property
  def num_classes(self) -> int:
    return int(self.confusion.shape[0])

  @property
  def count(self) -> int:
    return int(self.confusion.sum())


def empty(num_classes: int, ks: Sequence[int] = (1, 5)) -> Statistics:
  """No examples yet; `ks` (each in 1..num_classes; larger ones are dropped) are the top-k
  accuracies to count."""
  if num_classes < 2:
    raise ValueError(f"num_classes={num_classes}; expected at least 2")
  ks = tuple(sorted({int(k) for k in ks if 1 <= int(k) <= num_classes}))
  return Statistics(np.zeros((num_classes, num_classes), np.int64), ks,
                    np.zeros(len(ks), np.int64), np.zeros((0, num_classes), np.float32),
                    np.zeros(0, np.int64))


def update(stats: Statistics, probs: Any, labels: Any, mask: Any = None) -> Statistics:
  """`stats` plus a batch: `probs` (B, C) class probabilities (or any scores whose arg-max is the
  prediction; the curve metrics use them as given), `labels` (B,) ints in [0, C), `mask` (B,)
  true for real examples (padding rows are skipped).

  Raises:
    ValueError: a shape that does not match, or a label out of range.
  """
  probs = np.asarray(probs, np.float32)
  labels = np.asarray(labels)
  c = stats.num_classes
  if probs.ndim != 2 or probs.shape[1] != c:
    raise ValueError(f"probs has shape {probs.shape}; expected (batch, {c})")
  if labels.shape != probs.shape[:1]:
    raise ValueError(f"labels has shape {labels.shape}; expected ({probs.shape[0]},) to match "
                     "probs")
  if mask is not None:
    mask = np.asarray(mask, bool).reshape(-1)
    if mask.shape != labels.shape:
      raise ValueError(f"mask has shape {mask.shape}; expected {labels.shape}")
    probs, labels = probs[mask], labels[mask]
  labels = labels.astype(np.int64)
  if len(labels) and (labels.min() < 0 or labels.max() >= c):
    bad = labels[(labels < 0) | (labels >= c)][0]
    raise ValueError(f"label {bad} out of range; expected classes in [0, {c - 1}]")
  predicted = probs.argmax(-1)
  confusion = stats.confusion + np.bincount(labels * c + predicted, minlength=c * c).reshape(c, c)
  # rank of the true class: how many classes score strictly higher
  rank = (probs > np.take_along_axis(probs, labels[:, None], axis=1)).sum(-1)
  hits = stats.top_k_hits + np.array([(rank < k).sum() for k in stats.ks], np.int64)
  return Statistics(confusion, stats.ks, hits, np.concatenate([stats.scores, probs]),
                    np.concatenate([stats.labels, labels]))


def from_predictions(probs: Any, labels: Any, ks: Sequence[int] = (1, 5)) -> Statistics:
  """The statistics of one batch (N, C) / (N,)."""
  return update(empty(np.shape(probs)[-1], ks), probs, labels)


def merge(*parts: Statistics) -> Statistics:
  """The statistics of the union of the parts' examples (same classes and ks)."""
  first = parts[0]
  for p in parts[1:]:
    if p.num_classes != first.num_classes or p.ks != first.ks:
      raise ValueError(f"cannot merge statistics of {p.num_classes} classes and ks {p.ks} into "
                       f"{first.num_classes} classes and ks {first.ks}")
  return Statistics(sum(p.confusion for p in parts), first.ks, sum(p.top_k_hits for p in parts),
                    np.concatenate([p.scores for p in parts]),
                    np.concatenate([p.labels for p in parts]))


def all_processes(stats: Statistics) -> Statistics:
  """The merge of every JAX process's statistics, on every process (one process: unchanged).
  The per-example arrays are padded to the longest host's length for the all-gather."""
  import jax

  if jax.process_count() == 1:
    return stats
  from jax.experimental import multihost_utils

  n = multihost_utils.process_allgather(np.array([len(stats.labels)]))
  longest = int(n.max())
  pad = longest - len(stats.labels)
  gathered = multihost_utils.process_allgather(
      {"confusion": stats.confusion, "hits": stats.top_k_hits,
       "scores": np.pad(stats.scores, ((0, pad), (0, 0))),
       "labels": np.pad(stats.labels, (0, pad))})
  return merge(*[
      Statistics(np.asarray(gathered["confusion"][i]), stats.ks,
                 np.asarray(gathered["hits"][i]),
                 np.asarray(gathered["scores"][i][:int(n[i, 0])]),
                 np.asarray(gathered["labels"][i][:int(n[i, 0])]))
      for i in range(len(n))])


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
  num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
  return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _need_examples(stats: Statistics) -> None:
  if stats.count == 0:
    raise ValueError("the statistics hold no examples")


def accuracy(stats: Statistics) -> float:
  """The fraction of examples whose arg-max is the true class."""
  _need_examples(stats)
  return float(np.trace(stats.confusion) / stats.count)


def top_k_accuracy(stats: Statistics, k: int) -> float:
  """The fraction of examples whose true class is among the k highest scores (ties to the true
  class's favour)."""
  _need_examples(stats)
  if k not in stats.ks:
    raise ValueError(f"k={k}; these statistics count top-k hits for k in {stats.ks}")
  return float(stats.top_k_hits[stats.ks.index(k)] / stats.count)


def precision_recall_f1(stats: Statistics, average: str | None = None
                        ) -> dict[str, np.ndarray | float]:
  """Precision, recall and F1 per class ((C,) arrays, `average=None`), or averaged: `macro` (the
  unweighted mean over classes), `micro` (from the summed counts; equals accuracy for single-label
  data), `weighted` (by each class's true count), or `binary` (class 1 of a two-class task).
  Also returns `support`, the true count per class."""
  _need_examples(stats)
  cm = stats.confusion
  tp = np.diag(cm).astype(np.float64)
  predicted, support = cm.sum(0), cm.sum(1)
  fp, fn = predicted - tp, support - tp
  if average == "micro":
    tp, fp, fn = tp.sum(), fp.sum(), fn.sum()
  precision, recall, f1 = _ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(2 * tp, 2 * tp + fp + fn)
  out: dict[str, Any] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
  if average in (None, "micro"):
    return {k: (float(v) if np.ndim(v) == 0 else v) for k, v in out.items()}
  if average == "binary":
    if stats.num_classes != 2:
      raise ValueError(f"average='binary' needs 2 classes; these statistics have "
                       f"{stats.num_classes}")
    return {k: float(v[1]) for k, v in out.items()}
  if average not in AVERAGES:
    raise ValueError(f"average={average!r}; expected None, 'binary' or one of {AVERAGES}")
  weights = support / support.sum() if average == "weighted" else np.full(len(tp), 1 / len(tp))
  return {"precision": float(precision @ weights), "recall": float(recall @ weights),
          "f1": float(f1 @ weights), "support": support}


def roc_auc_binary(is_positive: Any, scores: Any) -> float:
  """Area under the ROC curve: the probability that a random positive scores above a random
  negative, ties counting one half (the Mann-Whitney U statistic over n_pos n_neg).

  Raises:
    ValueError: `is_positive` holds one class only.
  """
  from scipy.stats import rankdata

  y = np.asarray(is_positive, bool)
  n_pos, n_neg = int(y.sum()), int((~y).sum())
  if n_pos == 0 or n_neg == 0:
    raise ValueError(f"roc_auc needs positives and negatives; got {n_pos} and {n_neg}")
  ranks = rankdata(np.asarray(scores, np.float64))  # average ranks for ties
  return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def precision_recall_curve(is_positive: Any, scores: Any, purpose: str = "a precision-recall "
                           "curve") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(thresholds, precision, recall), one entry per distinct score from the highest down, of
  predicting positive when score >= threshold.

  Raises:
    ValueError: no positives (`purpose` names what needed them).
  """
  y = np.asarray(is_positive, bool)
  s = np.asarray(scores, np.float64)
  if not y.any():
    raise ValueError(f"{purpose} needs at least one positive")
  order = np.argsort(-s, kind="mergesort")
  y, s = y[order], s[order]
  last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the end of each run of equal scores
  tps = np.cumsum(y)[last]
  return s[last], tps / (last + 1), tps / tps[-1]


def average_precision_binary(is_positive: Any, scores: Any) -> float:
  """Average precision, sum_n (R_n - R_{n-1}) P_n over the distinct score thresholds from the
  highest down (sklearn's `average_precision_score`).

  Raises:
    ValueError: no positives.
  """
  _, precision, recall = precision_recall_curve(is_positive, scores, "average precision")
  return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _curve_area(stats: Statistics, area, average: str) -> float:
  _need_examples(stats)
  if stats.num_classes == 2:
    return area(stats.labels == 1, stats.scores[:, 1])
  if average not in ("macro", "weighted"):
    raise ValueError(f"average={average!r}; one-vs-rest areas take 'macro' or 'weighted'")
  values, weights = [], []
  for c in range(stats.num_classes):
    positive = stats.labels == c
    if 0 < positive.sum() < len(positive):
      values.append(area(positive, stats.scores[:, c]))
      weights.append(positive.sum())
  if not values:
    raise ValueError("no class has both positives and negatives")
  w = np.asarray(weights, np.float64) if average == "weighted" else np.ones(len(values))
  return float(np.average(values, weights=w))


def roc_auc(stats: Statistics, average: str = "macro") -> float:
  """ROC AUC: of class 1's score for two classes, else one-vs-rest, `macro` or `weighted` (by
  prevalence) over the classes present."""
  return _curve_area(stats, roc_auc_binary, average)


def pr_auc(stats: Statistics, average: str = "macro") -> float:
  """Average precision (the area under the precision-recall curve as a step function): of class
  1 for two classes, else one-vs-rest, `macro` or `weighted` over the classes present."""
  return _curve_area(stats, average_precision_binary, average)


def summary(stats: Statistics) -> dict[str, Any]:
  """Every metric of the module as plain Python numbers and lists (JSON-ready)."""
  per_class = precision_recall_f1(stats)
  out: dict[str, Any] = {"examples": stats.count, "accuracy": accuracy(stats)}
  for k in stats.ks:
    if k > 1:
      out[f"top_{k}_accuracy"] = top_k_accuracy(stats, k)
  for average in AVERAGES:
    for name, value in precision_recall_f1(stats, average).items():
      if name != "support":
        out[f"{name}_{average}"] = value
  for name, fn in (("roc_auc", roc_auc), ("pr_auc", pr_auc)):
    try:
      out[name] = fn(stats)
    except ValueError:
      out[name] = None  # e.g. an evaluation set with one class only
  out["per_class"] = {name: np.asarray(v).tolist() for name, v in per_class.items()}
  out["confusion"] = stats.confusion.tolist()
  return out


THRESHOLD_METRICS = ("recall", "precision")


def choose_threshold(is_positive: Any, scores: Any, metric: str, target: float) -> float:
  """The decision threshold (predict positive when score >= threshold) of a binary task that
  reaches `metric` >= `target` on these examples: for `recall`, the highest such threshold (the
  most precise way to reach the recall); for `precision`, the lowest (the most recall at that
  precision).

  Raises:
    ValueError: an unknown metric, a target outside (0, 1], no positives, or no threshold that
      reaches the target.
  """
  if metric not in THRESHOLD_METRICS:
    raise ValueError(f"metric={metric!r}; expected one of {THRESHOLD_METRICS}")
  if not 0.0 < target <= 1.0:
    raise ValueError(f"target={target}; expected a {metric} in (0, 1]")
  thresholds, precision, recall = precision_recall_curve(is_positive, scores,
                                                        "choosing a threshold")
  value = recall if metric == "recall" else precision
  ok = np.flatnonzero(value >= target - 1e-12)
  if not len(ok):
    raise ValueError(f"no threshold reaches {metric} >= {target} (best {value.max():.4f})")
  return float(thresholds[ok[0] if metric == "recall" else ok[-1]])


def operating_point(is_positive: Any, scores: Any, threshold: float) -> dict[str, float]:
  """Precision, recall, F1, false-positive rate and the counts of predicting positive when
  score >= threshold."""
  y = np.asarray(is_positive, bool)
  hit = np.asarray(scores, np.float64) >= threshold
  tp, fp = int(np.sum(hit & y)), int(np.sum(hit & ~y))
  fn, tn = int(np.sum(~hit & y)), int(np.sum(~hit & ~y))
  return {"threshold": float(threshold), "precision": float(_ratio(tp, tp + fp)),
          "recall": float(_ratio(tp, tp + fn)), "f1": float(_ratio(2 * tp, 2 * tp + fp + fn)),
          "false_positive_rate": float(_ratio(fp, fp + tn)), "tp": tp, "fp": fp, "fn": fn,
          "tn": tn}
