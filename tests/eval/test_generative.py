"""Generative metrics against float64 SciPy/NumPy references and closed forms."""

import os

import numpy as np
import pytest
import scipy.linalg
import scipy.stats

from eval import generative as gen
from eval import sample_quality as sq


def _reference_fid(mu1, s1, mu2, s2):
  """The TTUR / pytorch-fid formula: sqrtm of the product, imaginary rounding dropped."""
  covmean = scipy.linalg.sqrtm(s1 @ s2).real
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


def test_frechet_distance_matches_the_scipy_reference():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
  b = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6)) + 0.5
  got = sq.frechet_distance_of(a, b)
  want = _reference_fid(*sq.feature_statistics(a), *sq.feature_statistics(b))
  assert got == pytest.approx(want, rel=1e-9)
  np.testing.assert_allclose(sq.feature_statistics(a)[1], np.cov(a.T), rtol=1e-12)


def test_frechet_distance_closed_forms():
  rng = np.random.default_rng(1)
  a = rng.normal(size=(300, 4))
  assert sq.frechet_distance_of(a, a) == pytest.approx(0.0, abs=1e-9)
  # Two isotropic Gaussians: |mu1 - mu2|^2 + D (s1 - s2)^2.
  eye = np.eye(4)
  assert sq.frechet_distance(np.zeros(4), 4 * eye, np.ones(4), eye) == pytest.approx(4 + 4)
  with pytest.raises(ValueError, match=r"statistics of different sizes"):
    sq.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
  with pytest.raises(ValueError, match=r"features of shape \(5,\): expected \(N, D\)"):
    sq.feature_statistics(np.zeros(5))


def test_class_coverage():
  labels = np.array([0] * 50 + [1] * 46 + [2] * 4)
  c = sq.class_coverage(labels, 10)
  assert c["covered"] == [0, 1] and c["num_covered"] == 2
  assert c["entropy"] == pytest.approx(scipy.stats.entropy([50, 46, 4]))
  assert sq.class_coverage(np.arange(100) % 10, 10)["entropy"] == pytest.approx(np.log(10))
  with pytest.raises(ValueError, match=r"predicted labels span \[0, 10\]"):
    sq.class_coverage(np.array([0, 10]), 10)


def test_knn_precision_recall():
  rng = np.random.default_rng(2)
  real = rng.normal(size=(200, 3))
  same = sq.knn_precision_recall(real, real.copy())
  assert same == {"precision": 1.0, "recall": 1.0}
  far = sq.knn_precision_recall(real, real + 100.0)
  assert far == {"precision": 0.0, "recall": 0.0}
  # Generated samples on a quarter of the real support: precise, low recall.
  mode = real[real[:, 0] > 0.67] + 0.01
  pr = sq.knn_precision_recall(real, mode)
  assert pr["precision"] > 0.9 and pr["recall"] < 0.5
  # Precision by brute force.
  fake = rng.normal(size=(50, 3)) * 2
  radii = np.array([np.sort(np.linalg.norm(real - r, axis=1))[3] for r in real])
  inside = [(np.linalg.norm(real - f, axis=1) <= radii).any() for f in fake]
  assert sq.knn_precision_recall(real, fake)["precision"] == pytest.approx(np.mean(inside))


def test_gaussian_baseline_matches_the_training_moments():
  rng = np.random.default_rng(3)
  train = (rng.normal(size=(2000, 2, 2)) * [[1.0, 2.0], [0.5, 1.0]] + 3.0).astype(np.float32)
  samples = sq.gaussian_baseline(train, 20000)
  assert samples.shape == (20000, 2, 2) and samples.dtype == np.float32
  np.testing.assert_allclose(samples.mean(0), train.mean(0), atol=0.05)
  np.testing.assert_allclose(np.cov(samples.reshape(20000, -1).T),
                             np.cov(train.reshape(2000, -1).T), atol=0.06)


def test_reference_features_are_the_classifiers_penultimate_activations(trained):
  import jax
  import ml_collections as mlc

  from data import split_arrays
  from train import checkpoint

  workdir = trained("digits_cnn")
  ref = sq.Reference(workdir)
  model, tree, config, _ = checkpoint.load_workdir(workdir)
  x, labels, stats = split_arrays(mlc.ConfigDict(config).data, "test", config["seed"])
  raw = x * stats.std + stats.mean
  features, predicted = ref(raw[:7])
  assert features.shape == (7, model.dense[-1])
  logits = model.apply({"params": tree["params"]}, x[:7])
  np.testing.assert_array_equal(predicted, np.asarray(logits).argmax(-1))
  # features -> the head's dense layer gives the logits back
  head = tree["params"]["head"]
  np.testing.assert_allclose(features @ head["kernel"] + head["bias"], logits, rtol=1e-4,
                             atol=1e-4)
  del jax


