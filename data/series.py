"""Real time series shipped with statsmodels, as a TFDS builder of forecasting windows.

  data.source = "series"
  data.builder_config = {"series": "sunspots", "context": 40, "horizon": 10}

The series (`SERIES`, all offline in the statsmodels package):
- `sunspots`: yearly mean sunspot numbers, 1700-2008 (309 values); season 11, the solar cycle.
- `nile`: yearly flow of the Nile at Aswan, 1871-1970 (100 values, 1e8 m^3); no season.
- `co2`: Mauna Loa CO2 (ppm), weekly 1958-2001 averaged by month, the seven months with no
  reading filled linearly (526 values); season 12.
- `elnino`: monthly sea-surface temperature of the Nino region (deg C), 1950-2010 (732 values);
  season 12.

A series of T values is cut at `test_start = T - round(test_fraction T)` and `val_start =
test_start - round(validation_fraction T)`. An example forecasts from an origin t: its `context`
is the `context` values y[t-C:t] before t, its `target` the `horizon` values y[t:t+H] from t.
- train: every origin whose target ends by val_start (t + H <= val_start);
- validation: origins with the target inside [val_start, test_start);
- test: every origin t >= test_start with t + H <= T, one step apart (rolling-origin
  evaluation over the last part of the series).
A context may reach back into earlier parts (the past is known at the origin), never a target:
no value at or after t is in an example's context.

Both are stored scaled by the window's own last known value and the training part's spread:
`(y - level) / scale` with `level = y[t-1]` and `scale` the standard deviation of y[:val_start];
`level`, `scale` and `origin` are stored beside them so a forecast is put back in the series'
units (`to_units`). Scaling by the last value makes a model predict the change from it, which
carries a trending series (CO2) past the range it was trained on.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Callable, Iterator

import numpy as np
import tensorflow_datasets as tfds

from data.offline import OfflineBuilder


def _sunspots() -> np.ndarray:
  from statsmodels.datasets import sunspots

  return sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(np.float64)


def _nile() -> np.ndarray:
  from statsmodels.datasets import nile

  return nile.load_pandas().data["volume"].to_numpy(np.float64)


def _co2() -> np.ndarray:
  from statsmodels.datasets import co2

  monthly = co2.load_pandas().data["co2"].resample("MS").mean()
  return monthly.interpolate(method="linear").to_numpy(np.float64)


def _elnino() -> np.ndarray:
  from statsmodels.datasets import elnino

  return elnino.load_pandas().data.drop(columns="YEAR").to_numpy(np.float64).reshape(-1)


# name -> (loader, season, default context, default horizon)
SERIES: dict[str, tuple[Callable[[], np.ndarray], int, int, int]] = {
    "sunspots": (_sunspots, 11, 44, 11),
    "nile": (_nile, 1, 20, 5),
    "co2": (_co2, 12, 48, 12),
    "elnino": (_elnino, 12, 48, 12),
}
DEFAULTS: dict[str, Any] = {"series": "sunspots", "context": 0, "horizon": 0,
                            "test_fraction": 0.2, "validation_fraction": 0.1}


@functools.cache
def values(name: str) -> np.ndarray:
  """The series `name` (T,), float64, in its own units; read once per process (every window,
  score and baseline of `eval.forecast` cuts the same series), so read-only."""
  y = SERIES[name][0]()
  y.flags.writeable = False
  return y


def season(name: str) -> int:
  return SERIES[name][1]


@dataclasses.dataclass(frozen=True)
class Windows:
  """The cut of a series (module docstring): its values, where validation and test start, and
  the window lengths."""
  y: np.ndarray
  context: int
  horizon: int
  val_start: int
  test_start: int

  @property
  def scale(self) -> float:
    return float(np.std(self.y[:self.val_start]))

  def origins(self, split: str) -> np.ndarray:
    """The origins t of a split's examples, in time order."""
    c, h = self.context, self.horizon
    first, last = {"train": (c, self.val_start - h),
                   "validation": (max(c, self.val_start), self.test_start - h),
                   "test": (self.test_start, len(self.y) - h)}[split]
    return np.arange(first, last + 1)

  def examples(self, split: str) -> dict[str, np.ndarray]:
    """{"context" (N, C), "target" (N, H), "level" (N,), "scale" (N,), "origin" (N,)}: scaled
    windows of a split."""
    t = self.origins(split)
    context = self.y[t[:, None] + np.arange(-self.context, 0)[None]]
    target = self.y[t[:, None] + np.arange(self.horizon)[None]]
    level = self.y[t - 1]
    s = self.scale
    return {"context": ((context - level[:, None]) / s).astype(np.float32),
            "target": ((target - level[:, None]) / s).astype(np.float32),
            "level": level.astype(np.float32), "scale": np.full(len(t), s, np.float32),
            "origin": t.astype(np.int64)}


def to_units(scaled: np.ndarray, level: np.ndarray, scale: np.ndarray) -> np.ndarray:
  """Scaled forecasts (N, H) back in the series' units: level + scale * forecast."""
  return np.asarray(level)[:, None] + np.asarray(scale)[:, None] * np.asarray(scaled)


