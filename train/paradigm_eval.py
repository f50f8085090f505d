"""The built-in "paradigm" evaluator outside the training loop: the paradigm's own `eval_step`
summed over a split, as the loop streams it for `data.eval_split` and `config.evals` of type
"paradigm" (same pipeline, same keys, same reduction), for a restored run.

    evaluator = ParadigmEval("test", ml_collections.ConfigDict({"split": "test"}), restored)
    evaluator(restored.state)   # {"accuracy": ..., "loss": ...} or {"bits_per_token": ...}

What it returns is the paradigm's: accuracy and loss (NLL) of a classifier, bits per token of a
language model, loss, MSE or the ELBO's terms of an autoencoder or VAE, the denoising loss of
diffusion. `train.evaluators.build` makes one for a section of that type; the evaluation tools
(`eval.evaluate`, `eval.lm`, `eval.reconstruction`) call it.
"""

from __future__ import annotations

from typing import Any

import jax

import data as data_lib
from train import evaluators, loop, parallel
from train import run as run_lib


def training_stats(config: Any) -> Any:
  """The normalisation statistics of the run's data (those its evaluations are normalised with),
  or None for data that are not normalised."""
  return data_lib.build_pipeline(config.data, config.data.eval_split, train=False,
                                 seed=config.seed).stats


class ParadigmEval:
  """The evaluator (see the module docstring): `ParadigmEval(name, section, run)(state)`.

  `section` holds `split` (default data.eval_split), `source` and `batch_size` (default
  data.eval_batch_size); `run` anything with `.config` and `.paradigm`; `stats` the training
  data's normalisation when the caller has it (else computed once here)."""

  def __init__(self, name: str, section: Any, run: Any, stats: Any = None):
    s = dict(evaluators.fields(name, section, evaluators.PARADIGM_FIELDS))
    config = run.config
    s["split"] = s.get("split") or config.data.eval_split
    self.split = s["split"]
    stats = training_stats(config) if stats is None else stats
    self.pipeline = run_lib.eval_pipeline(config, s, stats)
    self.sharding = parallel.batch_sharding(parallel.make_mesh(config.mesh))
    self.rng = run_lib.keys(config)[1]
    self._step = jax.jit(run.paradigm.eval_step)

  def __call__(self, state: Any) -> dict[str, float]:
    return loop.evaluate(self._step, state, self.pipeline, self.sharding, self.rng)
