"""Rolling-origin evaluation of forecasters beside seasonal naive, ETS and ARIMA.

  python -m eval.forecast --workdir runs/series_mlp [--workdir runs/series_gru ...] \
      [--out DIR]

Every workdir is a run of a `data.source="series"` experiment (`experiments/series_*.py`), all on
the same series and window lengths. Each forecasts from every origin of the test part (the last
`test_fraction` of the series, one step apart; `data/series.py`) out of the context it was
trained on; forecasts are put back in the series' units, then scored per step ahead with MASE
and sMAPE (`eval/forecast_scores.py`). The baselines are fitted on the same training part (the
values the training windows cover) and run from the same origins. Runs of the same model (its
`model.name`, cell or experiment) are seeds: their scores are given as mean ± sd.

Writes OUT/forecast.json, forecast.md (a table: MASE and sMAPE at 1, H/2 and H steps ahead and
their mean over 1..H) and forecast.png (the test part with forecasts from every H-th origin);
OUT defaults to the first workdir.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Sequence

import numpy as np

from train import cli


def _label(config) -> str:
  """A model's name in the table: its class, with the cell for a recurrent net."""
  model = config.model
  label = model.name.split(".")[-1]
  if "cell" in model:
    label = model.cell.upper()
  if label == "TransformerClassifier":
    label = (f"Transformer ({'causal, ' if model.get('causal') else ''}"
             f"patch {model.get('patch_size', 1)})")
  return label


def series_args(config) -> dict[str, Any]:
  """The `data/series.py` arguments of a run's config.

  Raises:
    ValueError: the run is not trained on `data.source="series"`.
  """
  from data import series

  if config.data.source != "series":
    raise ValueError(f"data.source={config.data.source!r}: eval.forecast takes runs of a "
                     "series source (experiments/series_*.py)")
  bc = config.data.builder_config
  return series.config_args(dict(bc.to_dict() if hasattr(bc, "to_dict") else bc))


def model_forecasts(workdir: str) -> tuple[str, dict[str, Any], np.ndarray]:
  """(label, series arguments, (N, H) forecasts in the series' units from every test origin):
  the `Forecast` evaluator's, on the workdir's newest checkpoint."""
  from eval import restore

  run = restore.restore(workdir, paradigm="supervised")
  evaluator = Forecast("forecast", {}, run, where=f"--workdir={workdir}")
  return _label(run.config), evaluator.args, evaluator.forecasts(run.state)


class Forecast:
  """Rolling-origin MASE and sMAPE on the test part as an evaluator (`train/evaluators.py`):

      config.evals.forecast = dict(type="forecast")

  Fields: `every` (steps; 0 = at the end). Metrics: `mase` and `smape`, means over 1..H steps
  ahead, and `mase_1` and `mase_H` at 1 and H steps: the numbers `python -m eval.forecast`
  tabulates (from `forecasts`)."""

  FIELDS = ("type", "every")

  def __init__(self, name: str, section: Any, run: Any, where: str = ""):
    import jax

    from data import series
    from train import evaluators
    from train.errors import ConfigError

    evaluators.fields(name, section, self.FIELDS)
    self.args = series_args(run.config)
    self.test = series.windows(self.args).examples("test")
    self._predict = jax.jit(run.paradigm.predict)
    outputs = jax.eval_shape(self._predict, run.state, self.test["context"][:1])
    steps = int(np.prod(outputs.shape[1:]))
    if steps != self.args["horizon"]:
      raise ConfigError(f"{where or f'evals.{name}'}: the model forecasts {steps} steps; the "
                        f"series' horizon is {self.args['horizon']}")

  def forecasts(self, state: Any) -> np.ndarray:
    """(N, H) forecasts in the series' units from every test origin."""
    scaled = np.asarray(self._predict(state, self.test["context"]))
    return series_units(self.test, scaled)

  def __call__(self, state: Any) -> dict[str, float]:
    s = scores(self.args, self.forecasts(state))
    return {"mase": float(np.mean(s["mase"])), "smape": float(np.mean(s["smape"])),
            "mase_1": s["mase"][0], "mase_H": s["mase"][-1]}


def series_units(test: dict[str, np.ndarray], scaled: np.ndarray) -> np.ndarray:
  """(N, H) forecasts in the series' units from a model's scaled predictions for the test
  windows `test` (`series.Windows.examples`)."""
  from data import series

  return series.to_units(scaled.reshape(len(test["origin"]), -1), test["level"], test["scale"])


def baselines(args: dict[str, Any]) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
  """{name: ((N, H) forecasts, what was fitted)} of the three baselines on the test origins."""
  from data import series
  from eval import forecast_scores as fs

  w = series.windows(args)
  m = series.season(args["series"])
  origins, val = w.origins("test"), w.origins("validation")
  naive = f"seasonal naive (m={m})" if m > 1 else "naive"
  return {naive: (fs.seasonal_naive(w.y, origins, w.horizon, m), {"model": naive}),
          "ETS": fs.ets(w.y, w.val_start, val, origins, w.horizon, m),
          "ARIMA": fs.arima(w.y, w.val_start, val, origins, w.horizon, m)}


