"""Character (byte) language model: a two-layer LSTM on pydoc_text, the recipe in `recipes/charlm.py`;
the same parameter count and step budget as `charlm_transformer.py`.

  python -m train --config experiments/charlm_lstm.py --workdir runs/charlm_lstm
  python -m train.generate --workdir runs/charlm_lstm --prompt "The with statement"
"""

from experiments.recipes.charlm import ARGS, VOCAB, experiment  # noqa: F401 (ARGS)


def get_config(arg: str | None = None):
  model = dict(name="recurrent.RecurrentNet", num_classes=VOCAB, vocab_size=VOCAB,
               embed_dim=64, hidden=(159, 159), cell="lstm", head="sequence")
  return experiment("charlm_lstm", model, arg, tiny_model=dict(embed_dim=8, hidden=(16,)))
