"""A data audit of an experiment's source: class balance, duplicates and leakage, label issues.

  python -m eval.audit --config experiments/digits_cnn.py [--workdir W] [--folds 5]
                       [--near 0.1] [--out DIR] [--config.data.label_noise.rate=0.05 ...]

- **Balance**: examples per class in the training and evaluation splits (as the run sees them:
  `data.keep_classes` and `data.label_noise` applied) and the ratio of the largest class to the
  smallest.
- **Exact duplicates**: examples whose stored input bytes are identical (blake2b), within each
  split and across them, named example by example, with their labels (identical inputs with
  different labels are label conflicts).
- **Near duplicates**: pairs closer than `--near` times the median nearest-neighbour distance of
  the training split, in the model's input space (normalised inputs, flattened) or, given
  `--workdir`, in that trained classifier's features. Training-evaluation pairs are leakage.
- **Label issues**: out-of-sample predicted probabilities from K-fold cross-validation, the
  experiment's own model trained on K - 1 folds of the training split and predicting the
  held-out one (contiguous folds; each a fresh run of the experiment), then
  `cleanlab.filter.find_label_issues` (confident learning, Northcutt et al. 2021), ranked by
  self-confidence. With `data.label_noise` set, the flagged examples are scored against the
  known flips (precision and recall).
- **Slices**: for each feature of the source that can slice examples (class labels and scalar
  integers beside the input and the label), the accuracy and NLL per value of the classifier
  given as `--workdir` on the evaluation split.
Writes DIR/report.json, report.md, balance.png and flagged.png (the most suspicious examples
drawn, given and predicted labels), default DIR runs/audit/<experiment>.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

import data as data_lib
from data import sources
from train import figures, files


def balance(labels: dict[str, np.ndarray], num_classes: int) -> dict[str, Any]:
  """Per split: counts per class, shares, and largest / smallest count (inf with an empty
  class)."""
  out = {}
  for split, y in labels.items():
    counts = np.bincount(y, minlength=num_classes)
    out[split] = {"counts": counts.tolist(), "share": (counts / max(len(y), 1)).tolist(),
                  "imbalance": float(counts.max() / counts.min()) if counts.min() else
                  float("inf")}
  return out


def exact_duplicates(inputs: dict[str, np.ndarray], labels: dict[str, np.ndarray]
                     ) -> list[list[dict[str, Any]]]:
  """Groups of two or more examples with identical stored bytes, each member
  {"split", "index", "label"}, across every split given."""
  seen: dict[bytes, list[dict[str, Any]]] = {}
  for split, x in inputs.items():
    flat = np.ascontiguousarray(x).reshape(len(x), -1)
    for i, row in enumerate(flat):
      key = hashlib.blake2b(row.tobytes(), digest_size=16).digest()
      seen.setdefault(key, []).append({"split": split, "index": i,
                                       "label": int(labels[split][i])})
  return [g for g in seen.values() if len(g) > 1]


def near_duplicates(features: dict[str, np.ndarray], train: str, ratio: float
                    ) -> tuple[list[dict[str, Any]], float]:
  """Pairs closer than `ratio` x the median nearest-neighbour distance within the `train`
  split (excluding identical pairs, which `exact_duplicates` lists): within `train` (i < j) and
  from every other split to `train`. Returns (pairs, the threshold)."""
  from sklearn.neighbors import NearestNeighbors

  ref = np.asarray(features[train], np.float64)
  nn = NearestNeighbors(n_neighbors=2).fit(ref)
  d, j = nn.kneighbors(ref)
  threshold = ratio * float(np.median(d[:, 1]))
  pairs = []
  for i in range(len(ref)):
    if 0 < d[i, 1] < threshold and i < j[i, 1]:
      pairs.append({"a": [train, i], "b": [train, int(j[i, 1])], "distance": float(d[i, 1])})
  for split, f in features.items():
    if split == train:
      continue
    d, j = nn.kneighbors(np.asarray(f, np.float64), n_neighbors=1)
    for i in np.flatnonzero((d[:, 0] > 0) & (d[:, 0] < threshold)):
      pairs.append({"a": [split, int(i)], "b": [train, int(j[i, 0])],
                    "distance": float(d[i, 0])})
  return pairs, threshold


def fold_splits(train_split: str, folds: int) -> list[tuple[str, str]]:
  """(training part, held-out part) TFDS split strings of `folds` contiguous folds."""
  edges = [round(100 * k / folds) for k in range(folds + 1)]
  out = []
  for a, b in zip(edges[:-1], edges[1:]):
    rest = "+".join(s for s in ([f"{train_split}[:{a}%]"] if a > 0 else []) +
                    ([f"{train_split}[{b}%:]"] if b < 100 else []))
    out.append((rest, f"{train_split}[{a}%:{b}%]"))
  return out


def out_of_sample_probs(config: Any, folds: int, workdir: str) -> np.ndarray:
  """(N, C) predicted probabilities of the training split, each example's from the model that
  did not train on it (module docstring). Fold runs go to WORKDIR/fold_K and are reused when
  finished."""
  from eval import calibration, restore
  from train import loop

  parts = []
  for k, (rest, held) in enumerate(fold_splits(config.data.train_split, folds)):
    run_dir = os.path.join(workdir, f"fold_{k}")
    c = config.copy_and_resolve_references()
    with c.unlocked():
      c.data.train_split, c.data.eval_split = rest, held
    if not os.path.exists(os.path.join(run_dir, files.SUMMARY)):
      loop.train_and_evaluate(c, run_dir)
    run = restore.restore(run_dir)
    x, _, _ = run.split(held)
    parts.append(calibration.softmax(run.predict(x)))
  return np.concatenate(parts)


def label_issues(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
  """Indices of suspected label errors, most suspicious first (cleanlab)."""
  from cleanlab.filter import find_label_issues

  # n_jobs=1: cleanlab would otherwise fork worker processes from this multithreaded (JAX) one
  return np.asarray(find_label_issues(labels, probs, return_indices_ranked_by="self_confidence",
                                      n_jobs=1))


def against_known(flagged: np.ndarray, flipped: np.ndarray) -> dict[str, float]:
  """Precision and recall of `flagged` indices against the boolean mask of known flips."""
  hit = int(flipped[flagged].sum()) if len(flagged) else 0
  return {"flagged": int(len(flagged)), "flipped": int(flipped.sum()), "true_positives": hit,
          "precision": hit / len(flagged) if len(flagged) else float("nan"),
          "recall": hit / int(flipped.sum()) if flipped.any() else float("nan")}


def slice_fields(data_config: Any) -> list[str]:
  """The source's features that can slice examples: class labels and scalar integers or
  booleans other than the input and the label."""
  builder = sources._builder(data_config)
  input_key, label_key = sources._keys(data_config, builder)
  out = []
  for key, feature in builder.info.features.items():
    if key in (input_key, label_key):
      continue
    if type(feature).__name__ == "ClassLabel" or (
        tuple(getattr(feature, "shape", (None,))) == () and
        np.dtype(getattr(feature, "np_dtype", np.float32)).kind in "iub"):
      out.append(key)
  return sorted(out)


def slice_metrics(data_config: Any, split: str, field: str, probs: np.ndarray,
                  labels: np.ndarray) -> dict[str, dict[str, float]]:
  """Per value of `field` on `split`: examples, accuracy and NLL (nats) of `probs` (N, C), the
  model's probabilities for the split as the run serves it (`data.keep_classes` applied)."""
  from eval import calibration

  source = sources.open_split(data_config, split, raw_inputs=True)
  values = np.asarray([source[i][field] for i in range(len(source))])
  keep = tuple(data_config.keep_classes)
  if keep:
    values = values[np.isin(sources.load_split(data_config, split).labels, keep)]
  if len(values) != len(labels):
    raise ValueError(f"slice field {field!r}: {len(values)} values for {len(labels)} examples")
  out = {}
  for v in np.unique(values):
    rows = values == v
    out[str(v.item() if hasattr(v, "item") else v)] = {
        "examples": int(rows.sum()),
        "accuracy": float(np.mean(probs[rows].argmax(-1) == labels[rows])),
        "nll": calibration.nll(probs[rows], labels[rows])}
  return out