def scores(args: dict[str, Any], forecasts: np.ndarray) -> dict[str, list[float]]:
  """{"mase": (H,), "smape": (H,)} of forecasts from the test origins."""
  from data import series
  from eval import forecast_scores as fs

  w = series.windows(args)
  truth = fs.truth_at(w.y, w.origins("test"), w.horizon)
  m = series.season(args["series"])
  return {"mase": fs.mase(truth, forecasts, w.y[:w.val_start], m).tolist(),
          "smape": fs.smape(truth, forecasts).tolist()}


def table(rows: dict[str, list[dict[str, list[float]]]], horizon: int) -> str:
  """Markdown: per model, MASE and sMAPE at 1, H/2 and H steps ahead and the mean over 1..H;
  mean ± sd where a model has several runs."""
  steps = sorted({1, max(horizon // 2, 1), horizon})
  head = ([f"MASE h={h}" for h in steps] + ["MASE mean"] + [f"sMAPE h={h}" for h in steps]
          + ["sMAPE mean"])
  lines = ["| model | runs | " + " | ".join(head) + " |", "|---" * (len(head) + 2) + "|"]
  for name, runs in rows.items():
    cells = []
    for metric, digits in (("mase", 3), ("smape", 2)):
      per = np.array([r[metric] for r in runs])  # (runs, H)
      for values in [per[:, h - 1] for h in steps] + [per.mean(axis=1)]:
        sd = f" ± {values.std(ddof=1):.{digits}f}" if len(values) > 1 else ""
        cells.append(f"{values.mean():.{digits}f}{sd}")
    lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def plot(args: dict[str, Any], forecasts: dict[str, np.ndarray], path: str) -> None:
  """The test part of the series, and each model's forecasts from every H-th origin."""
  from data import series
  from train import figures

  w = series.windows(args)
  origins = w.origins("test")
  plt = figures.pyplot()
  fig, ax = plt.subplots(figsize=(11, 3.8))
  start = max(w.test_start - 3 * w.horizon, 0)
  ax.plot(np.arange(start, len(w.y)), w.y[start:], color="k", lw=1.2, label="series")
  ax.axvline(w.test_start, color="0.6", ls=":", lw=1)
  for i, (name, f) in enumerate(forecasts.items()):
    for j in range(0, len(origins), w.horizon):
      t = origins[j]
      ax.plot(np.arange(t, t + w.horizon), f[j], color=f"C{i}", lw=1,
              label=name if j == 0 else None)
  ax.set_title(f"{args['series']}: forecasts of {w.horizon} steps from every {w.horizon}-th "
               "test origin")
  ax.legend(fontsize=7, ncol=3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def report(workdirs: Sequence[str], out: str, names: Sequence[str] | None = None
           ) -> tuple[dict[str, Any], str]:
  """Scores of the runs and the baselines (module docstring); writes OUT/forecast.*. `names`:
  how the report names each run (default its workdir; for gs:// runs, the URL of the local
  copy)."""
  from train import files, workdir_lock

  rows: dict[str, list[dict[str, list[float]]]] = {}
  shown: dict[str, np.ndarray] = {}
  args = None
  for workdir, name in zip(workdirs, names or workdirs):
    label, run_args, f = model_forecasts(workdir)
    if args is not None and run_args != args:
      raise ValueError(f"--workdir={name} forecasts {run_args}; the first run forecasts "
                       f"{args}: one series and window length per report")
    args = run_args
    rows.setdefault(label, []).append({**scores(args, f), "workdir": name})
    shown.setdefault(label, f)
  fitted = {}
  for name, (f, info) in baselines(args).items():
    rows[name] = [scores(args, f)]
    shown[name] = f
    fitted[name] = info
  text = table(rows, args["horizon"])
  with workdir_lock.writing_into(workdirs, out):
    os.makedirs(out, exist_ok=True)
    files.write_json_atomic(os.path.join(out, "forecast.json"),
                            {"series": args, "rows": rows, "baselines": fitted})
    files.write_text_atomic(os.path.join(out, "forecast.md"), text + "\n")
    plot(args, shown, os.path.join(out, "forecast.png"))
  return {"series": args, "rows": rows, "baselines": fitted}, text


def main(argv: list[str] | None = None) -> None:
  p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", action="append", required=True,
                 help="a trained series run (repeat for more models or seeds)")
  p.add_argument("--out", default="", help="where forecast.* go (default the first workdir)")
  a = p.parse_args(argv)
  from train import remote_workdir

  with remote_workdir.local_workdirs(a.workdir) as local:  # gs://: local copies, uploaded
    _, text = report(local, a.out or local[0], a.workdir)
  print(text)
  print(f"written to {a.out or a.workdir[0]}/forecast.{{json,md,png}}", file=sys.stderr)


if __name__ == "__main__":
  cli.guarded(main)
