"""The shared recipe of the character-level language models: next-byte prediction on CPython's
`pydoc_data.topics` (the offline `pydoc_text` source, 90/5/5 split by position; vocabulary the
128 ASCII byte values), windows of 128 bytes, batch 32, AdamW 2e-3 with 100 warm-up steps and a
cosine decay, gradient clipping at 1, 2,000 steps (about 0.6 epochs) whatever the model.
"""

from train import config as config_lib

SEQ_LEN = 128
VOCAB = 128

ARGS = ("tiny",)  # the experiment arguments (besides none)


def experiment(name: str, model: dict, arg: str | None, tiny_model: dict | None = None):
  c = config_lib.base()
  c.data.source = "pydoc_text"
  c.data.seq_len = SEQ_LEN
  c.data.batch_size = 32
  c.data.eval_batch_size = 64
  c.data.eval_split = "validation"
  c.model = model
  c.optim.name = "adamw"
  c.optim.learning_rate = 2e-3
  c.optim.schedule = "warmup_cosine"
  c.optim.warmup_steps = 100
  c.optim.end_lr_factor = 0.05
  c.optim.weight_decay = 0.01
  c.optim.clip_norm = 1.0
  c.train.steps = 2000
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.checkpoint_every = 1000
  if arg == "tiny":
    c.data.seq_len = 16
    c.data.batch_size = 4
    c.model.update(tiny_model or {})
    config_lib.tiny(c)
  elif arg:
    raise config_lib.unknown_arg(name, arg, ARGS)
  return config_lib.lock(c)
