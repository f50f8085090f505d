# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A tour of one run
#
# Build an experiment, look at a batch, train a few steps, restore the run and plot its
# curves, then look at the parameters and how they are sharded over a mesh. About a minute on a
# laptop's CPU. This file is a notebook in jupytext's text form:
#
# ```
# pip install -e '.[notebook]'
# jupytext --to notebook docs/notebooks/tour.py   # then open tour.ipynb in Jupyter
# python docs/notebooks/tour.py                   # or run it as a script
# ```
#
# `tests/docs/test_notebook.py` executes it with nbclient (the slow set).

# %%
import os
import tempfile

# Four CPU devices, so that the last section can shard over a mesh: set before JAX starts.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import matplotlib.pyplot as plt
import numpy as np

from train import config as config_lib
from train import loop, metric_writer, optim, parallel, restored

WORKDIR = tempfile.mkdtemp(prefix="strata-tour-")
print(jax.devices())

# %% [markdown]
# ## Build an experiment
#
# An experiment file returns a locked `ml_collections.ConfigDict`: an unknown field or a value
# of the wrong type is an error. `:tiny` is every experiment's smoke mode. Fields are set as
# `--config.SECTION.FIELD=VALUE` on the command line, or here directly.

# %%
config = config_lib.load("experiments.mnist1d_cnn:tiny")
config.train.steps = 200
config.train.log_every = 20
config.train.eval_every = 100
config.mesh.fsdp = 2  # two of the four devices split each parameter, two split the batch
if os.environ.get("STRATA_DATA_DIR"):  # the test's data folder; else ~/tensorflow_datasets
  config.data.data_dir = os.environ["STRATA_DATA_DIR"]
print(config.model)
print(config.optim.name, config.optim.learning_rate, config.optim.schedule)

# %% [markdown]
# ## Look at a batch
#
# `loop.build` validates the config and builds everything a run computes with (mesh, pipelines,
# model, paradigm, jitted steps); nothing is compiled or written yet.

# %%
run = loop.build(config)
batch = next(run.train_pipe.iterator())
print({k: (v.shape, v.dtype) for k, v in batch.items()})
fig, axes = plt.subplots(2, 4, figsize=(10, 3.5), sharex=True)
for ax, x, y in zip(axes.flat, batch["inputs"], batch["label"]):
  ax.plot(np.asarray(x))
  ax.set_title(f"label {int(y)}")
fig.tight_layout()

# %% [markdown]
# ## Train a few steps
#
# The same call `python -m train` makes: checkpoints, metrics.jsonl, TensorBoard events and the
# lineage go to the workdir; the same call again resumes.

# %%
final = loop.train_and_evaluate(config, WORKDIR)
print(final)
print(sorted(os.listdir(WORKDIR)))

# %% [markdown]
# ## Restore the run and plot its curves
#
# `restored.restore` is what every evaluation tool uses: the saved config, the model, the
# paradigm and the checkpoint's state. The curves come from metrics.jsonl, the record of truth.

# %%
run_back = restored.restore(WORKDIR)
train_records = metric_writer.read_metrics(WORKDIR, "train")
eval_records = metric_writer.read_metrics(WORKDIR, "eval")
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
left.plot([r["step"] for r in train_records], [r["loss"] for r in train_records], label="train")
left.plot([r["step"] for r in eval_records], [r["loss"] for r in eval_records], "o-", label="eval")
left.set(xlabel="step", ylabel="loss")
left.legend()
right.plot([r["step"] for r in train_records], [r["accuracy"] for r in train_records])
right.set(xlabel="step", ylabel="train accuracy")
fig.tight_layout()
x, labels, _ = run_back.split("test")
accuracy = float((run_back.predict(x).argmax(-1) == labels).mean())
print(f"step {run_back.step}: test accuracy {accuracy:.4f} "
      f"(the run's own: {final['accuracy']:.4f})")

# %% [markdown]
# ## Parameters and their sharding
#
# Each parameter's shape, size and `PartitionSpec` over the run's `(data, fsdp, tensor)` mesh.
# FSDP splits arrays of at least `parallel.FSDP_MIN_SIZE` elements along one dimension over the
# `fsdp` axis and replicates the rest (`docs/pods.md`); the tiny CNN has none that large, so
# this looks at the same CNN with 64 channels, built (not trained) with the same mesh.

# %%
wide = config_lib.load("experiments.mnist1d_cnn:tiny")
wide.mesh.fsdp = 2
wide.model.features = (64, 64, 64)
if os.environ.get("STRATA_DATA_DIR"):
  wide.data.data_dir = os.environ["STRATA_DATA_DIR"]
wide_run = loop.build(wide)
print(wide_run.mesh)
paths = jax.tree_util.tree_flatten_with_path(wide_run.abstract.params)[0]
for path, leaf in paths:
  print(f"{optim.path_name(path):14s} {str(leaf.shape):14s} {int(np.prod(leaf.shape)):6d} "
        f"{leaf.sharding.spec}")
sharded = sum(int(np.prod(leaf.shape)) for _, leaf in paths if any(leaf.sharding.spec))
total = sum(int(np.prod(leaf.shape)) for _, leaf in paths)
print(f"{total} parameters, {sharded} of them split over fsdp; one device holds "
      f"{parallel.device_bytes(wide_run.abstract.params)} of their {4 * total} bytes")
