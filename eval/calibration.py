"""Calibration: whether a classifier's probabilities match the frequencies of being right.

All functions take probabilities (N, C) (or logits, where named) and integer labels (N,), in
NumPy float64:

- `ece`: expected calibration error, sum_b |B_b| / N |acc(B_b) - conf(B_b)| over bins of the
  top-class confidence, either equal-width on [0, 1] (Guo et al. 2017; bins (lo, hi], the first
  one closed) or equal-mass (each bin holds N / bins examples, Nixon et al. 2019);
- `mce`: the largest |acc - conf| over the non-empty bins;
- `nll`: mean -log p(y | x), nats; `brier`: mean sum_c (p_c - 1[y = c])^2, sklearn's multi-class
  `brier_score_loss` (for two classes, twice its binary form, which scores class 1 only);
- `fit_temperature`: the T > 0 minimising the NLL of softmax(logits / T), by Newton's method on
  beta = 1 / T (the NLL is convex in beta: its second derivative is the variance of the logits
  under the model's own softmax);
- `reliability_diagram`: the per-bin accuracy against confidence, before and after scaling.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from train import figures

SCHEMES = ("width", "mass")


def softmax(logits: Any, temperature: float = 1.0) -> np.ndarray:
  """softmax(logits / T) over the last axis, float64."""
  z = np.asarray(logits, np.float64) / temperature
  z = z - z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def _check(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
  p = np.asarray(probs, np.float64)
  y = np.asarray(labels)
  if p.ndim != 2 or y.shape != p.shape[:1]:
    raise ValueError(f"probs has shape {p.shape} and labels {y.shape}; expected (N, C) and (N,)")
  if len(y) == 0:
    raise ValueError("no examples")
  y = y.astype(np.int64)
  if y.min() < 0 or y.max() >= p.shape[1]:
    bad = y[(y < 0) | (y >= p.shape[1])][0]
    raise ValueError(f"label {bad} out of range; expected classes in [0, {p.shape[1] - 1}]")
  return p, y


def bins(probs: Any, labels: Any, num_bins: int = 15, scheme: str = "width"
         ) -> dict[str, np.ndarray]:
  """Per-bin statistics of the top-class confidence: `count` (num_bins,), mean `confidence` and
  `accuracy` (0 in empty bins), and the bin `edges` (num_bins + 1,; for `mass`, the confidences
  at the bin boundaries)."""
  p, y = _check(probs, labels)
  if num_bins < 1:
    raise ValueError(f"num_bins={num_bins}; expected at least 1")
  if scheme not in SCHEMES:
    raise ValueError(f"scheme={scheme!r}; expected one of {SCHEMES}")
  conf = p.max(-1)
  correct = (p.argmax(-1) == y).astype(np.float64)
  if scheme == "width":
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    # bins (lo, hi]; a confidence of exactly 0 joins the first
    index = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, num_bins - 1)
  else:
    order = np.argsort(conf, kind="mergesort")
    index = np.empty(len(conf), np.int64)
    for b, part in enumerate(np.array_split(order, num_bins)):
      index[part] = b
    sorted_conf = conf[order]
    cuts = [part[-1] for part in np.array_split(np.arange(len(conf)), num_bins) if len(part)]
    edges = np.r_[sorted_conf[0], sorted_conf[cuts]]
  count = np.bincount(index, minlength=num_bins).astype(np.float64)
  with np.errstate(invalid="ignore", divide="ignore"):
    mean_conf = np.where(count > 0, np.bincount(index, conf, num_bins) / count, 0.0)
    accuracy = np.where(count > 0, np.bincount(index, correct, num_bins) / count, 0.0)
  return {"count": count, "confidence": mean_conf, "accuracy": accuracy, "edges": edges}


def ece(probs: Any, labels: Any, num_bins: int = 15, scheme: str = "width") -> float:
  """Expected calibration error (0 = calibrated, in probability units)."""
  b = bins(probs, labels, num_bins, scheme)
  return float(np.sum(b["count"] * np.abs(b["accuracy"] - b["confidence"])) / b["count"].sum())


def mce(probs: Any, labels: Any, num_bins: int = 15, scheme: str = "width") -> float:
  """Maximum calibration error over the non-empty bins."""
  b = bins(probs, labels, num_bins, scheme)
  gap = np.abs(b["accuracy"] - b["confidence"])[b["count"] > 0]
  return float(gap.max())


def nll(probs: Any, labels: Any) -> float:
  """Mean negative log-likelihood of the true class, nats (probabilities floored at 1e-300)."""
  p, y = _check(probs, labels)
  return float(-np.mean(np.log(np.maximum(p[np.arange(len(y)), y], 1e-300))))


def brier(probs: Any, labels: Any) -> float:
  """Mean over examples of sum_c (p_c - 1[y = c])^2, in [0, 2]."""
  p, y = _check(probs, labels)
  return float(np.mean(np.sum(np.square(p - np.eye(p.shape[1])[y]), -1)))


def summary(probs: Any, labels: Any, num_bins: int = 15) -> dict[str, float]:
  """ECE (both schemes), MCE, NLL and Brier score of one set of probabilities."""
  return {"ece": ece(probs, labels, num_bins), "ece_mass": ece(probs, labels, num_bins, "mass"),
          "mce": mce(probs, labels, num_bins), "nll": nll(probs, labels),
          "brier": brier(probs, labels)}


def fit_temperature(logits: Any, labels: Any, iterations: int = 100,
                    tolerance: float = 1e-10) -> float:
  """The temperature T minimising nll(softmax(logits / T), labels); fit on a validation split,
  then applied to the test split's logits. When every example is classified correctly the NLL
  falls all the way to T -> 0 (no finite minimum): the fit then stops after `iterations` Newton
  steps with a small T.

  Raises:
    ValueError: bad shapes or labels, or non-finite logits.
  """
  z, y = _check(logits, labels)
  if not np.all(np.isfinite(z)):
    raise ValueError("logits hold non-finite values")
  z_true = z[np.arange(len(y)), y]

  def loss_grad_curv(beta: float) -> tuple[float, float, float]:
    s = beta * z
    top = s.max(-1, keepdims=True)
    e = np.exp(s - top)
    norm = e.sum(-1, keepdims=True)
    p = e / norm
    mean_z = np.sum(p * z, -1)
    # NLL = mean(logsumexp(beta z) - beta z_true), from the same shifted exponentials as p
    loss = float(np.mean(np.log(norm[:, 0]) + top[:, 0] - beta * z_true))
    return (loss, float(np.mean(mean_z - z_true)),
            float(np.mean(np.sum(p * z * z, -1) - mean_z ** 2)))

  beta = 1.0
  loss, grad, curv = loss_grad_curv(beta)
  for _ in range(iterations):
    if abs(grad) < tolerance:
      break
    step = -grad / curv if curv > 1e-12 else -np.sign(grad)
    new = beta + step
    # keep beta > 0 and never accept a worse loss: halve the step until it is not
    while True:
      if new > 0:
        new_loss, new_grad, new_curv = loss_grad_curv(new)
        if new_loss <= loss + 1e-15:
          break
      step /= 2
      new = beta + step
      if abs(step) < 1e-15:
        return 1.0 / beta
    beta, loss, grad, curv = new, new_loss, new_grad, new_curv
  return 1.0 / beta


def reliability_diagram(panels: dict[str, np.ndarray], labels: Any, path: str,
                        num_bins: int = 15, title: str = "") -> str:
  """One reliability diagram per named set of probabilities (e.g. "before" / "after temperature
  scaling"), side by side: accuracy per confidence bin against the diagonal, the gap shaded, the
  ECE in the title and the share of examples per bin underneath. Writes a PNG to `path`."""
  plt = figures.pyplot()
  fig, axes = plt.subplots(2, len(panels), figsize=(4 * len(panels), 5.2), squeeze=False,
                           gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
  width = 1.0 / num_bins
  centers = (np.arange(num_bins) + 0.5) * width
  for col, (name, probs) in enumerate(panels.items()):
    b = bins(probs, labels, num_bins)
    top, bottom = axes[0, col], axes[1, col]
    present = b["count"] > 0
    top.bar(centers[present], b["accuracy"][present], width=width, color="tab:blue",
            edgecolor="black", linewidth=0.5, label="accuracy")
    gap = (b["confidence"] - b["accuracy"])[present]
    top.bar(centers[present], np.abs(gap), bottom=np.minimum(b["confidence"], b["accuracy"])[present],
            width=width, fill=False, hatch="///", edgecolor="tab:red", linewidth=0.5,
            label="gap to confidence")
    top.plot([0, 1], [0, 1], "k--", linewidth=1)
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy",
            title=f"{name}\nECE {ece(probs, labels, num_bins):.4f}")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centers, b["count"] / b["count"].sum(), width=width, color="gray",
               edgecolor="black", linewidth=0.5)
    bottom.set(xlim=(0, 1), xlabel="confidence (top-class probability)", ylabel="share")
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