def config_args(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
  """The builder's arguments: `DEFAULTS` with `overrides`, the series' own context and horizon
  filled in where left 0.

  Raises:
    ValueError: an unknown argument or series, or lengths that leave a split empty.
  """
  args = {**DEFAULTS, **(overrides or {})}
  unknown = sorted(set(args) - set(DEFAULTS))
  if unknown:
    raise ValueError(f"data.builder_config: unknown series argument(s) {unknown}; expected some "
                     f"of {sorted(DEFAULTS)}")
  if args["series"] not in SERIES:
    raise ValueError(f"data.builder_config.series={args['series']!r}; expected one of "
                     f"{sorted(SERIES)}")
  _, _, context, horizon = SERIES[args["series"]]
  args["context"] = args["context"] or context
  args["horizon"] = args["horizon"] or horizon
  for key in ("context", "horizon"):
    if not isinstance(args[key], int) or isinstance(args[key], bool) or args[key] < 1:
      raise ValueError(f"data.builder_config.{key}={args[key]!r}; expected a positive integer")
  for key in ("test_fraction", "validation_fraction"):
    if not 0.0 < float(args[key]) < 0.5:
      raise ValueError(f"data.builder_config.{key}={args[key]!r}; expected a fraction in "
                       "(0, 0.5)")
  return args


def windows(args: dict[str, Any]) -> Windows:
  """The cut of `args["series"]` (module docstring).

  Raises:
    ValueError: a split would hold no example, naming the lengths that do not fit.
  """
  y = values(args["series"])
  n = len(y)
  test_start = n - int(round(args["test_fraction"] * n))
  val_start = test_start - int(round(args["validation_fraction"] * n))
  w = Windows(y, args["context"], args["horizon"], val_start, test_start)
  for split in ("train", "validation", "test"):
    if len(w.origins(split)) < 1:
      raise ValueError(
          f"data.builder_config: series {args['series']!r} ({n} values, validation from "
          f"{val_start}, test from {test_start}) leaves split {split!r} empty with context "
          f"{args['context']} and horizon {args['horizon']}; expected shorter windows")
  return w


@dataclasses.dataclass
class SeriesConfig(tfds.core.BuilderConfig):
  """`args`: every argument; `overrides`: those that differ from the default config's (empty
  for the default, which TFDS knows by name)."""
  args: dict[str, Any] = dataclasses.field(default_factory=dict)
  overrides: dict[str, Any] = dataclasses.field(default_factory=dict)


def series_config(overrides: dict[str, Any] | None = None) -> SeriesConfig:
  """A builder config named after the series and its window lengths (fractions when changed)."""
  args = config_args(overrides)
  if overrides:  # refuses lengths that leave a split empty, before anything is built; the
    windows(args)  # default's fit (tested), and reading its series at import costs every run
    # statsmodels and pandas (1.6 s)
  name = f"{args['series']}_c{args['context']}_h{args['horizon']}"
  if (args["test_fraction"], args["validation_fraction"]) != (
      DEFAULTS["test_fraction"], DEFAULTS["validation_fraction"]):
    name += f"_t{args['test_fraction']}_v{args['validation_fraction']}".replace(".", "p")
  default = config_args() if overrides else args
  return SeriesConfig(name=name, description=f"Arguments: {json.dumps(args, sort_keys=True)}",
                      args=args, overrides={k: v for k, v in args.items() if default[k] != v})


class StrataSeries(OfflineBuilder):
  """Forecasting windows of a statsmodels series (module docstring)."""

  BUILDER_CONFIGS = [series_config()]

  def _info(self) -> tfds.core.DatasetInfo:
    a = self.builder_config.args
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__.split("\n\n")[0],
        features=tfds.features.FeaturesDict({
            "context": tfds.features.Tensor(shape=(a["context"],), dtype=np.float32),
            "target": tfds.features.Tensor(shape=(a["horizon"],), dtype=np.float32),
            "level": tfds.features.Scalar(dtype=np.float32),
            "scale": tfds.features.Scalar(dtype=np.float32),
            "origin": tfds.features.Scalar(dtype=np.int64),
        }),
        disable_shuffling=True,  # split index i is the i-th origin in time order
        supervised_keys=("context", "target"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    w = windows(self.builder_config.args)
    return {split: self._generate_examples(w.examples(split))
            for split in ("train", "validation", "test")}

  def _generate_examples(self, ex: dict[str, np.ndarray]) -> Iterator[tuple[int, dict]]:
    for i in range(len(ex["origin"])):
      yield i, {k: v[i] for k, v in ex.items()}

  def builder_arguments(self) -> dict[str, Any]:
    """The arguments that determine this builder's data (part of the dataset fingerprint)."""
    import statsmodels

    return {"name": self.name, "version": str(self.version), **self.builder_config.args,
            "statsmodels": statsmodels.__version__}
