"""The evaluation report of a trained classifier: `python -m eval --workdir DIR`.

Restores the newest checkpoint of a supervised classification run, predicts its evaluation split
(`data.eval_split`, or `--split`) and writes DIR/report/report.md with its figures and
DIR/report/metrics.json:

- metrics (`eval.metrics`): accuracy, top-k, precision / recall / F1 per class and averaged,
  ROC AUC and average precision, and the confusion matrix (figure);
- calibration (`eval.calibration`): ECE, MCE, NLL and Brier score before and after temperature
  scaling, with reliability diagrams. The split is cut in two halves at random (`--seed`); the
  temperature fitted on each half scales the other's logits, so every "after" number is measured
  on examples the temperature never saw (two-fold cross-fitting: no separate validation split is
  taken from the training data the model has memorised);
- attribution (`eval.attribution`): gradient, gradient x input, integrated gradients (to 1%
  completeness) and SmoothGrad for the first `report.examples` examples; attention maps too for
  a Transformer;
- speed on this machine: batch-1 latency (p50 / p99 over 200 calls) and the peak throughput over
  batch sizes, compiled beforehand;
- binary tasks: the decision threshold that reaches `report.threshold_target` of
  `report.threshold_metric` (recall or precision), chosen on one half and scored on the other,
  both ways, as the operating point.

`--set report.FIELD=VALUE` changes a `report` field for this report only.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from eval import (
  attention_maps,
  attribution,
  calibration,
  classification,
  metrics,
  restore,
)
from train import config as config_lib
from train import figures, files, remote_workdir, workdir_lock

LATENCY_CALLS = 200        # batch-1 calls timed for the latency percentiles
THROUGHPUT_SECONDS = 0.5   # at least this long per batch size for the throughput


def _folds(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  perm = np.random.default_rng(seed).permutation(n)
  return np.sort(perm[:n // 2]), np.sort(perm[n // 2:])


def cross_fitted_temperature(logits: np.ndarray, labels: np.ndarray, seed: int = 0
                             ) -> tuple[np.ndarray, list[float]]:
  """Out-of-fold calibrated probabilities (N, C): each half scaled by the temperature fitted on
  the other half; and the two temperatures."""
  a, b = _folds(len(labels), seed)
  probs = np.empty(logits.shape, np.float64)
  temps = []
  for fit, apply in ((a, b), (b, a)):
    t = calibration.fit_temperature(logits[fit], labels[fit])
    probs[apply] = calibration.softmax(logits[apply], t)
    temps.append(t)
  return probs, temps


def cross_fitted_threshold(is_positive: np.ndarray, scores: np.ndarray, metric: str,
                           target: float, seed: int = 0) -> dict[str, Any]:
  """The binary operating point at `metric` >= `target`: the threshold chosen on each half,
  the decisions it gives on the other half, pooled. Also the in-sample point (the threshold
  chosen on all examples), the optimistic reference."""
  a, b = _folds(len(is_positive), seed)
  decided = np.zeros(len(scores), bool)
  thresholds = []
  for fit, apply in ((a, b), (b, a)):
    t = metrics.choose_threshold(is_positive[fit], scores[fit], metric, target)
    decided[apply] = scores[apply] >= t
    thresholds.append(t)
  # operating_point on 0/1 decisions with threshold 1 is the pooled out-of-fold point
  point = metrics.operating_point(is_positive, decided.astype(np.float64), 1.0)
  point["threshold"] = None
  in_sample = metrics.operating_point(
      is_positive, scores, metrics.choose_threshold(is_positive, scores, metric, target))
  return {"metric": metric, "target": target, "fold_thresholds": thresholds,
          "cross_fitted": point, "in_sample": in_sample}


def speed(predict, x: np.ndarray, batch_sizes: tuple[int, ...] = (1, 8, 64, 512),
          calls: int | None = None) -> dict[str, Any]:
  """Batch-1 latency percentiles (ms, each call waited for) and throughput (examples/s) per
  batch size, from `predict(x_batch)` jitted; compiling happens before any timing."""
  calls = calls or LATENCY_CALLS

  def batch_of(n):
    return np.resize(x, (n,) + x.shape[1:]).astype(x.dtype)

  one = batch_of(1)
  for _ in range(10):
    jax.block_until_ready(predict(one))
  times = []
  for _ in range(calls):
    t0 = time.perf_counter()
    jax.block_until_ready(predict(one))
    times.append(time.perf_counter() - t0)
  ms = np.asarray(times) * 1e3
  throughput = {}
  for n in batch_sizes:
    xb = batch_of(n)
    jax.block_until_ready(predict(xb))          # compile
    done, t0 = 0, time.perf_counter()
    while done < 5 or time.perf_counter() - t0 < THROUGHPUT_SECONDS:
      jax.block_until_ready(predict(xb))
      done += 1
    throughput[n] = n * done / (time.perf_counter() - t0)
  best = max(throughput, key=throughput.get)
  return {"latency_ms": {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
                         "mean": float(ms.mean()), "calls": calls},
          "throughput": {str(k): float(v) for k, v in throughput.items()},
          "peak_throughput": float(throughput[best]), "peak_batch": int(best),
          "machine": {"backend": jax.default_backend(), "device": str(jax.devices()[0]),
                      "cpus": os.cpu_count(), "processor": platform.machine()}}


def plot_confusion(confusion: np.ndarray, path: str, title: str = "") -> str:
  """The confusion matrix, rows normalised to the true class's count, with the counts written
  in the cells."""
  plt = figures.pyplot()
  c = len(confusion)
  rows = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
  fig, ax = plt.subplots(figsize=(1.0 + 0.45 * c, 0.8 + 0.45 * c))
  ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
  for i in range(c):
    for j in range(c):
      if confusion[i, j]:
        ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                color="white" if rows[i, j] > 0.5 else "black")
  ax.set(xticks=range(c), yticks=range(c), xlabel="predicted", ylabel="true")
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def check_classifier(config: Any, workdir: str, use: str = "the report covers classifiers",
                     flag: str = "--workdir") -> None:
  """Raises ValueError unless `workdir`'s config is a classifier: paradigm "supervised" with the
  cross-entropy loss, not a next-token model. `use` says what needs one (the report, a
  generative reference, ...) and `flag` which command-line argument named the workdir."""
  if config.paradigm != "supervised" or config.supervised.loss != "cross_entropy":
    loss = (f" with supervised.loss={config.supervised.loss!r}"
            if config.paradigm == "supervised" else "")
    raise ValueError(f"{flag}={workdir} holds a paradigm={config.paradigm!r} "
                     f"{config.model.name} run{loss}; {use} (paradigm='supervised', "
                     "supervised.loss='cross_entropy')")
  if config.data.seq_len:
    raise ValueError(f"{flag}={workdir} is a next-token model (data.seq_len="
                     f"{config.data.seq_len}); {use}; see python -m eval.lm for language "
                     "models")


@workdir_lock.writes_into_workdir("report")
def report(workdir: str, split: str | None = None, out: str | None = None, seed: int = 0,
           overrides: dict[str, Any] | None = None) -> dict[str, Any]:
  """The module docstring's report; returns what metrics.json holds."""
  run = restore.restore(workdir, overrides)
  config, model, step = run.config, run.model, run.step
  check_classifier(config, workdir)
  r = config.report
  split = split or config.data.eval_split
  # the run's classification evaluator: the split and its logits, as training tracks them
  evaluator = classification.Classification("report", {"split": split, "bins": r.bins}, run)
  x, labels = evaluator.x, evaluator.y
  if len(labels) < 4:
    raise ValueError(f"split {split!r} has {len(labels)} examples; the report needs at least 4")
  logits = evaluator.logits(run.state)
  num_classes = logits.shape[-1]
  if labels.max() >= num_classes:
    raise ValueError(f"split {split!r} has label {labels.max()}; the model has {num_classes} "
                     "outputs")
  os.makedirs(out, exist_ok=True)
  name = os.path.basename(os.path.normpath(workdir))
  probs = calibration.softmax(logits)

  stats = metrics.from_predictions(probs, labels, ks=(1, 2, 5))
  result: dict[str, Any] = {
      "workdir": workdir, "checkpoint_step": step, "model": config.model.name,
      "parameters": int(sum(np.size(p) for p in jax.tree.leaves(run.state.params))),
      "data": {"source": config.data.source, "split": split, "examples": len(labels),
               "classes": num_classes},
      "report_config": r.to_dict(), "seed": seed,
      "metrics": metrics.summary(stats)}
  plot_confusion(stats.confusion, os.path.join(out, "confusion.png"),
                 f"{name} on {split} ({len(labels)} examples)")

  scaled, temps = cross_fitted_temperature(logits, labels, seed)
  result["calibration"] = {
      "temperatures": temps, "bins": r.bins,
      "before": calibration.summary(probs, labels, r.bins),
      "after": calibration.summary(scaled, labels, r.bins)}
  calibration.reliability_diagram({"before": probs, "after temperature scaling": scaled},
                                  labels, os.path.join(out, "reliability.png"), r.bins,
                                  f"{name} on {split}: reliability")

  if num_classes == 2:
    try:
      result["operating_point"] = cross_fitted_threshold(
          labels == 1, probs[:, 1], r.threshold_metric, r.threshold_target, seed)
    except ValueError as e:  # e.g. a precision no threshold reaches: the report says so
      result["operating_point"] = {"metric": r.threshold_metric, "target": r.threshold_target,
                                   "error": str(e)}

  if r.examples:
    f = jax.jit(attribution.classifier_logit(model, run.variables))
    xe = jnp.asarray(x[:r.examples], jnp.float32)
    target = jnp.asarray(logits[:r.examples].argmax(-1))   # explain the predicted class
    maps = attribution.attribute(f, xe, target, jax.random.key(seed))
    gap = attribution.completeness_gap(f, xe, target, maps["integrated_gradients"])
    result["attribution"] = {"examples": int(len(xe)), "explained": "predicted class",
                             "integrated_gradients_completeness_gap_max": float(gap.max())}
    attribution.plot(np.asarray(xe), {k: np.asarray(v) for k, v in maps.items()},
                     os.path.join(out, "attribution.png"),
                     titles=[f"label {labels[i]}, predicted {int(target[i])}"
                             for i in range(len(xe))],
                     title=f"{name}: attributions of the predicted class's logit")
    result["attention"] = _attention_figure(run, x, labels, out, name)

  result["speed"] = speed(run.predict_fn(), x)
  files.write_report(out, result, markdown(result), json_name="metrics.json")
  return result


