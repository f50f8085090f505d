"""Forecast scores and the statistical baselines they are read beside (`eval.forecast`).

Forecasts are (N, H): N origins, H steps ahead each; scores are per step ahead (H,).
- sMAPE (the M4 competition's): 200 |y - f| / (|y| + |f|), in percent, a term 0 where both are 0.
- MASE (Hyndman & Koehler 2006): |y - f| over the mean absolute error of the seasonal naive
  forecast one season back in the in-sample (training) part, mean |y[i] - y[i - m]|.
Baselines, fitted on the training part y[:fit_end] only and then run, with those parameters, from
every origin t over the data known at t (y[:t]):
- seasonal naive: the value one season (m) before each target step;
- ETS: statsmodels' state-space exponential smoothing with a damped additive trend (parameters
  by maximum likelihood), with or without an additive season of m;
- ARIMA: statsmodels' SARIMAX, (p, d, q) chosen by AIC over p, q in 0..2, d in 0..1 (with a
  constant when d = 0 and a drift when d = 1), with or without a seasonal (0, 1, 1)_m.
Where m > 1, whether ETS and ARIMA take the season is chosen by the mean absolute error of their
forecasts from the validation origins (data.series: targets between the training and the test
parts), which none of them was fitted on: a season of 11 years fits the sunspot cycle only
roughly, and a model should not be held to it blindly.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import numpy as np


def smape(truth: np.ndarray, forecast: np.ndarray) -> np.ndarray:
  """(N, H) -> (H,) sMAPE in percent, the mean over origins."""
  truth, forecast = np.asarray(truth, np.float64), np.asarray(forecast, np.float64)
  denom = np.abs(truth) + np.abs(forecast)
  terms = np.where(denom > 0, 200.0 * np.abs(truth - forecast) / np.where(denom > 0, denom, 1),
                   0.0)
  return terms.mean(axis=0)


def mase_scale(insample: np.ndarray, season: int) -> float:
  """Mean absolute error of the seasonal naive forecast over the in-sample part.

  Raises:
    ValueError: the in-sample part is not longer than one season, or constant at that lag.
  """
  insample = np.asarray(insample, np.float64)
  if len(insample) <= season:
    raise ValueError(f"MASE needs more than one season ({season}) of in-sample values; got "
                     f"{len(insample)}")
  scale = float(np.mean(np.abs(insample[season:] - insample[:-season])))
  if scale == 0:
    raise ValueError("MASE is undefined: the in-sample part repeats exactly every season")
  return scale


def mase(truth: np.ndarray, forecast: np.ndarray, insample: np.ndarray, season: int) -> np.ndarray:
  """(N, H) -> (H,) MASE, the mean over origins, scaled by `mase_scale(insample, season)`."""
  err = np.abs(np.asarray(truth, np.float64) - np.asarray(forecast, np.float64))
  return err.mean(axis=0) / mase_scale(insample, season)


def truth_at(y: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
  """(N, H): y[t:t+H] for each origin t."""
  return np.asarray(y)[np.asarray(origins)[:, None] + np.arange(horizon)[None]]


def seasonal_naive(y: np.ndarray, origins: np.ndarray, horizon: int, season: int) -> np.ndarray:
  """(N, H): for target t + k, the value y[t + k - m ceil((k + 1) / m)], the latest known value
  one or more whole seasons back."""
  k = np.arange(horizon)
  back = season * np.ceil((k + 1) / season).astype(int)
  return np.asarray(y)[np.asarray(origins)[:, None] + (k - back)[None]]


def _rolled(result, y: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
  """Forecasts of a fitted statsmodels state-space result, its parameters kept, from each origin
  over the data known there."""
  out = np.empty((len(origins), horizon))
  for i, t in enumerate(origins):
    out[i] = np.asarray(result.apply(y[:t]).forecast(horizon))
  return out


def _choose(candidates: list[tuple[Any, str]], y: np.ndarray, val_origins: np.ndarray,
            origins: np.ndarray, horizon: int) -> tuple[np.ndarray, dict[str, Any]]:
  """The candidate (fitted result, name) with the least mean absolute error over the validation
  origins; its forecasts from `origins`, and what was chosen among what."""
  truth = truth_at(y, val_origins, horizon)
  errors = [float(np.mean(np.abs(_rolled(r, y, val_origins, horizon) - truth)))
            for r, _ in candidates]
  best = int(np.argmin(errors))
  result, name = candidates[best]
  return _rolled(result, y, origins, horizon), {
      "model": name, "validation_mae": {n: e for (_, n), e in zip(candidates, errors)}}


def ets(y: np.ndarray, fit_end: int, val_origins: np.ndarray, origins: np.ndarray, horizon: int,
        season: int) -> tuple[np.ndarray, dict[str, Any]]:
  """(N, H) ETS forecasts (module docstring) and what was fitted."""
  from statsmodels.tsa.statespace.exponential_smoothing import ExponentialSmoothing

  candidates = []
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # convergence notes from the optimiser
    for m in ([None, season] if season > 1 else [None]):
      result = ExponentialSmoothing(y[:fit_end], trend=True, damped_trend=True,
                                    seasonal=m).fit(disp=False)
      candidates.append((result, "ETS(A,Ad," + ("A" if m else "N") + ")"))
    return _choose(candidates, y, val_origins, origins, horizon)


def _best_arima(y: np.ndarray, seasonal: tuple[int, int, int, int]):
  from statsmodels.tsa.statespace.sarimax import SARIMAX

  best = None
  for p, d, q in itertools.product(range(3), range(2), range(3)):
    try:
      result = SARIMAX(y, order=(p, d, q), seasonal_order=seasonal,
                       trend="c" if d == 0 else "t").fit(disp=False)
    except (np.linalg.LinAlgError, ValueError):
      continue
    if np.isfinite(result.aic) and (best is None or result.aic < best[0].aic):
      best = (result, (p, d, q))
  if best is None:
    raise ValueError("no ARIMA order could be fitted to the training part")
  name = f"ARIMA{best[1]}" + (f"x(0, 1, 1){seasonal[3]}" if seasonal[3] else "")
  return best[0], name


def arima(y: np.ndarray, fit_end: int, val_origins: np.ndarray, origins: np.ndarray,
          horizon: int, season: int) -> tuple[np.ndarray, dict[str, Any]]:
  """(N, H) ARIMA forecasts (module docstring) and the order chosen."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    candidates = [_best_arima(y[:fit_end], (0, 0, 0, 0))]
    if season > 1:
      candidates.append(_best_arima(y[:fit_end], (0, 1, 1, season)))
    return _choose(candidates, y, val_origins, origins, horizon)
