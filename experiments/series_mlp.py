"""Forecasting with an MLP: the scaled context (C,) through two hidden layers of 128 ReLU units
to the next H values (`experiments/recipes/forecasting.py`).

  python -m train --config experiments/series_mlp.py:sunspots --workdir runs/series_mlp
  python -m eval.forecast --workdir runs/series_mlp
"""

from experiments.recipes.forecasting import ARGS, experiment  # noqa: F401 (ARGS)


def get_config(arg: str | None = None):
  return experiment("series_mlp", dict(name="mlp.MLP", widths=(128, 128)), arg,
                    tiny_model=dict(widths=(8,)))