@pytest.mark.slow  # 16 s; the default suite's budget (docs/testing.md)
def test_report_of_a_conditional_gan(trained, tmp_path):
  ref = trained("digits_cnn")
  workdir = trained("digits_cgan")
  result = gen.report(workdir, reference=ref, out=str(tmp_path))
  scores = result["scores"]
  assert set(scores) == {"held-out real data", "model samples", "Gaussian baseline"}
  assert all(s["examples"] == 360 for s in scores.values())
  assert scores["held-out real data"]["frechet_distance"] < scores["Gaussian baseline"][
      "frechet_distance"]
  assert 0.0 <= result["conditional_accuracy"] <= 1.0
  for name in ("report.json", "report.md", "samples.png", "real.png", "gaussian_baseline.png"):
    assert os.path.getsize(os.path.join(tmp_path, name)) > 0
  assert "| model samples |" in gen.markdown(result)
  # the numbers a run's `frechet` evaluator records, from the same draw
  from eval import restore
  from train import evaluators

  run = restore.restore(workdir)
  section = {"type": "frechet", "reference": ref, "samples": 360}
  tracked = evaluators.build("fid", section, run)(run.state)
  assert tracked["frechet_distance"] == pytest.approx(scores["model samples"]["frechet_distance"])
  assert tracked["conditional_accuracy"] == result["conditional_accuracy"]


def test_mean_and_sd_goes_leaf_by_leaf():
  runs = [{"a": 1.0, "n": 40, "c": {"h": [0.5, 0.5], "k": [1]}},
          {"a": 4.0, "n": 40, "c": {"h": [0.25, 0.75], "k": [1, 2]}}]
  mean, sd = sq.mean_and_sd(runs)
  assert mean["a"] == 2.5 and sd["a"] == pytest.approx(np.std([1.0, 4.0], ddof=1))
  assert mean["n"] == 40 and isinstance(mean["n"], int) and sd["n"] == 0.0
  np.testing.assert_allclose(mean["c"]["h"], [0.375, 0.625])
  assert mean["c"]["k"] is None  # lists of different lengths have no mean
  assert sq.mean_and_sd([3.0]) == (3.0, 0.0)


def test_report_errors_name_what_is_missing(trained, tmp_path):
  workdir = trained("digits_dcgan")
  missing = str(tmp_path / "missing")
  with pytest.raises(ValueError, match=f"--reference='{missing}' holds no trained classifier"):
    gen.report(workdir, reference=missing, out=str(tmp_path))
  with pytest.raises(ValueError, match=r"--samples=-3; expected 0"):
    gen.report(workdir, samples=-3, out=str(tmp_path))
  with pytest.raises(ValueError, match=r"--seeds=0; expected at least 1"):
    gen.report(workdir, seeds=0, out=str(tmp_path))
  with pytest.raises(ValueError, match="adversarial'.*; a generative reference must be a classifier"):
    gen.report(workdir, reference=workdir, out=str(tmp_path))
  with pytest.raises(ValueError, match="does not generate samples"):
    gen.report(trained("digits_cnn"), reference=workdir, out=str(tmp_path))
  with pytest.raises(ValueError, match="trained on data.source='mnist1d'; the run's is 'digits'"):
    gen.report(workdir, reference=trained("mnist1d_cnn"), out=str(tmp_path))


@pytest.mark.slow
def test_report_of_a_guided_diffusion_model_with_sampling_overrides(trained, tmp_path):
  ref = trained("digits_cnn")
  workdir = trained("digits_ddpm_cfg")
  result = gen.report(workdir, reference=ref, samples=40, out=str(tmp_path), seed=1, seeds=2,
                      overrides={"diffusion.sample_steps": "3", "diffusion.guidance_scale": "3"})
  assert result["overrides"] == {"diffusion.sample_steps": "3", "diffusion.guidance_scale": "3"}
  assert result["sampling_seconds"] > 0 and 0.0 <= result["conditional_accuracy"] <= 1.0
  assert all(s["examples"] == 40 for s in result["scores"].values())
  assert "diffusion.sample_steps=3" in gen.markdown(result)
  assert result["seeds"] == [1, 2] and [r["seed"] for r in result["per_seed"]] == [1, 2]
  fds = [r["scores"]["model samples"]["frechet_distance"] for r in result["per_seed"]]
  assert fds[0] != fds[1]  # two draws, not one twice
  assert result["scores"]["model samples"]["frechet_distance"] == pytest.approx(np.mean(fds))
  assert result["scores_sd"]["model samples"]["frechet_distance"] == pytest.approx(
      np.std(fds, ddof=1))
  assert "± sd over 2 seeds (1..2)" in gen.markdown(result)
  with pytest.raises(ValueError, match="has no field 'diffusion.samplerz'"):
    gen.report(workdir, reference=ref, out=str(tmp_path), overrides={"diffusion.samplerz": "x"})
  with pytest.raises(Exception, match="diffusion.sample_steps=2000"):
    gen.report(workdir, reference=ref, out=str(tmp_path),
               overrides={"diffusion.sample_steps": "2000"})
