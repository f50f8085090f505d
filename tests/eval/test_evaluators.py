"""The evaluator interface (train/evaluators.py): a few-shot linear probe and the Frechet
distance tracked during training under their names, and the same numbers from
`python -m eval.evaluate` on the saved checkpoint; the probe's closed form against scikit-learn."""

import json
import os

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from eval import evaluate as evaluate_lib
from eval import fewshot
from tests.conftest import load_experiment
from train import config as config_lib
from train import loop
from train.errors import ConfigError


def _records(workdir, split):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["split"] == split]


def test_ridge_probe_equals_scikit_learns_ridge_on_standardised_features():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(40, 7)), rng.integers(0, 4, 40)
  x_test, y_test = rng.normal(size=(25, 7)), rng.integers(0, 4, 25)
  mean, std = x.mean(0), x.std(0) + 1e-5
  targets = 2.0 * np.eye(4)[y] - 1.0
  reference = Ridge(alpha=3.0, fit_intercept=False).fit((x - mean) / std, targets)
  want = np.mean(reference.predict((x_test - mean) / std).argmax(1) == y_test)
  assert fewshot.ridge_accuracy(x, y, x_test, y_test, 3.0, 4) == pytest.approx(want)
  # separable features: the probe finds them
  x_sep = np.eye(4)[y] * 5 + rng.normal(size=(40, 4)) * 0.1
  assert fewshot.ridge_accuracy(x_sep, y, x_sep, y, 1.0, 4) == 1.0


def test_shots_are_k_per_class_seeded_and_too_many_are_refused():
  labels = np.array([0, 1, 2] * 5 + [2])
  picked = fewshot.pick_shots(labels, 3, seed=1)
  assert np.bincount(labels[picked]).tolist() == [3, 3, 3]
  assert picked.tolist() == fewshot.pick_shots(labels, 3, seed=1).tolist()
  assert picked.tolist() != fewshot.pick_shots(labels, 3, seed=2).tolist()
  with pytest.raises(ConfigError, match=r"shots=6: classes \[0, 1\] have fewer"):
    fewshot.pick_shots(labels, 6, seed=0)


def test_a_classifier_tracks_a_10_shot_probe_and_the_tool_gives_the_same_number(
    data_dir, tmp_path):
  c = load_experiment("mnist1d_cnn", "tiny", data_dir)
  with c.unlocked():
    c.evals.probe = dict(type="fewshot", every=10, shots=(10,), l2_reg=1.0)
    c.evals.again = dict(split="test", batch_size=250)  # the paradigm's own, another batching
  loop.train_and_evaluate(c, str(tmp_path))
  probes = _records(str(tmp_path), "probe")
  assert [r["step"] for r in probes] == [10, 20]
  assert 0.0 < probes[-1]["accuracy_10shot"] <= 1.0
  step, results = evaluate_lib.evaluate(str(tmp_path))
  assert step == 20
  assert results["probe"]["accuracy_10shot"] == probes[-1]["accuracy_10shot"]
  again = _records(str(tmp_path), "again")[-1]
  assert results["again"] == pytest.approx({k: again[k] for k in ("accuracy", "loss", "count")},
                                           rel=1e-6)
  # another setting, on the saved checkpoint, without retraining
  _, other = evaluate_lib.evaluate(str(tmp_path), ["probe"],
                                   overrides={"evals.probe.shots": "(1, 10)"})
  assert set(other["probe"]) == {"accuracy_1shot", "accuracy_10shot"}


def test_a_gan_tracks_its_frechet_distance_and_the_tool_gives_the_same_number(
    trained, data_dir, tmp_path):
  reference = trained("digits_cnn")
  c = load_experiment("digits_dcgan", "tiny", data_dir)
  with c.unlocked():
    c.evals.fid = dict(type="frechet", reference=reference, samples=64)
    c.train.steps, c.train.eval_every, c.train.checkpoint_every = 6, 0, 0  # all at the end
    c.generative.grid_samples = 0
  loop.train_and_evaluate(c, str(tmp_path))
  fid = _records(str(tmp_path), "fid")
  assert [r["step"] for r in fid] == [c.train.steps] and fid[0]["frechet_distance"] > 0
  _, results = evaluate_lib.evaluate(str(tmp_path), ["fid"])
  assert results["fid"]["frechet_distance"] == pytest.approx(fid[0]["frechet_distance"],
                                                             rel=1e-9)


