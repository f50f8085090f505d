"""eval.drift: the MMD statistic against a direct float64 sum, the tests' false-positive rates
over repeated same-distribution draws, and detection of the drifted MNIST-1D."""

import os

import numpy as np
import pytest
import scipy.stats

from eval import drift


# the 95% quantile of Binomial(n, 0.05): more rejections than this would say the false-positive
# rate is above 5% (at 5% risk of a false alarm of this test itself)
def max_false_alarms(n):
  return int(scipy.stats.binom.ppf(0.95, n, 0.05))


def test_mmd_equals_a_direct_sum():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(7, 3)), rng.normal(size=(5, 3)) + 0.5
  out = drift.mmd_test(x, y, permutations=10, bandwidth=1.3)
  k = lambda a, b: np.exp(-np.sum((a - b) ** 2) / (2 * 1.3 ** 2))  # noqa: E731
  kxx = np.mean([k(a, b) for a in x for b in x])
  kyy = np.mean([k(a, b) for a in y for b in y])
  kxy = np.mean([k(a, b) for a in x for b in y])
  assert out["mmd2"] == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-10)
  uxx = np.sum([k(a, b) for i, a in enumerate(x) for j, b in enumerate(x) if i != j]) / 42
  uyy = np.sum([k(a, b) for i, a in enumerate(y) for j, b in enumerate(y) if i != j]) / 20
  assert out["mmd2_unbiased"] == pytest.approx(uxx + uyy - 2 * kxy, rel=1e-10)
  assert len(out["null"]) == 10 and 1 / 11 <= out["p_value"] <= 1.0
  # the median heuristic: the median pooled pairwise distance
  z = np.concatenate([x, y])
  d = [np.linalg.norm(a - b) for i, a in enumerate(z) for b in z[i + 1:]]
  assert drift.mmd_test(x, y, 5)["bandwidth"] == pytest.approx(np.median(d), rel=1e-6)


def test_false_positive_rates_at_most_alpha_on_same_distribution_draws():
  rng = np.random.default_rng(1)
  reps = 300
  mmd_p, ks_p, class_p = [], [], []
  for r in range(reps):
    x, y = rng.standard_t(5, size=(60, 4)), rng.standard_t(5, size=(60, 4))
    mmd_p.append(drift.mmd_test(x, y, permutations=100, seed=r)["p_value"])
    ks_p.append(drift.ks_tests(x, y)["p_value"])
    class_p.append(drift.class_test(rng.integers(0, 5, 80), rng.integers(0, 5, 80), 5)["p_value"])
  for name, p in (("mmd", mmd_p), ("ks", ks_p), ("classes", class_p)):
    alarms = int(np.sum(np.asarray(p) < 0.05))
    assert alarms <= max_false_alarms(reps), (name, alarms)
  # the permutation p-values are (near) uniform under no drift
  assert scipy.stats.kstest(mmd_p, "uniform").pvalue > 0.01


def test_power_against_a_mean_shift():
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(100, 5)), rng.normal(size=(100, 5)) + 0.5
  assert drift.mmd_test(x, y, 200)["p_value"] < 0.01
  assert drift.ks_tests(x, y)["p_value"] < 0.01
  assert drift.class_test(np.zeros(50, int), np.ones(50, int), 3)["p_value"] < 1e-6


@pytest.fixture(scope="module")
def classifier(trained):
  from eval.sample_quality import Reference

  return Reference(trained("mnist1d_cnn", steps=400))


def test_monitor_keeps_its_false_positive_rate_on_mnist1d_draws(classifier, data_dir):
  import ml_collections as mlc

  from data import sources

  c = mlc.ConfigDict(classifier.config.to_dict())
  c.data.data_dir = data_dir
  pool = sources.load_split(c.data, "train").inputs               # 4,000 examples
  rng = np.random.default_rng(3)
  reps, alarms = 60, 0
  for r in range(reps):
    idx = rng.permutation(len(pool))
    result = drift.monitor(pool[idx[:150]], pool[idx[150:300]], classifier, permutations=100,
                           seed=r)
    alarms += result["verdict"]["drift"]
  assert alarms <= max_false_alarms(reps), alarms


@pytest.mark.slow
def test_cli_flags_the_drifted_mnist1d_and_not_a_redraw(classifier, tmp_path):
  import subprocess
  import sys

  from tests.conftest import ROOT

  workdir = classifier.workdir
  drifted = drift.run(workdir, "test", "mnist1d_drift", permutations=200,
                      out=str(tmp_path / "d"))
  assert drifted["verdict"]["drift"] and "features" in drifted["verdict"]["flagged"]
  assert drifted["accuracy"]["current"] < drifted["accuracy"]["reference"]
  assert os.path.getsize(tmp_path / "d" / "drift.png") > 10000
  assert os.path.getsize(tmp_path / "d" / "report.json") > 0
  same = drift.run(workdir, "test", "mnist1d_redraw", permutations=200, out=str(tmp_path / "s"))
  assert not same["verdict"]["drift"], same["p_values"]
  assert "no drift detected" in drift.markdown(same)
  bad = subprocess.run([sys.executable, "-m", "eval.drift", "--workdir", workdir, "--current",
                        "nonexistent_source"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
  assert bad.returncode == 3 and "data.source='nonexistent_source'" in bad.stderr


def test_errors():
  with pytest.raises(ValueError, match="reference has 3 features per example and current 4"):
    drift.mmd_test(np.zeros((5, 3)), np.zeros((5, 4)))
  with pytest.raises(ValueError, match="at least 2 examples per set; got 1 and 5"):
    drift.ks_tests(np.zeros((1, 3)), np.zeros((5, 3)))
  with pytest.raises(ValueError, match="alpha=1.5"):
    drift.verdict({"inputs": 0.5}, alpha=1.5)