def _attention_figure(run: restore.Restored, x, labels, out, name) -> str | None:
  """attention.png for a model that sows attention weights (a Transformer), else None."""
  model = run.model
  try:
    logits, maps = attention_maps.attention_maps(model, run.state.params, jnp.asarray(x[:1]),
                                            run.state.model_state)
  except ValueError:
    return None
  attention_maps.plot_classifier(os.path.join(out, "attention.png"), np.asarray(x[0]).reshape(-1),
                            [m[0] for m in maps], getattr(model, "patch_size", 1),
                            getattr(model, "pool", "") == "cls",
                            f"{name}: example 0, label {labels[0]}, predicted "
                            f"{int(jnp.argmax(logits[0]))}")
  return "attention.png"


def _row(cells: list[Any]) -> str:
  return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown(result: dict[str, Any]) -> str:
  """metrics.json as a readable Markdown report with its figures."""
  m, d = result["metrics"], result["data"]
  lines = [f"# Evaluation of {result['workdir']}", "",
           f"{result['model']} ({result['parameters']:,} parameters), checkpoint step "
           f"{result['checkpoint_step']}, on {d['source']} split `{d['split']}`: "
           f"{d['examples']} examples, {d['classes']} classes.", "", "## Metrics", "",
           "| metric | value |", "|---|---|"]
  fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
  for key in ("accuracy", "top_2_accuracy", "top_5_accuracy", "precision_macro", "recall_macro",
              "f1_macro", "f1_micro", "f1_weighted", "roc_auc", "pr_auc"):
    if key in m:
      lines.append(_row([key.replace("_", " "), fmt(m[key])]))
  pc = m["per_class"]
  lines += ["", "ROC AUC and PR AUC (average precision) are one-vs-rest macro averages for more "
            "than two classes.", "", "| class | precision | recall | F1 | support |",
            "|---|---|---|---|---|"]
  lines += [_row([c, f"{pc['precision'][c]:.3f}", f"{pc['recall'][c]:.3f}", f"{pc['f1'][c]:.3f}",
                  int(pc["support"][c])]) for c in range(d["classes"])]
  lines += ["", "![confusion matrix](confusion.png)", "", "## Calibration", ""]
  cal = result["calibration"]
  lines += [f"Temperature scaling, cross-fitted on two random halves of the split (temperatures "
            f"{cal['temperatures'][0]:.3f} and {cal['temperatures'][1]:.3f}); every 'after' number "
            f"is on examples the temperature was not fitted on. ECE with {cal['bins']} "
            "equal-width bins; ECE (mass) with equal-mass bins.", "",
            "| | ECE | ECE (mass) | MCE | NLL (nats) | Brier |", "|---|---|---|---|---|---|"]
  for when in ("before", "after"):
    s = cal[when]
    lines.append(_row([when, f"{s['ece']:.4f}", f"{s['ece_mass']:.4f}", f"{s['mce']:.4f}",
                       f"{s['nll']:.4f}", f"{s['brier']:.4f}"]))
  lines += ["", "![reliability diagrams](reliability.png)"]
  if "operating_point" in result:
    op = result["operating_point"]
    lines += ["", "## Decision threshold", ""]
  if "operating_point" in result and "error" in op:
    lines.append(f"Target: {op['metric']} >= {op['target']}: not reachable ({op['error']}).")
  elif "operating_point" in result:
    lines += [f"Target: {op['metric']} >= {op['target']}. Thresholds chosen on each half: "
              f"{op['fold_thresholds'][0]:.4f}, {op['fold_thresholds'][1]:.4f}.", "",
              "| | threshold | precision | recall | F1 | false-positive rate | TP | FP | FN | TN |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for label, p in (("cross-fitted (each half by the other's threshold)", op["cross_fitted"]),
                     ("in-sample (optimistic)", op["in_sample"])):
      lines.append(_row([label, "per half" if p["threshold"] is None else f"{p['threshold']:.4f}",
                         f"{p['precision']:.4f}", f"{p['recall']:.4f}", f"{p['f1']:.4f}",
                         f"{p['false_positive_rate']:.4f}", p["tp"], p["fp"], p["fn"], p["tn"]]))
  if "attribution" in result:
    a = result["attribution"]
    lines += ["", "## Attribution", "",
              f"The first {a['examples']} examples; each method explains the predicted class's "
              "logit, in the normalised inputs the model sees (red raises it, blue lowers it). "
              "Integrated gradients start from the all-zero input (the training mean) and sum to "
              f"f(x) - f(0) within {a['integrated_gradients_completeness_gap_max']:.2%}.", "",
              "![attributions](attribution.png)"]
    if result.get("attention"):
      lines += ["", "Attention of the first example, per layer (mean over heads):", "",
                f"![attention]({result['attention']})"]
  sp = result["speed"]
  lat, mach = sp["latency_ms"], sp["machine"]
  lines += ["", "## Speed", "",
            f"On {mach['backend']} ({mach['device']}, {mach['cpus']} CPUs), compiled beforehand: "
            f"batch-1 latency p50 {lat['p50']:.3f} ms, p99 {lat['p99']:.3f} ms ({lat['calls']} "
            f"calls); peak throughput {sp['peak_throughput']:,.0f} examples/s at batch "
            f"{sp['peak_batch']}.", "", "| batch | examples/s |", "|---|---|"]
  lines += [_row([b, f"{v:,.0f}"]) for b, v in sp["throughput"].items()]
  return "\n".join(lines)


FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
  with remote_workdir.local_workdir(FLAGS.workdir) as workdir:  # gs://: a local copy, uploaded
    _main(workdir, FLAGS.workdir)


def _main(workdir: str, shown: str) -> None:
  result = report(workdir, FLAGS.split, FLAGS.out, FLAGS.seed, config_lib.parse_sets(FLAGS.set))
  print(markdown(result))
  print(f"\nwritten to {FLAGS.out or shown.rstrip('/') + '/report'}")


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so modules import together)."""
  flags.DEFINE_string("workdir", None, "A trained supervised classifier's run.", required=True)
  flags.DEFINE_string("split", None, "The split to evaluate (default: the run's "
                      "data.eval_split).")
  flags.DEFINE_string("out", None, "Where report.md, metrics.json and the figures go (default "
                      "WORKDIR/report).")
  flags.DEFINE_integer("seed", 0, "Seed of the calibration halves and SmoothGrad's noise.")
  flags.DEFINE_multi_string("set", None, "report.FIELD=VALUE: change a report field, e.g. "
                            "report.threshold_target=0.9.")
