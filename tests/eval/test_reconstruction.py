"""eval.reconstruction: ROC AUC and PCA against scikit-learn/NumPy, masks, imputation, report."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from eval import reconstruction as er
from tests.conftest import ROOT


def test_pca_errors_match_a_numpy_projection():
  rng = np.random.default_rng(1)
  train = rng.normal(size=(200, 4, 3)) @ np.diag([3.0, 1.0, 0.2])
  x = rng.normal(size=(20, 4, 3))
  flat = train.reshape(200, -1)
  mean = flat.mean(0)
  _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
  basis = vt[:5]
  rec = (x.reshape(20, -1) - mean) @ basis.T @ basis + mean
  want = np.mean(np.square(rec - x.reshape(20, -1)), axis=1)
  np.testing.assert_allclose(er.pca_errors(train, x, 5), want, rtol=1e-8)


def test_masks_and_baselines():
  rng = np.random.default_rng(2)
  hidden = er.block_missing((50, 8, 8, 1), 4, rng)
  assert np.all(hidden.sum((1, 2, 3)) == 16)
  rows, cols = np.nonzero(hidden[7, ..., 0])
  assert np.ptp(rows) == 3 and np.ptp(cols) == 3              # one contiguous 4x4 square
  assert np.all(er.block_missing((5, 40), 6, rng).sum(1) == 6)
  with pytest.raises(ValueError, match=r"--block=9 does not fit inputs of spatial size \(8, 8\)"):
    er.block_missing((5, 8, 8, 1), 9, rng)
  assert abs(er.random_missing((100, 64), 0.25, rng).mean() - 0.25) < 0.02
  train, x = rng.normal(size=(30, 6)), rng.normal(size=(4, 6))
  hidden = er.random_missing(x.shape, 0.5, rng)
  filled = er.impute_baselines(train, x, hidden)
  np.testing.assert_array_equal(filled["mean"][~hidden], x[~hidden])
  np.testing.assert_allclose(filled["mean"][hidden], np.broadcast_to(train.mean(0), x.shape)[hidden])
  np.testing.assert_array_equal(filled["knn"][~hidden], x[~hidden])
  assert er.masked_mse(filled["mean"], x, hidden) > 0


@pytest.fixture(scope="module")
def anomaly_report(trained, tmp_path_factory):
  workdir = trained("digits_anomaly")
  out = str(tmp_path_factory.mktemp("report"))
  return er.report(workdir, out=out), out


def test_report_on_a_trained_anomaly_run(anomaly_report):
  result, out = anomaly_report
  a = result["anomaly"]
  assert a["normal_classes"] == list(range(9)) and a["anomalous_classes"] == [9]
  assert a["normal"] + a["anomalous"] == 360 and a["anomalous"] == 36
  assert set(a["roc_auc"]) == {"model reconstruction error", "model negative ELBO",
                               "PCA (8 components) reconstruction error"}
  assert all(0.0 <= v <= 1.0 for v in a["roc_auc"].values())
  assert result["compression"]["examples"] == 324               # the test split's 0-8
  for name in ("reconstructions.png", "interpolation.png", "latents.png", "report.json"):
    assert os.path.getsize(os.path.join(out, name)) > 1000 or name == "report.json"
  with open(os.path.join(out, "report.json")) as f:
    assert json.load(f)["anomaly"]["anomalous"] == 36
  md = er.markdown(result)
  assert "| PCA, 8 components |" in md and "| random 25% |" in md
  # the report's evaluation is the run's evaluator: the numbers training recorded last
  with open(os.path.join(result["workdir"], "metrics.jsonl")) as f:
    last = [r for r in map(json.loads, f) if r.get("split") == "eval"][-1]
  assert last["step"] == result["checkpoint_step"]
  for k in ("loss", "neg_elbo", "kl"):
    assert result["evaluation"][k] == pytest.approx(last[k], rel=1e-5), k
  assert "The run's evaluator on the split" in md


def test_imputation_keeps_observed_elements(trained):
  from eval import restore

  run = restore.restore(trained("digits_dae"))
  x, _, _ = run.split("test")
  hidden = er.random_missing(x.shape, 0.3, np.random.default_rng(0))
  filled = er.Trained(run).impute(x, hidden, np.zeros(x.shape[1:]), 3)
  np.testing.assert_array_equal(filled[~hidden], x[~hidden])
  assert not np.allclose(filled[hidden], 0.0)


@pytest.mark.slow
def test_cli_errors(trained, tmp_path):
  cmd = [sys.executable, "-m", "eval.reconstruction", "--workdir"]
  r = subprocess.run(cmd + [trained("digits_cnn")], cwd=ROOT, capture_output=True, text=True,
                     timeout=300, check=False)
  assert r.returncode == 1 and "holds a paradigm='supervised' run; expected paradigm='reconstruction'" in \
      r.stderr
  r = subprocess.run(cmd + [str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                     timeout=300, check=False)
  assert r.returncode == 2 and "holds no config.json" in r.stderr
