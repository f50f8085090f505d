"""eval.metrics against scikit-learn on random inputs, and the streaming properties."""

import numpy as np
import pytest
from sklearn import metrics as skm

from eval import metrics as m


def random_task(rng, n, c, skew=0.0):
  """Labels with some class imbalance and softmax probabilities that mostly agree with them."""
  prior = np.exp(-skew * np.arange(c))
  labels = rng.choice(c, size=n, p=prior / prior.sum())
  logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[labels]
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  return probs.astype(np.float32), labels


@pytest.mark.parametrize("c,seed", [(2, 0), (3, 1), (10, 2), (10, 3)])
def test_every_metric_equals_sklearn(c, seed):
  rng = np.random.default_rng(seed)
  probs, labels = random_task(rng, 500, c, skew=0.3)
  if c == 10 and seed == 3:   # a class absent from the labels and another never predicted
    labels = np.where(labels == 9, 0, labels)
    probs[:, 4] = 0.0
  stats = m.from_predictions(probs, labels, ks=(1, 2, 5))
  pred = probs.argmax(-1)
  classes = np.arange(c)
  assert m.accuracy(stats) == pytest.approx(skm.accuracy_score(labels, pred), abs=1e-12)
  for k in stats.ks:
    scores = probs[:, 1] if c == 2 else probs   # sklearn takes class 1's score for binary
    want = skm.top_k_accuracy_score(labels, scores, k=k, labels=classes)
    assert m.top_k_accuracy(stats, k) == pytest.approx(want, abs=1e-12)
  np.testing.assert_array_equal(stats.confusion, skm.confusion_matrix(labels, pred,
                                                                      labels=classes))
  per_class = m.precision_recall_f1(stats)
  p, r, f, s = skm.precision_recall_fscore_support(labels, pred, labels=classes, zero_division=0)
  np.testing.assert_allclose(per_class["precision"], p, atol=1e-12)
  np.testing.assert_allclose(per_class["recall"], r, atol=1e-12)
  np.testing.assert_allclose(per_class["f1"], f, atol=1e-12)
  np.testing.assert_array_equal(per_class["support"], s)
  for average in ("macro", "micro", "weighted") + (("binary",) if c == 2 else ()):
    got = m.precision_recall_f1(stats, average)
    p, r, f, _ = skm.precision_recall_fscore_support(labels, pred, labels=classes,
                                                     average=average, zero_division=0)
    assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((p, r, f), abs=1e-12)
  present = np.unique(labels)
  if c == 2:
    want_roc = skm.roc_auc_score(labels, probs[:, 1])
    want_ap = skm.average_precision_score(labels, probs[:, 1])
    assert m.roc_auc(stats) == pytest.approx(want_roc, abs=1e-6)
    assert m.pr_auc(stats) == pytest.approx(want_ap, abs=1e-6)
  else:
    onehot = np.eye(c)[labels][:, present]
    for average in ("macro", "weighted"):
      want_roc = skm.roc_auc_score(onehot, probs[:, present], average=average)
      want_ap = skm.average_precision_score(onehot, probs[:, present], average=average)
      assert m.roc_auc(stats, average) == pytest.approx(want_roc, abs=1e-6)
      assert m.pr_auc(stats, average) == pytest.approx(want_ap, abs=1e-6)
    if len(present) == c:  # sklearn's own multi-class entry point agrees too
      assert m.roc_auc(stats) == pytest.approx(
          skm.roc_auc_score(labels, probs.astype(np.float64) / probs.sum(-1, keepdims=True),
                            multi_class="ovr"), abs=1e-6)


def test_curve_areas_with_ties_equal_sklearn():
  rng = np.random.default_rng(4)
  y = rng.random(400) < 0.3
  scores = np.round(rng.normal(size=400) + y, 1)           # rounding makes ties
  assert m.roc_auc_binary(y, scores) == pytest.approx(skm.roc_auc_score(y, scores), abs=1e-12)
  assert m.average_precision_binary(y, scores) == pytest.approx(
      skm.average_precision_score(y, scores), abs=1e-12)
  assert m.roc_auc_binary(y, np.where(y, 1.0, 0.0)) == 1.0
  assert m.average_precision_binary(y, np.ones(400)) == pytest.approx(y.mean())
  with pytest.raises(ValueError, match="needs positives and negatives; got 0 and 5"):
    m.roc_auc_binary(np.zeros(5, bool), np.arange(5))
  with pytest.raises(ValueError, match="at least one positive"):
    m.average_precision_binary(np.zeros(5, bool), np.arange(5))


