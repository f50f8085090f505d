"""Forecasting with a GRU: the scaled context read one value a step by a GRU of 64 units, its
last state to the next H values (`experiments/recipes/forecasting.py`).

  python -m train --config experiments/series_gru.py:sunspots --workdir runs/series_gru
  python -m eval.forecast --workdir runs/series_gru
"""

from experiments.recipes.forecasting import ARGS, experiment  # noqa: F401 (ARGS)


def get_config(arg: str | None = None):
  return experiment("series_gru", dict(name="recurrent.RecurrentNet", hidden=(64,), cell="gru",
                                       head="last"), arg, tiny_model=dict(hidden=(4,)))