def audit(config: Any, out: str, folds: int = 5, near: float = 0.1,
          workdir: str | None = None) -> dict[str, Any]:
  """The module docstring's report for `config` (an experiment's full config)."""
  d = config.data
  info = sources.source_info(d)
  splits = [d.train_split, d.eval_split]
  served = {s: data_lib.split_arrays(d, s, config.seed) for s in splits}
  labels = {s: served[s][1] for s in splits}
  result: dict[str, Any] = {"source": d.source, "splits": splits,
                            "examples": {s: int(len(labels[s])) for s in splits}}
  result["balance"] = balance(labels, info.num_classes)
  stored = {s: sources.load_split(d, s) for s in splits}
  result["exact_duplicates"] = exact_duplicates({s: stored[s].inputs for s in splits},
                                                {s: stored[s].labels for s in splits})
  if workdir:
    from eval.sample_quality import Reference

    ref = Reference(workdir)
    feats = {s: ref(stored[s].inputs.astype(np.float32))[0] for s in splits}
    space = f"features of {workdir}"
  else:
    feats = {s: served[s][0].reshape(len(served[s][0]), -1) for s in splits}
    space = "normalised inputs"
  result["slice_fields"] = slice_fields(d)
  if workdir and result["slice_fields"]:
    from eval import calibration, restore

    run = restore.restore(workdir)
    x, y, _ = run.split(d.eval_split)
    probs = calibration.softmax(run.predict(x))
    result["slices"] = {f: slice_metrics(d, d.eval_split, f, probs, y)
                        for f in result["slice_fields"]}
  pairs, threshold = near_duplicates(feats, d.train_split, near)
  result["near_duplicates"] = {"space": space, "ratio": near, "threshold": threshold,
                               "pairs": pairs}
  if folds:
    probs = out_of_sample_probs(config, folds, os.path.join(out, "cv"))
    y = labels[d.train_split]
    flagged = label_issues(y, probs)
    result["label_issues"] = {
        "folds": folds, "out_of_sample_accuracy": float(np.mean(probs.argmax(-1) == y)),
        "indices": flagged.tolist(),
        "given_labels": y[flagged].tolist(), "predicted": probs[flagged].argmax(-1).tolist(),
        "self_confidence": probs[flagged, y[flagged]].tolist()}
    if d.label_noise.rate:
      flipped = stored[d.train_split].labels != y
      result["label_issues"]["against_known_noise"] = against_known(flagged, flipped)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "flagged.json"), "w") as f:
      json.dump({"indices": sorted(flagged.tolist())}, f)
  _figure(result, info.num_classes, os.path.join(out, "balance.png"))
  if result.get("label_issues", {}).get("indices"):
    _flagged_figure(result["label_issues"], stored[d.train_split].inputs,
                    os.path.join(out, "flagged.png"))
  files.write_report(out, result, markdown(result))
  return result


