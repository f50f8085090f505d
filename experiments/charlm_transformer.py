"""Character (byte) language model: a decoder-only Transformer (3 pre-LN blocks of width 96, 4
heads, learned positions) on pydoc_text, the recipe in `recipes/charlm.py`; the same parameter
count and step budget as `charlm_lstm.py`.

  python -m train --config experiments/charlm_transformer.py --workdir runs/charlm_transformer
  python -m train.generate --workdir runs/charlm_transformer --prompt "The with statement"
"""

from experiments.recipes.charlm import ARGS, SEQ_LEN, VOCAB, experiment  # noqa: F401 (ARGS)


def get_config(arg: str | None = None):
  # scan_layers and remat_policy at their defaults, named so that a command line can set them
  # (docs/pods.md compiles a 124M-parameter LM from this file for a TPU slice)
  model = dict(name="transformer.TransformerLM", vocab_size=VOCAB, width=96, depth=3,
               num_heads=4, mlp_dim=384, max_len=SEQ_LEN, positions="learned",
               scan_layers=False, remat_policy="",
               # on the CPU, the attention by a compiled kernel (arch/cpu_attention.py): steps
               # 1.06-1.22x as fast as with XLA's ops (docs/speed_kernels.md item 14)
               attention_kernel="cpu",
               # and the dense layers' backward pass and the LayerNorms the way XLA:CPU runs them
               # fastest (arch/cpu_dense.py, arch/cpu_norm.py): steps 1.26x as fast as with
               # flax's layers; the same bits per character (docs/cpu_layers.md)
               dense_kernel="cpu", norm_kernel="cpu")
  c = experiment("charlm_transformer", model, arg,
                 tiny_model=dict(width=16, depth=1, num_heads=2, mlp_dim=32, max_len=16))
  # the training pass as two independent chains XLA:CPU runs side by side: 4-13% faster steps
  # on 2 cores (train/batch_slices.py; docs/speed_attempts.md), the same step up to float rounding
  c.train.xla_cpu_batch_slices = 2
  # the AdamW update, clipping and logged norms as one compiled call (train/cpu_optimizer.py):
  # compile 2.8 -> 1.2 s, steps 1.06x (docs/cpu_optimizer.md)
  c.optim.kernel = "cpu"
  # malloc's huge pages for the step's 159 MB of temporaries: 24% faster steps (train/huge_pages)
  c.train.huge_pages = arg != "tiny"
  return c
