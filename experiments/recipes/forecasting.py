"""The forecasting recipe shared by `experiments/series_*.py`: one statsmodels series as windows
(`data/series.py`), a model mapping the scaled context (C,) to the scaled next H values, mean
squared error, Adam 1e-3 on a cosine to zero, batch 32, 3,000 steps, evaluated on the
validation part (the test part is `python -m eval.forecast`'s, rolling-origin, beside ETS and
ARIMA).

The experiment argument names the series and `tiny` a smoke run: `sunspots` (the default),
`nile`, `co2`, `elnino`, `tiny`, or `co2,tiny`.
"""

from data import series as series_lib
from train import config as config_lib

# The experiment arguments (besides none, the first series): a series, tiny, or both.
ARGS = (*series_lib.SERIES, "tiny", *(f"{s},tiny" for s in list(series_lib.SERIES)[1:]))


def parse_arg(name: str, arg: str | None) -> tuple[str, bool]:
  """(series, tiny) from an experiment argument such as "co2,tiny"."""
  parts = [p for p in (arg or "").split(",") if p]
  tiny = "tiny" in parts
  rest = [p for p in parts if p != "tiny"]
  if len(rest) > 1 or (rest and rest[0] not in series_lib.SERIES):
    raise config_lib.unknown_arg(name, arg or "", ARGS)
  return (rest[0] if rest else "sunspots"), tiny


def experiment(name: str, model: dict, arg: str | None, tiny_model: dict | None = None):
  """The locked config of `model` (whose head gets the series' horizon as `num_classes`) on the
  series the argument names."""
  which, tiny = parse_arg(name, arg)
  args = series_lib.config_args({"series": which})
  c = config_lib.base()
  c.data.source = "series"
  c.data.builder_config = {"series": which}
  c.data.train_split = "train"
  c.data.eval_split = "validation"
  c.data.batch_size = 32
  c.data.eval_batch_size = 256
  c.supervised.loss = "mse"
  c.model = dict(model, num_classes=args["horizon"])
  c.optim.name = "adam"
  c.optim.learning_rate = 1e-3
  c.optim.schedule = "cosine"
  c.train.steps = 3000
  c.train.log_every = 500
  c.train.eval_every = 300
  c.train.checkpoint_every = 3000
  if tiny:
    c.model.update(tiny_model or {})
    config_lib.tiny(c)
  return config_lib.lock(c)
