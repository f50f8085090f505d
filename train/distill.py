"""Knowledge distillation for the supervised paradigm (Hinton et al. 2015; Beyer et al. 2022).

`distill.teachers` names trained classifier workdirs (one, or several averaged in probability:
an ensemble teacher). Inside the jitted train step the teachers run on the very batch the student
sees, after augmentation and mixing ("consistent teaching", Beyer et al.), with their parameters
frozen: they are constants of the step, not part of the train state, so they are neither
updated nor checkpointed with the student (a resumed run restores them from their workdirs
again). The student's loss per example is

    label_weight * CE(labels, student) + (1 - label_weight) * T^2 * KL(p_T || q_T)

with p_T = mean_k softmax(teacher_k / T) and q_T = softmax(student / T); T^2 keeps the soft
term's gradients on the scale of the hard one's as T grows (Hinton et al.). The step also
reports `distill_kl` (the KL at temperature T, nats) and `teacher_accuracy` on the batch.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections as mlc

from train import checkpoint
from train.errors import ConfigError, check_positive


def defaults() -> mlc.ConfigDict:
  d = mlc.ConfigDict()
  d.teachers = ()                 # trained classifier workdirs; () = no distillation
  d.temperature = 1.0             # T of the softened teacher and student distributions
  d.label_weight = 0.0            # weight of the hard-label cross-entropy (0: teachers only)
  return d


def validate(config: Any) -> None:
  """Checks the `distill` section. Raises ConfigError naming field and value."""
  d = config.distill
  if isinstance(d.teachers, str) or not all(isinstance(t, str) and t for t in d.teachers):
    raise ConfigError(f"distill.teachers={d.teachers!r}; expected a tuple of workdirs, e.g. "
                      "('runs/teacher',)")
  check_positive(d.temperature, "distill.temperature")
  if not 0.0 <= d.label_weight <= 1.0:
    raise ConfigError(f"distill.label_weight={d.label_weight}; expected a weight in [0, 1]")
  if d.teachers and (config.supervised.loss != "cross_entropy" or config.data.seq_len > 0):
    raise ConfigError(f"distill.teachers={tuple(d.teachers)} teaches a classifier: expected "
                      "supervised.loss='cross_entropy' and data.seq_len=0")


def load_teachers(config: Any, num_classes: int) -> Callable[[jax.Array], jax.Array]:
  """The teachers of `config.distill` as one function inputs (B, ...) -> averaged probabilities
  (B, C) at temperature T, float32, the teachers' variables bound as constants.

  Raises:
    ConfigError: a teacher trained on another source or with another number of classes.
    CheckpointError: a teacher workdir holds no restorable checkpoint.
  """
  temperature = float(config.distill.temperature)
  applies = []
  for workdir in config.distill.teachers:
    model, tree, teacher_config, _ = checkpoint.load_workdir(workdir)
    source = teacher_config["data"]["source"]
    if source != config.data.source:
      raise ConfigError(f"distill.teachers: {workdir} was trained on data.source={source!r}; "
                        f"the student's is {config.data.source!r}")
    normalize = teacher_config["data"].get("normalize")
    if normalize != config.data.normalize:
      raise ConfigError(f"distill.teachers: {workdir} was trained with data.normalize="
                        f"{normalize!r}; the student's is {config.data.normalize!r}, so the "
                        "teacher would see inputs on another scale")
    classes = int(getattr(model, "num_classes", 0) or 0)
    if classes != num_classes:
      raise ConfigError(f"distill.teachers: {workdir} has {classes} classes; the student has "
                        f"{num_classes}")
    variables = {"params": tree["params"], **dict(tree.get("model_state") or {})}
    variables = jax.tree_util.tree_map(jnp.asarray, variables)
    applies.append((model, variables))

  def probs(inputs: jax.Array) -> jax.Array:
    p = [jax.nn.softmax(m.apply(v, inputs, train=False).astype(jnp.float32) / temperature)
         for m, v in applies]
    return jax.lax.stop_gradient(sum(p) / len(p))

  return probs


def loss(student_logits: jax.Array, teacher_probs: jax.Array, temperature: float
         ) -> tuple[jax.Array, jax.Array]:
  """(T^2 KL(p_T || q_T), KL(p_T || q_T)) per example (B,), nats, for the student's logits and
  the teachers' probabilities at temperature T."""
  log_q = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature)
  p = teacher_probs
  kl = jnp.sum(jnp.where(p > 0, p * (jnp.log(jnp.where(p > 0, p, 1.0)) - log_q), 0.0), -1)
  return temperature ** 2 * kl, kl
