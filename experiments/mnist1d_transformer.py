"""MNIST-1D, a Transformer encoder classifier: the 40-step signal cut into 10 patches of 4 steps,
each linearly embedded to width 64, a CLS token, learned positions, 3 pre-LN blocks of 4 heads,
dropout 0.1; the paper's data, batch 100 in stored order and 8,000 steps, with AdamW 3e-3
(400 warm-up steps, cosine decay, weight decay 0.05), since Adam at 1e-2 without warm-up, the
paper's setting for its small CNN/GRU, is not a recipe for attention. No paper figure.

  python -m train --config experiments/mnist1d_transformer.py --workdir runs/mnist1d_transformer
  python -m eval.attention --workdir runs/mnist1d_transformer --index 0 --out attn_mnist1d.png
"""

from experiments.recipes.mnist1d_paper import ARGS, experiment  # noqa: F401 (ARGS)


def get_config(arg: str | None = None):
  model = dict(name="transformer.TransformerClassifier", num_classes=10, width=64, depth=3,
               num_heads=4, mlp_dim=128, max_len=10, patch_size=4, positions="learned",
               pool="cls", dropout=0.1)
  c = experiment("mnist1d_transformer", model, arg, torch_init=False,
                 tiny_model=dict(width=16, depth=1, num_heads=2, mlp_dim=32))
  c.optim.name = "adamw"
  c.optim.learning_rate = 3e-3
  c.optim.schedule = "warmup_cosine"
  c.optim.warmup_steps = 400 if arg != "tiny" else 2
  c.optim.weight_decay = 0.05
  return c
