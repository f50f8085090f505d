"""`python -m eval.forecast`: a trained forecaster's test forecasts put back in the series' units,
scored per step ahead, beside the baselines (slow: their fits), and its one-line errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data import series
from eval import forecast, forecast_scores
from tests.conftest import ROOT, load_experiment
from train import loop


@pytest.fixture(scope="module")
def nile_runs(data_dir, tmp_path_factory):
  """Two seeds of the MLP forecaster's tiny mode on the Nile: their workdirs."""
  out = []
  for seed in (0, 1):
    workdir = str(tmp_path_factory.mktemp(f"nile{seed}"))
    config = load_experiment("series_mlp", "nile,tiny", data_dir)
    config.seed = seed
    loop.train_and_evaluate(config, workdir)
    out.append(workdir)
  return out


def test_forecasts_are_the_model_outputs_in_the_series_units(nile_runs):
  from eval import restore

  label, args, f = forecast.model_forecasts(nile_runs[0])
  assert label == "MLP" and args["series"] == "nile"
  w = series.windows(args)
  test = w.examples("test")
  run = restore.restore(nile_runs[0])
  expected = test["level"][:, None] + test["scale"][:, None] * run.predict(test["context"])
  np.testing.assert_allclose(f, expected, rtol=1e-5)
  s = forecast.scores(args, f)
  truth = forecast_scores.truth_at(w.y, w.origins("test"), w.horizon)
  np.testing.assert_allclose(s["smape"], forecast_scores.smape(truth, f))
  assert len(s["mase"]) == w.horizon
  rows = {"MLP": [s, forecast.scores(args, forecast.model_forecasts(nile_runs[1])[2])]}
  text = forecast.table(rows, w.horizon)
  assert "| model | runs | MASE h=1 | MASE h=2 | MASE h=5 | MASE mean |" in text
  assert "| MLP | 2 | " in text and " ± " in text


@pytest.mark.slow  # the ETS and ARIMA fits
def test_the_command_scores_runs_beside_the_baselines(nile_runs, tmp_path):
  out = str(tmp_path / "report")
  r = subprocess.run([sys.executable, "-m", "eval.forecast", "--workdir", nile_runs[0],
                      "--workdir", nile_runs[1], "--out", out], cwd=ROOT, capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  for name in ("| MLP | 2 |", "| naive | 1 |", "| ETS | 1 |", "| ARIMA | 1 |"):
    assert name in r.stdout
  with open(os.path.join(out, "forecast.json")) as f:
    saved = json.load(f)
  assert saved["baselines"]["ARIMA"]["model"].startswith("ARIMA(")
  assert os.path.getsize(os.path.join(out, "forecast.png")) > 0


def test_a_run_of_another_source_is_refused():
  with pytest.raises(ValueError, match=r"data.source='mnist1d': eval.forecast takes runs of a "
                     r"series source \(experiments/series_\*.py\)"):
    forecast.series_args(load_experiment("mnist1d_cnn", "tiny"))
