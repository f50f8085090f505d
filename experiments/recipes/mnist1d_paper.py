"""The MNIST-1D paper's training recipe (Greydanus 2020, the mnist1d package's `train.py`):
the frozen 4,000/1,000 split, Adam 1e-2, batch 100, 8,000 steps, no augmentation, no schedule,
batches taken in stored order (`bix = step * 100 % 4000`), and PyTorch's default initialisation.

The last two are the paper's too and they matter: over seeds 0-4, the CNN's mean test accuracy is
92.6% with shuffled batches and Flax's initialisation, 93.3% with the paper's (benchmarks/README.md).
"""

from train import config as config_lib

ARGS = ("tiny", "augmented")  # the experiment arguments (besides none)


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


def augmented(c: "config_lib.mlc.ConfigDict") -> None:
  """Beyond the paper: the same model, Adam at 1e-2, batch 100 and 8,000 steps, with the learning
  rate decayed to zero on a cosine and every training signal shifted by up to 3 samples. Chosen
  for each of the CNN, MLP and GRU among {constant, cosine} x {shift 0, 3} by accuracy on a
  3,500/500 split of the train set (`data.train_split="train[:3500]"`,
  `data.eval_split="train[3500:]"`), not on the test set (README, "Beyond the paper's recipe")."""
  c.optim.schedule = "cosine"
  c.data.augment.shift = 3


def experiment(name: str, model: dict, arg: str | None, tiny_model: dict | None = None,
               torch_init: bool = True):
  """The locked config of a paper model under `recipe`; `arg="tiny"` shrinks it to a smoke run
  (`tiny_model` overrides model fields, `config.tiny` the schedule); `arg="augmented"` trains it
  under `augmented`, beyond the paper's recipe."""
  c = recipe(model, torch_init)
  c.data.eval_batch_size = 500
  if arg == "tiny":
    c.data.eval_batch_size = 100
    c.model.update(tiny_model or {})
    config_lib.tiny(c)
  elif arg == "augmented":
    augmented(c)
  elif arg:
    raise config_lib.unknown_arg(name, arg, ARGS)
  return config_lib.lock(c)
