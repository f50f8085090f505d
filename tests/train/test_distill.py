"""Distillation: the soft loss against NumPy, consistent teaching, frozen teachers that are not
checkpointed, and clear errors."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import load_experiment
from train import checkpoint, distill, paradigms
from train.errors import ConfigError


def test_soft_loss_against_numpy():
  rng = np.random.default_rng(0)
  s, t, temp = rng.normal(size=(6, 5)) * 3, rng.normal(size=(6, 5)) * 3, 2.5

  def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)

  p, q = softmax(t / temp), softmax(s / temp)
  want = np.sum(p * np.log(p / q), -1)
  scaled, kl = distill.loss(jnp.asarray(s, jnp.float32), jnp.asarray(p, jnp.float32), temp)
  np.testing.assert_allclose(kl, want, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(scaled, temp ** 2 * want, rtol=1e-4, atol=1e-5)


def _student(teacher, data_dir, **distill_fields):
  c = load_experiment("mnist1d_cnn", "tiny", data_dir)
  with c.unlocked():
    c.distill.teachers = (teacher,)
    for k, v in distill_fields.items():
      c.distill[k] = v
  return c


def test_teacher_sees_the_students_mixed_batch(trained, data_dir):
  """A student holding the teacher's own weights, trained with mixup inside the step: the KL
  between them is zero only when the teacher runs on the mixed inputs the student sees."""
  teacher = trained("mnist1d_cnn")
  config = _student(teacher, data_dir, temperature=2.0)
  with config.unlocked():
    config.supervised.mixup = 0.4
  model, tree, _, _ = checkpoint.load_workdir(teacher)
  made = paradigms.get("supervised").make(model, config, total_steps=10)
  x = np.random.default_rng(0).normal(size=(16, 40)).astype(np.float32)
  batch = {"inputs": x, "label": np.arange(16) % 10, "mask": np.ones(16, np.float32)}
  state = made.init(jax.random.key(0), batch)
  state = state.replace(params=jax.tree_util.tree_map(jnp.asarray, tree["params"]))
  _, metrics = jax.jit(made.train_step)(state, batch, jax.random.key(1))
  assert float(metrics["distill_kl"]) < 1e-6
  assert 0.0 <= float(metrics["teacher_accuracy"]) <= 1.0
  # the metric is live: another student's KL to the same teacher is not zero
  other = made.init(jax.random.key(5), batch)
  _, metrics = jax.jit(made.train_step)(other, batch, jax.random.key(1))
  assert float(metrics["distill_kl"]) > 1e-3


@pytest.mark.slow  # a full tiny training with a teacher, then a restore
def test_distilled_run_checkpoints_the_student_only(trained, data_dir, tmp_path):
  from train import loop

  teacher = trained("mnist1d_cnn")
  config = _student(teacher, data_dir, temperature=4.0, label_weight=0.5)
  workdir = str(tmp_path / "student")
  loop.train_and_evaluate(config, workdir)
  _, student_tree, _, _ = checkpoint.load_workdir(workdir)
  _, teacher_tree, _, _ = checkpoint.load_workdir(teacher)
  shapes = lambda t: jax.tree_util.tree_map(np.shape, t["params"])  # noqa: E731
  assert shapes(student_tree) == shapes(teacher_tree)  # no teacher copy beside the student
  assert not any("teacher" in k for k in student_tree)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    text = f.read()
  assert '"distill_kl"' in text and '"teacher_accuracy"' in text
  # the student is evaluated alone: restoring it needs no teacher
  from eval import restore
  os.rename(teacher, teacher + ".moved")
  try:
    run = restore.restore(workdir)
    assert run.predict(np.zeros((3, 40), np.float32)).shape == (3, 10)
  finally:
    os.rename(teacher + ".moved", teacher)


@pytest.mark.parametrize("field, value, message", [
    ("teachers", ("",), "expected a tuple of workdirs"),
    ("temperature", 0.0, "distill.temperature=0.0"),
    ("label_weight", 1.5, "distill.label_weight=1.5"),
])
def test_bad_fields_are_named(field, value, message, data_dir):
  from train import config as config_lib

  c = load_experiment("mnist1d_cnn", "tiny", data_dir)
  with c.unlocked():
    c.distill[field] = value
  with pytest.raises(ConfigError, match=message):
    config_lib.validate(c)


def test_a_teacher_of_another_source_is_refused(trained, data_dir):
  config = _student(trained("digits_cnn"), data_dir)
  model, _, _, _ = checkpoint.load_workdir(trained("mnist1d_cnn"))
  with pytest.raises(ConfigError, match="trained on data.source='digits'"):
    paradigms.get("supervised").make(model, config, total_steps=10)
