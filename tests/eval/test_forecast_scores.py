"""Forecast scores against plain loops over their definitions, the seasonal naive forecast
against its index arithmetic, and ETS and ARIMA against series whose best forecast is known."""

import numpy as np
import pytest

from eval import forecast_scores as fs


def test_smape_and_mase_match_loops_over_their_definitions():
  rng = np.random.default_rng(0)
  truth = rng.uniform(-2, 5, size=(7, 3))
  forecast = truth + rng.normal(size=(7, 3))
  truth[0, 0] = forecast[0, 0] = 0.0  # 0/0 counts as 0
  insample = rng.normal(size=40).cumsum()
  m = 4
  smape_ref, mase_ref = np.zeros(3), np.zeros(3)
  scale = sum(abs(insample[i] - insample[i - m]) for i in range(m, 40)) / (40 - m)
  for h in range(3):
    for i in range(7):
      a, f = truth[i, h], forecast[i, h]
      smape_ref[h] += 0.0 if a == f == 0 else 200 * abs(a - f) / (abs(a) + abs(f)) / 7
      mase_ref[h] += abs(a - f) / scale / 7
  np.testing.assert_allclose(fs.smape(truth, forecast), smape_ref, rtol=1e-12)
  np.testing.assert_allclose(fs.mase(truth, forecast, insample, m), mase_ref, rtol=1e-12)
  assert fs.smape(truth, truth).max() == 0 and fs.smape(np.ones((1, 1)), -np.ones((1, 1)))[0] == 200
  with pytest.raises(ValueError, match="more than one season"):
    fs.mase(truth, forecast, insample[:4], 4)
  with pytest.raises(ValueError, match="repeats exactly every season"):
    fs.mase(truth, forecast, np.tile([1.0, 2.0], 10), 2)


def test_seasonal_naive_repeats_the_last_known_season():
  y = np.arange(100.0)
  f = fs.seasonal_naive(y, np.array([50, 60]), horizon=7, season=3)
  # target 50 + k takes the latest value a whole number of seasons back before 50
  np.testing.assert_array_equal(f[0], [47, 48, 49, 47, 48, 49, 47])
  np.testing.assert_array_equal(f[1], f[0] + 10)
  np.testing.assert_array_equal(fs.seasonal_naive(y, np.array([50]), 3, 1)[0], [49, 49, 49])
  np.testing.assert_array_equal(fs.truth_at(y, np.array([50]), 3)[0], [50, 51, 52])


def test_ets_follows_a_trend_and_takes_a_season_only_where_it_helps():
  t = np.arange(120.0)
  y = 10 + 0.5 * t + 3 * np.sin(2 * np.pi * t / 12)
  origins, val = np.arange(100, 115), np.arange(88, 96)
  f, info = fs.ets(y, 84, val, origins, 6, 12)
  assert info["model"] == "ETS(A,Ad,A)"  # the seasonal model forecasts validation better
  assert set(info["validation_mae"]) == {"ETS(A,Ad,N)", "ETS(A,Ad,A)"}
  truth = fs.truth_at(y, origins, 6)
  assert np.abs(f - truth).max() < 0.5  # a noiseless trend and season
  assert np.abs(fs.seasonal_naive(y, origins, 6, 12) - truth).min() > 5  # naive lags the trend


@pytest.mark.slow  # 18 ARIMA fits
def test_arima_forecasts_an_autoregression_as_least_squares_does():
  rng = np.random.default_rng(1)
  phi, n = 0.9, 1000
  y = np.zeros(n)
  for i in range(1, n):
    y[i] = 1.0 + phi * (y[i - 1] - 1.0) + rng.normal()
  origins = np.arange(900, 990)
  f, info = fs.arima(y, 800, np.arange(800, 880), origins, 3, 1)
  # the reference: an AR(1) with intercept by least squares on the same training part,
  # iterated forward from each origin's last known value
  x = np.stack([np.ones(799), y[:799]], 1)
  c, a = np.linalg.lstsq(x, y[1:800], rcond=None)[0]
  ref = np.empty((len(origins), 3))
  last = y[origins - 1]
  for h in range(3):
    last = c + a * last
    ref[:, h] = last
  assert info["model"].startswith("ARIMA(")
  assert np.abs(f - ref).mean() < 0.1 * y.std()
  truth = fs.truth_at(y, origins, 3)
  assert np.abs(f - truth).mean() < np.abs(y[origins - 1][:, None] - truth).mean()  # beats naive