def _figure(result: dict[str, Any], num_classes: int, path: str) -> None:
  plt = figures.pyplot()
  fig, ax = plt.subplots(figsize=(6, 3.2))
  width = 0.8 / len(result["balance"])
  for k, (split, b) in enumerate(result["balance"].items()):
    ax.bar(np.arange(num_classes) + k * width, b["share"], width, label=split)
  ax.set(xlabel="class", ylabel="share of the split", title=f"{result['source']}: class balance")
  ax.legend()
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _flagged_figure(issues: dict[str, Any], inputs: np.ndarray, path: str, most: int = 16) -> None:
  """The most suspicious examples with their given and predicted labels: images for inputs of
  rank 2 or 3 (H, W[, C]), curves for rank 1."""
  x = inputs[np.asarray(issues["indices"][:most])]
  if x.ndim - 1 not in (1, 2, 3):
    return
  plt = figures.pyplot()
  cols = min(len(x), 8)
  rows = -(-len(x) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.7 * rows), squeeze=False)
  for ax in axes.flat:
    ax.axis("off")
  for k, (ax, example) in enumerate(zip(axes.flat, x)):
    if example.ndim == 1:
      ax.plot(example, linewidth=0.8)
    else:
      ax.imshow(example.squeeze(), cmap="gray_r" if example.squeeze().ndim == 2 else None)
    ax.set_title(f"#{issues['indices'][k]}: {issues['given_labels'][k]} -> "
                 f"{issues['predicted'][k]}", fontsize=7)
  fig.suptitle("suspected label errors: given -> predicted", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def markdown(result: dict[str, Any]) -> str:
  sizes = ", ".join(f"{s}: {n}" for s, n in result["examples"].items())
  lines = [f"Audit of `{result['source']}` ({sizes} examples).", "",
           "| split | examples per class | largest / smallest |", "|---|---|---|"]
  for split, b in result["balance"].items():
    lines.append(f"| {split} | {', '.join(map(str, b['counts']))} | {b['imbalance']:.2f} |")
  groups = result["exact_duplicates"]
  across = [g for g in groups if len({m["split"] for m in g}) > 1]
  conflicts = [g for g in groups if len({m["label"] for m in g}) > 1]
  lines += ["", f"**Exact duplicates**: {len(groups)} groups ({len(across)} across splits, "
            f"{len(conflicts)} with conflicting labels)."]
  for g in groups[:20]:
    lines.append("- " + ", ".join(f"{m['split']}#{m['index']} (label {m['label']})" for m in g))
  near = result["near_duplicates"]
  leak = [p for p in near["pairs"] if p["a"][0] != p["b"][0]]
  lines += ["", f"**Near duplicates** in {near['space']} (distance < {near['ratio']} x the median "
            f"nearest-neighbour distance = {near['threshold']:.4g}): {len(near['pairs'])} pairs, "
            f"{len(leak)} between the evaluation and training splits."]
  for p in near["pairs"][:20]:
    lines.append(f"- {p['a'][0]}#{p['a'][1]} ~ {p['b'][0]}#{p['b'][1]} ({p['distance']:.4g})")
  if not result.get("slice_fields"):
    lines += ["", "**Slices**: the source has no field to slice by (only its input and label)."]
  elif "slices" not in result:
    lines += ["", f"**Slices**: fields {', '.join(result['slice_fields'])}; give --workdir (a "
              "trained classifier) for per-slice metrics."]
  for field, table in result.get("slices", {}).items():
    lines += ["", f"**Slice `{field}`** (the evaluation split, the model in --workdir)", "",
              "| value | examples | accuracy | NLL |", "|---|---|---|---|"]
    lines += [f"| {v} | {m['examples']} | {m['accuracy']:.4f} | {m['nll']:.4f} |"
              for v, m in table.items()]
  if "label_issues" in result:
    li = result["label_issues"]
    lines += ["", f"**Label issues** ({li['folds']}-fold out-of-sample probabilities, accuracy "
              f"{li['out_of_sample_accuracy']:.4f}; cleanlab): {len(li['indices'])} flagged."]
    if "against_known_noise" in li:
      k = li["against_known_noise"]
      lines.append(f"Against the {k['flipped']} known flips: precision {k['precision']:.3f}, "
                   f"recall {k['recall']:.3f} ({k['true_positives']} of {k['flagged']} flagged).")
    for i, g, p, s in list(zip(li["indices"], li["given_labels"], li["predicted"],
                               li["self_confidence"]))[:20]:
      lines.append(f"- train#{i}: labelled {g}, predicted {p} (p(label) = {s:.3f})")
  return "\n".join(lines)


def main(argv: list[str], overrides: dict[str, str]) -> None:
  from absl import flags

  from train import config as config_lib

  f = flags.FLAGS
  config = config_lib.from_command_line(f.config, overrides)
  out = f.out or os.path.join("runs", "audit", config_lib.experiment_name(f.config))
  result = audit(config, out, f.folds, f.near, f.workdir)
  print(markdown(result))
  print(f"\nwritten to {out}/report.json, report.md, balance.png")


def define_flags() -> None:
  from absl import flags

  flags.DEFINE_string("config", None, "Experiment file or module (its data section is audited; "
                      "its model is the one cross-validated).", required=True)
  flags.DEFINE_string("workdir", None, "A trained classifier whose features measure near "
                      "duplicates (default: the normalised inputs).")
  flags.DEFINE_integer("folds", 5, "Cross-validation folds for label issues (0: skip them).",
                       lower_bound=0)
  flags.DEFINE_float("near", 0.1, "Near duplicates: this fraction of the median "
                     "nearest-neighbour distance.", lower_bound=0.0)
  flags.DEFINE_string("out", None, "Where the report goes (default runs/audit/EXPERIMENT).")


if __name__ == "__main__":
  import sys

  from train import cli

  define_flags()
  args, config_items = cli.config_overrides(sys.argv)
  cli.run(lambda argv: main(argv, config_items), argv=args)
