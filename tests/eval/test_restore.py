"""eval.restore: the one path from a workdir to (config, model, paradigm, state) that every
evaluation tool takes."""

import jax
import numpy as np
import pytest

import data as data_lib
from eval import restore
from train import checkpoint
from train import config as config_lib


def test_predictions_go_through_the_paradigm_and_equal_the_model(trained):
  workdir = trained("digits_cnn")
  run = restore.restore(workdir)
  x, labels, _ = run.split("test")
  np.testing.assert_array_equal(x, data_lib.split_arrays(run.config.data, "test",
                                                        run.config.seed)[0])
  model, tree, _, step = checkpoint.load_workdir(workdir)
  direct = model.apply({"params": tree["params"], **(tree.get("model_state") or {})}, x[:50],
                       train=False)
  np.testing.assert_allclose(run.predict(x[:50], batch_size=16), np.asarray(direct), rtol=1e-5,
                             atol=1e-5)
  assert run.step == step and run.config.paradigm == "supervised"
  assert int(jax.device_get(run.state.step)) == step


def test_overrides_and_the_paradigm_are_checked(trained):
  workdir = trained("digits_cnn")
  assert restore.restore(workdir, {"report.bins": "7"}).config.report.bins == 7
  with pytest.raises(config_lib.FlagError, match=r"'report.binz'; did you mean report.bins"):
    restore.restore(workdir, {"report.binz": "7"})
  with pytest.raises(ValueError, match=r"paradigm='supervised' run; expected "
                     r"paradigm='reconstruction'"):
    restore.restore(workdir, paradigm="reconstruction")


def test_a_run_that_makes_no_predictions_says_so(trained):
  run = restore.restore(trained("digits_dcgan"))
  with pytest.raises(ValueError, match="paradigm='adversarial' run, which makes no predictions"):
    run.predict(np.zeros((2, 8, 8, 1), np.float32))


def test_a_run_saved_before_newer_fields_restores_with_their_defaults(trained, tmp_path):
  import json
  import shutil

  old = str(tmp_path / "old")
  shutil.copytree(trained("mnist1d_cnn"), old)
  path = f"{old}/config.json"
  saved = json.load(open(path))
  for field in ("eval_workers", "label_noise", "exclude_examples"):
    del saved["data"][field]
  del saved["distill"]
  saved["model"]["features"] = [4, 4, 4]  # free-form sections stay as saved
  json.dump(saved, open(path, "w"))
  run = restore.restore(old)
  assert run.config.data.eval_workers == -1 and run.config.data.label_noise.rate == 0.0
  assert tuple(run.config.distill.teachers) == ()
  assert set(run.config.model) == set(saved["model"])
  assert run.predict(np.zeros((2, 40), np.float32)).shape == (2, 10)
