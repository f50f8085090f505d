"""Predictive uncertainty of classifiers: ensembles, MC dropout and out-of-distribution scores.

Pure NumPy, float64, on probabilities. `member_probs` is (M, N, C): M members' (an ensemble's
networks, or M stochastic passes of one network with dropout on) class probabilities for N
examples.

- `average`: the predictive distribution mean_m p_m (N, C) (Lakshminarayanan et al. 2017 average
  in probability, not in logits);
- `entropy`: H(p) = -sum_c p_c log p_c, nats, (N,);
- `mutual_information`: H(mean_m p_m) - mean_m H(p_m), nats (N,): the members' disagreement,
  the epistemic part of the predictive entropy (BALD; Houlsby et al. 2011, Gal et al. 2017);
- `ood_scores`: per example, higher = more likely out of distribution: `max_prob`
  (1 - max_c p_c, Hendrycks & Gimpel 2017), `entropy`, and with members `mutual_information`;
- `detection`: ROC AUC and AUPR of telling out-of-distribution examples (the positives) from
  in-distribution ones by a score;
- `predictive`: accuracy, NLL, Brier score and ECE of one set of probabilities.

`python -m eval.uncertainty` (`eval/uncertainty.py`) compares a single network, temperature
scaling, MC dropout and ensembles on these scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from eval import calibration, metrics


def _members(member_probs: Any) -> np.ndarray:
  p = np.asarray(member_probs, np.float64)
  if p.ndim != 3 or p.shape[0] < 1:
    raise ValueError(f"member probabilities of shape {p.shape}; expected (members, examples, "
                     "classes)")
  return p


def average(member_probs: Any) -> np.ndarray:
  """mean_m p_m: (M, N, C) -> (N, C)."""
  return _members(member_probs).mean(0)


def entropy(probs: Any) -> np.ndarray:
  """-sum_c p_c log p_c over the last axis, nats (0 log 0 = 0)."""
  p = np.asarray(probs, np.float64)
  return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), -1)


def mutual_information(member_probs: Any) -> np.ndarray:
  """H(mean_m p_m) - mean_m H(p_m), (N,) nats; 0 when every member agrees, at most log M."""
  p = _members(member_probs)
  return np.maximum(entropy(p.mean(0)) - entropy(p).mean(0), 0.0)


def ood_scores(probs: Any, member_probs: Any = None) -> dict[str, np.ndarray]:
  """Scores (N,) where higher means more likely out of distribution, from the predictive
  probabilities (N, C) and, for ensembles and MC dropout, the members' (M, N, C)."""
  p = np.asarray(probs, np.float64)
  scores = {"max_prob": 1.0 - p.max(-1), "entropy": entropy(p)}
  if member_probs is not None:
    scores["mutual_information"] = mutual_information(member_probs)
  return scores


def detection(in_scores: Any, out_scores: Any) -> dict[str, float]:
  """How well a score separates out-of-distribution examples (positives) from in-distribution
  ones: ROC AUC (0.5 = chance) and AUPR with out-of-distribution as the positive class (chance
  = their share)."""
  s_in, s_out = np.asarray(in_scores, np.float64), np.asarray(out_scores, np.float64)
  is_out = np.r_[np.zeros(len(s_in), bool), np.ones(len(s_out), bool)]
  scores = np.r_[s_in, s_out]
  return {"roc_auc": metrics.roc_auc_binary(is_out, scores),
          "aupr": metrics.average_precision_binary(is_out, scores),
          "chance_aupr": float(is_out.mean())}


def predictive(probs: Any, labels: Any, num_bins: int = 15) -> dict[str, float]:
  """Accuracy, NLL (nats), Brier score and ECE (equal-width bins) of probabilities (N, C)."""
  p = np.asarray(probs, np.float64)
  y = np.asarray(labels)
  return {"accuracy": float(np.mean(p.argmax(-1) == y)), "nll": calibration.nll(p, y),
          "brier": calibration.brier(p, y), "ece": calibration.ece(p, y, num_bins)}

