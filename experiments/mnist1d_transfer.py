"""Transfer on MNIST-1D with the paper's CNN: pretrain on digits 0-4, then learn digits 5-9 from
10% of the training split (about 200 labelled examples), against training from scratch.

  python -m train --config experiments/mnist1d_transfer.py:pretrain --workdir runs/mnist1d_transfer_pretrain
  python -m train --config experiments/mnist1d_transfer.py:scratch --workdir runs/mnist1d_transfer_scratch
  python -m train --config experiments/mnist1d_transfer.py:probe --workdir runs/mnist1d_transfer_probe
  python -m train --config experiments/mnist1d_transfer.py:finetune --workdir runs/mnist1d_transfer_finetune
  python -m train --config experiments/mnist1d_transfer.py:drift --workdir runs/mnist1d_transfer_drift

- pretrain: classes 0-4, the whole training split, the paper's recipe (Adam 1e-2, batch 100,
  8,000 steps).
- scratch: classes 5-9, `train[:10%]`, 2,000 steps, random initialisation.
- probe: the same, starting from the pretrained convolutions (`init_from.include`) and keeping
  them fixed (`optim.freeze`): only the head learns, a linear probe of the pretrained features.
- finetune: the same start, every layer trained, at a tenth of the learning rate.
- drift: domain shift. The paper's CNN trained on MNIST-1D (`runs/mnist1d_cnn`, every parameter)
  adapted to `mnist1d_drift` (stronger noise and shear, all ten classes) from 10% of its training
  labels: Adam 1e-4 for 100 steps, chosen by a sweep of learning rate (1e-4..1e-3) and steps
  (100..2,000) scored on `train[50%:]` of the drifted set, which the run does not train on
  (longer or faster fine-tuning overfits the 400 examples and ends below the unadapted model).

`probe` and `finetune` read `init_from.workdir` (default runs/mnist1d_transfer_pretrain; set
`--config.init_from.workdir=DIR` for another). Labels stay 0-9 (one 10-way head throughout).
"""

from experiments.recipes.mnist1d_paper import recipe
from train import config as config_lib

ARGS = ("pretrain", "scratch", "probe", "finetune", "drift", "tiny")


def get_config(arg: str | None = None):
  arg = arg or "pretrain"
  if arg not in ARGS:
    raise config_lib.unknown_arg("mnist1d_transfer", arg, ARGS)
  model = dict(name="cnn.CNN", num_classes=10, features=(25, 25, 25), kernel_sizes=(5, 3, 3),
               strides=2, padding=1, ndim=1)
  c = recipe(model)
  c.data.eval_batch_size = 500
  if arg == "drift":
    c.data.source = "mnist1d_drift"
    c.data.train_split = "train[:10%]"
    c.init_from.workdir = "runs/mnist1d_cnn"
    c.optim.learning_rate = 1e-4
    c.train.steps = 100
    c.train.eval_every = c.train.checkpoint_every = 0
    return config_lib.lock(c)
  if arg in ("pretrain", "tiny"):
    c.data.keep_classes = (0, 1, 2, 3, 4)
  else:
    c.data.keep_classes = (5, 6, 7, 8, 9)
    c.data.train_split = "train[:10%]"
    c.train.steps = 2000
    c.train.eval_every = 500
    c.train.checkpoint_every = 1000
  if arg in ("probe", "finetune"):
    c.init_from.workdir = "runs/mnist1d_transfer_pretrain"
    c.init_from.include = ("^conv",)
  if arg == "probe":
    c.optim.freeze = ("^conv",)
  if arg == "finetune":
    c.optim.learning_rate = 1e-3
  if arg == "tiny":
    c.model.features = (4, 4, 4)
    config_lib.tiny(c)
  return config_lib.lock(c)
