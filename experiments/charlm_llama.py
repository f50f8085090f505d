"""Character (byte) language model with the modern decoder (`transformer.Llama`: rotary positions,
RMSNorm, SwiGLU, grouped-query attention with 2 key/value heads for 4 query heads, no biases) on
pydoc_text, the recipe in `recipes/charlm.py`: the width, depth and heads of
`charlm_transformer.py`, its MLP width set for the same parameter count (372,576 against
372,704) and the same step budget.

  python -m train --config experiments/charlm_llama.py --workdir runs/charlm_llama
  python -m train.generate --workdir runs/charlm_llama --prompt "The with statement"
"""

from experiments.recipes.charlm import ARGS, SEQ_LEN, VOCAB, experiment  # noqa: F401 (ARGS)


def get_config(arg: str | None = None):
  # the preset's defaults named, so that a command line can set them (docs/pod_table.md
  # compiles Llama 3.2 1B's shape from this file for a TPU slice)
  model = dict(name="transformer.Llama", vocab_size=VOCAB, width=96, depth=3, num_heads=4,
               num_kv_heads=2, mlp_dim=306, max_len=SEQ_LEN, scan_layers=False, remat_policy="",
               tie_embeddings=False, rope_base=10000.0)
  return experiment("charlm_llama", model, arg,
                    tiny_model=dict(width=16, depth=1, num_heads=2, num_kv_heads=1, mlp_dim=32,
                                    max_len=16))
