"""python -m eval: the report and its figures are written for trained small runs, its numbers
agree with the modules that compute them, and bad inputs are refused by name."""

import json
import os

import numpy as np
import pytest

from eval import calibration, metrics
from eval import report as rp
from tests.conftest import ROOT

FIGURES = ("confusion.png", "reliability.png", "attribution.png")


@pytest.fixture(autouse=True)
def quick_speed(monkeypatch):
  """Fewer timed calls: the tests check the report's shape, not this machine's speed."""
  monkeypatch.setattr(rp, "LATENCY_CALLS", 20)
  monkeypatch.setattr(rp, "THROUGHPUT_SECONDS", 0.02)


def written(out):
  with open(os.path.join(out, "metrics.json")) as f:
    on_disk = json.load(f)
  with open(os.path.join(out, "report.md")) as f:
    text = f.read()
  for name in FIGURES:
    assert os.path.getsize(os.path.join(out, name)) > 5000, name
  for name in FIGURES:
    assert f"]({name})" in text
  return on_disk, text


def test_report_of_a_multiclass_run(trained, tmp_path):
  out = str(tmp_path / "r")
  result = rp.report(trained("mnist1d_cnn"), out=out)
  on_disk, text = written(out)
  assert on_disk["metrics"] == json.loads(json.dumps(result["metrics"]))
  assert result["data"] == {"source": "mnist1d", "split": "test", "examples": 1000,
                            "classes": 10}
  m = result["metrics"]
  assert m["examples"] == 1000 and 0.0 <= m["accuracy"] <= 1.0
  assert np.sum(m["confusion"]) == 1000 and "operating_point" not in result
  cal = result["calibration"]
  assert len(cal["temperatures"]) == 2 and all(t > 0 for t in cal["temperatures"])
  assert set(cal["before"]) == {"ece", "ece_mass", "mce", "nll", "brier"}
  assert result["attribution"]["integrated_gradients_completeness_gap_max"] < 0.01
  assert result["attention"] is None
  sp = result["speed"]
  assert 0 < sp["latency_ms"]["p50"] <= sp["latency_ms"]["p99"]
  assert sp["peak_throughput"] == max(sp["throughput"].values())
  for heading in ("## Metrics", "## Calibration", "## Attribution", "## Speed"):
    assert heading in text


def test_cross_fitting_uses_each_half_for_the_other():
  rng = np.random.default_rng(0)
  true = rng.normal(size=(400, 4)) * 2
  p = calibration.softmax(true)
  labels = (p.cumsum(-1) > rng.random((400, 1))).argmax(-1)
  scaled, temps = rp.cross_fitted_temperature(3 * true, labels, seed=1)
  a, b = rp._folds(400, 1)
  assert len(a) + len(b) == 400 and not set(a) & set(b)
  np.testing.assert_allclose(scaled[b], calibration.softmax(
      3 * true[b], calibration.fit_temperature(3 * true[a], labels[a])))
  assert temps[0] == pytest.approx(calibration.fit_temperature(3 * true[a], labels[a]))
  y = labels == 0
  op = rp.cross_fitted_threshold(y, p[:, 0], "recall", 0.9, seed=1)
  decided = np.zeros(400, bool)
  for fit, apply, t in ((a, b, op["fold_thresholds"][0]), (b, a, op["fold_thresholds"][1])):
    assert t == metrics.choose_threshold(y[fit], p[fit, 0], "recall", 0.9)
    decided[apply] = p[apply, 0] >= t
  assert op["cross_fitted"]["tp"] == int(np.sum(decided & y))
  assert op["in_sample"]["recall"] >= 0.9


def test_report_of_a_binary_run_chooses_a_threshold(trained, tmp_path):
  out = str(tmp_path / "b")
  result = rp.report(trained("breast_cancer_mlp", steps=300), out=out,  # attributions: below
                     overrides={"report.threshold_metric": "precision",
                                "report.threshold_target": "0.9", "report.examples": "0"})
  with open(os.path.join(out, "report.md")) as f:  # the figures: test_report_of_a_multiclass_run
    text = f.read()
  op = result["operating_point"]
  assert op["metric"] == "precision" and op["target"] == 0.9
  assert op["in_sample"]["precision"] >= 0.9
  assert "## Decision threshold" in text
  # an untrained-looking model cannot reach the precision: the report says so instead of failing
  weak = rp.report(trained("breast_cancer_mlp"), out=str(tmp_path / "w"),
                   overrides={"report.threshold_metric": "precision",
                              "report.threshold_target": "1.0", "report.examples": "0"})
  assert "no threshold reaches precision >= 1.0" in weak["operating_point"]["error"]
  assert "not reachable" in rp.markdown(weak)


@pytest.mark.slow
def test_report_of_a_transformer_draws_its_attention(trained, tmp_path):
  out = str(tmp_path / "t")
  result = rp.report(trained("mnist1d_transformer"), out=out,
                     overrides={"report.examples": "2"})
  assert result["attention"] == "attention.png"
  assert os.path.getsize(os.path.join(out, "attention.png")) > 5000
  assert result["attribution"]["examples"] == 2


def test_report_errors(trained, tmp_path):
  with pytest.raises(ValueError, match="paradigm='reconstruction' autoencoder.Autoencoder run; "
                     "the report covers classifiers"):
    rp.report(trained("digits_ae"), out=str(tmp_path))
  with pytest.raises(ValueError, match="has no field 'report.bogus'"):
    rp.report(trained("mnist1d_cnn"), out=str(tmp_path), overrides={"report.bogus": "1"})
  with pytest.raises(ValueError, match="report.threshold_target=1.5; expected a recall in"):
    rp.report(trained("mnist1d_cnn"), out=str(tmp_path),
              overrides={"report.threshold_target": "1.5"})


@pytest.mark.slow
def test_cli_prints_the_report_and_names_errors(trained, tmp_path):
  import subprocess
  import sys

  run = lambda *a: subprocess.run([sys.executable, "-m", "eval", *a], cwd=ROOT,  # noqa: E731
                                  capture_output=True, text=True, timeout=300)
  done = run("--workdir", trained("mnist1d_cnn"), "--out", str(tmp_path / "cli"),
             "--set", "report.examples=1")
  assert done.returncode == 0, done.stderr
  assert "## Calibration" in done.stdout
  bad = run("--workdir", str(tmp_path / "nothing"))
  assert bad.returncode == 2 and "error:" in bad.stderr and "nothing" in bad.stderr