def test_streamed_batches_and_merged_shards_equal_one_pass():
  rng = np.random.default_rng(5)
  probs, labels = random_task(rng, 300, 4)
  whole = m.from_predictions(probs, labels)
  # batches of 64 with the last one padded, as the evaluation pipeline sends them
  streamed = m.empty(4)
  for i in range(0, 300, 64):
    p, y = probs[i:i + 64], labels[i:i + 64]
    pad = 64 - len(y)
    streamed = m.update(streamed, np.pad(p, ((0, pad), (0, 0))), np.pad(y, (0, pad)),
                        mask=np.arange(64) < len(y))
  shards = m.merge(m.from_predictions(probs[:100], labels[:100]),
                   m.from_predictions(probs[100:], labels[100:]))
  for other in (streamed, shards):
    assert m.summary(other) == m.summary(whole)
  assert whole.count == 300 and m.all_processes(whole) is whole


def test_errors_name_the_field_and_value():
  stats = m.empty(3)
  with pytest.raises(ValueError, match=r"probs has shape \(4, 2\); expected \(batch, 3\)"):
    m.update(stats, np.zeros((4, 2)), np.zeros(4))
  with pytest.raises(ValueError, match=r"labels has shape \(5,\); expected \(4,\)"):
    m.update(stats, np.zeros((4, 3)), np.zeros(5))
  with pytest.raises(ValueError, match=r"label 3 out of range; expected classes in \[0, 2\]"):
    m.update(stats, np.zeros((2, 3)), np.array([0, 3]))
  with pytest.raises(ValueError, match="hold no examples"):
    m.accuracy(stats)
  full = m.from_predictions(np.eye(3), np.arange(3))
  with pytest.raises(ValueError, match=r"k=2; these statistics count top-k hits for k in \(1,\)"):
    m.top_k_accuracy(full, 2)   # ks=(1, 5) keeps only k <= 3 classes
  with pytest.raises(ValueError, match="average='binary' needs 2 classes"):
    m.precision_recall_f1(full, "binary")
  with pytest.raises(ValueError, match="average='mean'"):
    m.precision_recall_f1(full, "mean")
  with pytest.raises(ValueError, match="cannot merge statistics of 2 classes"):
    m.merge(full, m.empty(2))
  with pytest.raises(ValueError, match="num_classes=1; expected at least 2"):
    m.empty(1)


@pytest.mark.parametrize("metric,target", [("recall", 0.9), ("recall", 1.0), ("precision", 0.8)])
def test_threshold_choice_against_sklearns_curve(metric, target):
  rng = np.random.default_rng(6)
  y = rng.random(500) < 0.3
  scores = np.round(rng.normal(size=500) + 1.2 * y, 2)
  t = m.choose_threshold(y, scores, metric, target)
  precision, recall, thresholds = skm.precision_recall_curve(y, scores)
  value = (recall if metric == "recall" else precision)[:-1]   # the last point has no threshold
  valid = thresholds[value >= target]
  assert t == (valid.max() if metric == "recall" else valid.min())
  point = m.operating_point(y, scores, t)
  pred = scores >= t
  assert point["precision"] == pytest.approx(skm.precision_score(y, pred), abs=1e-12)
  assert point["recall"] == pytest.approx(skm.recall_score(y, pred), abs=1e-12)
  assert point["f1"] == pytest.approx(skm.f1_score(y, pred), abs=1e-12)
  assert point[metric] >= target
  tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
  assert (point["tp"], point["fp"], point["fn"], point["tn"]) == (tp, fp, fn, tn)
  assert point["false_positive_rate"] == pytest.approx(fp / (fp + tn))


def test_threshold_errors():
  y, s = np.array([0, 1, 1, 0], bool), np.array([0.9, 0.2, 0.3, 0.8])
  with pytest.raises(ValueError, match=r"no threshold reaches precision >= 0.9 \(best 0.5000\)"):
    m.choose_threshold(y, s, "precision", 0.9)
  with pytest.raises(ValueError, match="metric='f1'; expected one of"):
    m.choose_threshold(y, s, "f1", 0.9)
  with pytest.raises(ValueError, match="target=1.5; expected a recall in"):
    m.choose_threshold(y, s, "recall", 1.5)


SCRIPT = """
import json, sys
import jax
import numpy as np
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
from eval import metrics as m
rng = np.random.default_rng(7)
probs = rng.dirichlet(np.ones(4), size=50).astype(np.float32)
labels = rng.integers(0, 4, 50)
mine = slice(0, 20) if jax.process_index() == 0 else slice(20, 50)   # unequal shares
print(json.dumps(m.summary(m.all_processes(m.from_predictions(probs[mine], labels[mine])))))
"""


def test_statistics_merge_across_two_processes_over_gloo():
  import json
  import socket
  import subprocess
  import sys

  from tests.conftest import ROOT

  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, f"localhost:{port}", str(i)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = []
  for p in procs:
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-2000:]
    outs.append(json.loads(out.strip().splitlines()[-1]))
  rng = np.random.default_rng(7)
  probs = rng.dirichlet(np.ones(4), size=50).astype(np.float32)
  labels = rng.integers(0, 4, 50)
  whole = json.loads(json.dumps(m.summary(m.from_predictions(probs, labels))))
  assert outs[0] == outs[1] == whole
