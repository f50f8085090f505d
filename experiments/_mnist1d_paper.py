"""The MNIST-1D paper's training recipe (Greydanus 2020, the mnist1d package's `train.py`):
the frozen 4,000/1,000 split, Adam 1e-2, batch 100, 8,000 steps, no augmentation, no schedule,
batches taken in stored order (`bix = step * 100 % 4000`), and PyTorch's default initialisation.

The last two are the paper's too and they matter: over seeds 0-4, the CNN's mean test accuracy is
92.6% with shuffled batches and Flax's initialisation, 93.3% with the paper's (benchmarks/README.md).
"""

from train import config as config_lib


def recipe(model: dict, torch_init: bool = True) -> "config_lib.mlc.ConfigDict":
  c = config_lib.base()
  c.data.source = "mnist1d"
  c.data.batch_size = 100
  c.data.sampler = "sequential"
  c.model = dict(model, weight_init="torch") if torch_init else dict(model)
  c.optim.name = "adam"
  c.optim.learning_rate = 1e-2
  c.train.steps = 8000
  c.train.log_every = 1000
  c.train.eval_every = 2000
  c.train.checkpoint_every = 4000
  return c


def experiment(name: str, model: dict, arg: str | None, tiny_model: dict | None = None,
               torch_init: bool = True):
  """The locked config of a paper model under `recipe`; `arg="tiny"` shrinks it to a smoke run
  (`tiny_model` overrides model fields, `config.tiny` the schedule)."""
  c = recipe(model, torch_init)
  c.data.eval_batch_size = 500
  if arg == "tiny":
    c.data.eval_batch_size = 100
    c.model.update(tiny_model or {})
    config_lib.tiny(c)
  elif arg:
    raise config_lib.unknown_arg(name, arg)
  return config_lib.lock(c)
