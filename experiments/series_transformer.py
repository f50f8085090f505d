"""Forecasting with a causal Transformer on patches: the scaled context cut into patches of 4
values (as PatchTST, Nie et al. 2023), each embedded to width 64, learned positions, 2 pre-LN
blocks of 4 heads with causal attention (each patch sees itself and earlier ones), the last
patch's state to the next H values (`experiments/recipes/forecasting.py`).

  python -m train --config experiments/series_transformer.py:sunspots --workdir runs/series_tf
  python -m eval.forecast --workdir runs/series_tf
"""

from data import series as series_lib
from experiments.recipes.forecasting import ARGS, experiment, parse_arg  # noqa: F401 (ARGS)

PATCH = 4


def get_config(arg: str | None = None):
  which, _ = parse_arg("series_transformer", arg)
  context = series_lib.config_args({"series": which})["context"]
  model = dict(name="transformer.TransformerClassifier", width=64, depth=2, num_heads=4,
               mlp_dim=128, patch_size=PATCH, max_len=context // PATCH, pool="last",
               causal=True, positions="learned")
  return experiment("series_transformer", model, arg,
                    tiny_model=dict(width=8, depth=1, num_heads=2, mlp_dim=16))
