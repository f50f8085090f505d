"""eval.uncertainty end to end: two small MNIST-1D CNNs with dropout, trained on classes 0-7."""

import json
import os

import numpy as np
import pytest

from eval import calibration, members
from eval import uncertainty as uncertainty_report
from eval import uncertainty_scores as uncertainty
from tests.conftest import load_experiment

KEEP = (0, 1, 2, 3, 4, 5, 6, 7)
# two 300-step trainings and 8 MC dropout passes over four sets: with the slow set
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
  from train import loop

  root = tmp_path_factory.mktemp("ensemble")
  out = []
  for seed in (0, 1):
    config = load_experiment("mnist1d_cnn", None, data_dir)
    with config.unlocked():
      config.seed = seed
      config.model.dropout = 0.3
      config.data.keep_classes = KEEP
      config.train.steps = 300
      config.train.log_every = 300
      config.train.eval_every = config.train.checkpoint_every = 0
    workdir = str(root / f"seed{seed}")
    loop.train_and_evaluate(config, workdir)
    out.append(workdir)
  return out


def test_the_comparison_on_every_set(runs, tmp_path):
  result, first, sets = uncertainty_report.compare(runs, shifted="mnist1d_drift", passes=8)
  assert set(sets) == {"test", "held-out classes", "shifted", "noise"}
  assert set(np.unique(sets["held-out classes"].labels)) == {8, 9}
  assert set(np.unique(sets["test"].labels)) <= set(KEEP)
  assert set(np.unique(sets["shifted"].labels)) <= set(KEEP)
  for name in ("test", "shifted"):
    assert set(result["predictive"][name]) == set(uncertainty_report.METHODS)
  single = result["predictive"]["test"]["single"]
  accuracies = [uncertainty.predictive(calibration.softmax(members.restore_all([w])[0].predict(
      sets["test"].inputs)), sets["test"].labels)["accuracy"] for w in runs]
  assert single["trials"] == 2 and single["mean"]["accuracy"] == pytest.approx(np.mean(accuracies))
  assert single["sd"]["accuracy"] == pytest.approx(np.std(accuracies, ddof=1))
  # a single model's scores are its classification evaluator's, as training would track them
  from train import evaluators

  tracked = [evaluators.build("c", {"type": "classification"}, r)(r.state)
             for r in members.restore_all(runs)]
  for k in ("accuracy", "nll", "brier", "ece"):
    assert single["mean"][k] == pytest.approx(np.mean([t[k] for t in tracked]), rel=1e-6), k
  assert result["predictive"]["test"]["ensemble"]["trials"] == 1
  # the ensemble's probabilities are the members' mean, each member its own restore
  p = members.probabilities([members.restore_all([w])[0] for w in runs], sets["test"].inputs)
  np.testing.assert_allclose(first["ensemble"]["test"][0], p.mean(0), atol=1e-6)
  # MC dropout passes differ (dropout is on) and are reproducible from the seed
  q = first["mc_dropout"]["test"][1]
  assert q.shape[0] == 8 and not np.allclose(q[0], q[1])
  again = members.mc_dropout(members.restore_all(runs[:1])[0], sets["test"].inputs, 8, 0)
  np.testing.assert_allclose(q, again)
  assert single["mean"]["accuracy"] > 0.5  # learned something on 8 classes
  # the OOD table is the detection of each method's scores, test split against the set
  _, q_in = first["ensemble"]["test"]
  _, q_out = first["ensemble"]["noise"]
  want = uncertainty.detection(uncertainty.mutual_information(q_in),
                               uncertainty.mutual_information(q_out))
  assert result["ood"]["noise"]["ensemble"]["mean"]["mutual_information"] == want
  assert set(result["ood"]["noise"]["ensemble"]["mean"]) == {"max_prob", "entropy",
                                                             "mutual_information"}
  assert set(result["ood"]["noise"]["single"]["mean"]) == {"max_prob", "entropy"}
  written = uncertainty_report.write(result, first, sets, str(tmp_path))
  assert os.path.exists(written["figures"]["test"])
  with open(tmp_path / "report.json") as f:
    assert json.load(f)["members"] == runs
  assert "| ensemble |" in (tmp_path / "report.md").read_text()


def test_left_out_methods_and_bad_inputs(runs, trained, tmp_path):
  plain = trained("mnist1d_cnn")  # no dropout
  result, _, _ = uncertainty_report.compare([plain], passes=4, noise=False)
  assert "model.dropout=0" in result["mc_dropout_left_out"]
  assert "ensemble_left_out" in result and set(result["predictive"]["test"]) == {
      "single", "temperature"}
  with pytest.raises(ValueError, match="--ensemble_size=3 with 2 runs"):
    uncertainty_report.compare(runs, ensemble_size=3)
  with pytest.raises(ValueError, match="members must share the data"):
    members.restore_all([runs[0], plain])
  with pytest.raises(ValueError, match="holds no trained run"):
    members.workdirs_in(str(tmp_path))
  assert members.workdirs_in(os.path.dirname(runs[0])) == runs