def test_evaluator_settings_never_block_a_resume(data_dir, tmp_path):
  c = load_experiment("mnist1d_mlp", "tiny", data_dir)
  loop.train_and_evaluate(c, str(tmp_path))
  with c.unlocked():
    c.train.steps = 30
    c.evals.probe = dict(type="fewshot", shots=(5,))
  loop.train_and_evaluate(c, str(tmp_path))  # resumes from step 20: no "different config"
  assert [r["step"] for r in _records(str(tmp_path), "probe")] == [30]


@pytest.mark.parametrize("section,message", [
    (dict(type="fid"), r"evals.x.type='fid'; expected one of \['paradigm', 'classification', "),
    (dict(type="fewshot", shot=3), r"evals.x \(type 'fewshot'\) has field\(s\) \['shot'\]"),
    (dict(type="fewshot", every=-2), r"evals.x.every=-2; expected an integer >= 0"),
    (dict(type="frechet"), r"evals.x.type='frechet' scores samples; paradigm='supervised'"),
])
def test_bad_evaluators_are_refused_before_the_first_step(section, message, data_dir, tmp_path):
  c = load_experiment("mnist1d_mlp", "tiny", data_dir)
  with c.unlocked():
    c.evals.x = section
  with pytest.raises(ConfigError, match=message):
    config_lib.validate(c)
    loop.prepare(c)
  assert not os.path.exists(tmp_path / "run")


def test_classification_evaluator_equals_scikit_learn_on_a_restored_run(trained):
  from sklearn.metrics import accuracy_score, log_loss

  from eval import calibration, restore
  from train import evaluators

  run = restore.restore(trained("mnist1d_cnn"))
  section = config_lib.base().evals  # an empty ConfigDict to fill
  with section.unlocked():
    section.c = dict(type="classification", bins=10)
  got = evaluators.build("c", section.c, run)(run.state)
  x, y, _ = run.split(run.config.data.eval_split)
  probs = calibration.softmax(run.predict(x))
  assert got["accuracy"] == pytest.approx(accuracy_score(y, probs.argmax(-1)))
  assert got["nll"] == pytest.approx(log_loss(y, probs, labels=range(10)), rel=1e-6)
  assert got["ece"] == pytest.approx(calibration.ece(probs, y, 10))


def test_forecast_evaluator_gives_eval_forecasts_numbers(trained):
  from data import series
  from eval import forecast, restore
  from train import evaluators

  workdir = trained("series_mlp")
  run = restore.restore(workdir)
  section = config_lib.base().evals
  with section.unlocked():
    section.f = dict(type="forecast")
  got = evaluators.build("f", section.f, run)(run.state)
  args = forecast.series_args(run.config)  # the forecasts again, from the restored run's predict
  test = series.windows(args).examples("test")
  forecasts = test["level"][:, None] + test["scale"][:, None] * run.predict(test["context"])
  want = forecast.scores(args, forecasts)
  assert got["mase"] == pytest.approx(np.mean(want["mase"]))
  assert got["mase_H"] == pytest.approx(want["mase"][-1])
  assert got["smape"] == pytest.approx(np.mean(want["smape"]))


@pytest.mark.slow  # a fresh interpreter: 10 s of imports and compiling
def test_the_command_line_tool_prints_the_numbers_the_run_recorded(data_dir, tmp_path):
  import subprocess
  import sys

  from tests.conftest import ROOT

  c = load_experiment("mnist1d_cnn", "tiny", data_dir)
  with c.unlocked():
    c.evals.probe = dict(type="fewshot", shots=(5,))
    c.evals.calib = dict(type="classification", bins=10)
  loop.train_and_evaluate(c, str(tmp_path))
  r = subprocess.run([sys.executable, "-m", "eval.evaluate", "--workdir", str(tmp_path)],
                     cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  printed = {row["split"]: row for row in map(json.loads, r.stdout.strip().splitlines())}
  for name in ("probe", "calib"):
    recorded = _records(str(tmp_path), name)[-1]
    assert printed[name].pop("split") == recorded.pop("split") == name
    assert printed[name] == pytest.approx(recorded, rel=1e-6), name
  bad = subprocess.run([sys.executable, "-m", "eval.evaluate", "--workdir", str(tmp_path),
                        "--evals", "nope"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
  assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith(
      "error: --evals=nope:")
