"""eval.uncertainty_scores against independent references (scipy, scikit-learn, loops)."""

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from eval import uncertainty_scores as uncertainty


def _member_probs(m=5, n=40, c=4, seed=0):
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(m, n, c)) * rng.uniform(0.2, 3, size=(1, n, 1))
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_entropy_and_mutual_information_against_scipy():
  p = _member_probs()
  np.testing.assert_allclose(uncertainty.entropy(p[0]), stats.entropy(p[0], axis=-1), rtol=1e-12)
  mi = uncertainty.mutual_information(p)
  for i in range(p.shape[1]):
    want = stats.entropy(p[:, i].mean(0)) - np.mean([stats.entropy(q) for q in p[:, i]])
    assert mi[i] == pytest.approx(want, abs=1e-12)
  assert np.all(mi <= np.log(p.shape[0]) + 1e-12)


def test_zero_probabilities_and_agreeing_members():
  one_hot = np.eye(3)[[0, 2, 1]]
  np.testing.assert_array_equal(uncertainty.entropy(one_hot), 0.0)
  agree = np.stack([_member_probs(1)[0]] * 4)
  np.testing.assert_allclose(uncertainty.mutual_information(agree), 0.0, atol=1e-12)
  # two confident members that disagree: log 2 nats of mutual information
  split = np.stack([np.eye(2)[[0]], np.eye(2)[[1]]])
  assert uncertainty.mutual_information(split)[0] == pytest.approx(np.log(2))


def test_detection_against_scikit_learn():
  rng = np.random.default_rng(1)
  s_in, s_out = rng.normal(0, 1, 300), rng.normal(1, 1, 100)
  s_in[:20] = s_out[:20] = 0.5  # ties across the two sets
  got = uncertainty.detection(s_in, s_out)
  y = np.r_[np.zeros(300), np.ones(100)]
  s = np.r_[s_in, s_out]
  assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
  assert got["aupr"] == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
  assert got["chance_aupr"] == pytest.approx(0.25)


def test_ood_scores_and_predictive_summary():
  p = _member_probs(n=200, c=5)
  mean = uncertainty.average(p)
  np.testing.assert_allclose(mean, p.mean(0))
  scores = uncertainty.ood_scores(mean, p)
  assert set(scores) == {"max_prob", "entropy", "mutual_information"}
  np.testing.assert_allclose(scores["max_prob"], 1 - mean.max(-1))
  assert set(uncertainty.ood_scores(mean)) == {"max_prob", "entropy"}
  labels = np.random.default_rng(2).integers(0, 5, 200)
  s = uncertainty.predictive(mean, labels)
  assert s["accuracy"] == pytest.approx(skm.accuracy_score(labels, mean.argmax(-1)))
  assert s["nll"] == pytest.approx(skm.log_loss(labels, mean, labels=range(5)))
  assert s["brier"] == pytest.approx(np.mean(np.sum((mean - np.eye(5)[labels]) ** 2, -1)))


def test_bad_member_shape_is_named():
  with pytest.raises(ValueError, match=r"expected \(members, examples, classes\)"):
    uncertainty.mutual_information(np.ones((4, 3)))
