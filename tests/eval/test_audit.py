"""eval.audit: each part against a direct computation, and the cross-validated label issues."""

import json
import os

import numpy as np
import pytest

from eval import audit
from tests.conftest import load_experiment


def test_balance_counts_and_imbalance():
  b = audit.balance({"train": np.array([0, 0, 0, 1, 2, 2]), "test": np.array([1, 1])}, 3)
  assert b["train"]["counts"] == [3, 1, 2] and b["train"]["imbalance"] == 3.0
  assert b["test"]["counts"] == [0, 2, 0] and b["test"]["imbalance"] == float("inf")


def test_exact_duplicates_within_and_across_splits_with_conflicts():
  rng = np.random.default_rng(0)
  train = rng.normal(size=(6, 4))
  test = rng.normal(size=(3, 4))
  train[4] = train[1]            # within train, same label
  test[2] = train[3]             # leakage, another label
  groups = audit.exact_duplicates({"train": train, "test": test},
                                  {"train": np.array([0, 1, 2, 3, 4, 1]),
                                   "test": np.array([0, 0, 9])})
  as_sets = sorted(sorted((m["split"], m["index"]) for m in g) for g in groups)
  assert as_sets == [[("test", 2), ("train", 3)], [("train", 1), ("train", 4)]]
  labels = {frozenset((m["split"], m["index"]) for m in g): {m["label"] for m in g}
            for g in groups}
  assert labels[frozenset({("test", 2), ("train", 3)})] == {3, 9}


def test_near_duplicates_against_brute_force():
  rng = np.random.default_rng(1)
  train = rng.normal(size=(200, 5))
  test = rng.normal(size=(50, 5))
  train[10] = train[20] + 1e-3   # a near pair inside train
  test[7] = train[33] + 1e-3     # a near pair across
  pairs, threshold = audit.near_duplicates({"train": train, "test": test}, "train", 0.1)
  d = np.linalg.norm(train[:, None] - train[None], axis=-1)
  np.fill_diagonal(d, np.inf)
  assert threshold == pytest.approx(0.1 * np.median(d.min(1)))
  found = {(tuple(p["a"]), tuple(p["b"])) for p in pairs}
  assert (("train", 10), ("train", 20)) in found and (("test", 7), ("train", 33)) in found
  want_within = {(i, int(d[i].argmin())) for i in range(200)
                 if d[i].min() < threshold and i < d[i].argmin()}
  assert {(a[1], b[1]) for a, b in found if a[0] == "train"} == want_within


def test_folds_cover_the_split_once():
  assert audit.fold_splits("train", 3) == [
      ("train[33%:]", "train[0%:33%]"), ("train[:33%]+train[67%:]", "train[33%:67%]"),
      ("train[:67%]", "train[67%:100%]")]


def test_against_known_flips():
  flipped = np.zeros(10, bool)
  flipped[[1, 2, 3]] = True
  k = audit.against_known(np.array([1, 2, 8, 9]), flipped)
  assert k["precision"] == 0.5 and k["recall"] == pytest.approx(2 / 3)


@pytest.mark.slow  # two cross-validation trainings
def test_audit_with_known_noise_end_to_end(data_dir, tmp_path):
  config = load_experiment("digits_cnn", "tiny", data_dir)
  with config.unlocked():
    config.data.label_noise.rate = 0.1
    config.train.steps = 150
  out = str(tmp_path / "audit")
  result = audit.audit(config, out, folds=2)
  li = result["label_issues"]
  n = result["examples"]["train"]
  assert all(0 <= i < n for i in li["indices"]) and len(set(li["indices"])) == len(li["indices"])
  assert li["against_known_noise"]["flipped"] > 0
  assert sorted(json.load(open(os.path.join(out, "flagged.json")))["indices"]) == sorted(
      li["indices"])
  assert os.path.exists(os.path.join(out, "cv", "fold_1", "summary.json"))
  assert os.path.exists(os.path.join(out, "flagged.png"))
  assert "**Label issues**" in open(os.path.join(out, "report.md")).read()


def test_near_duplicates_in_a_trained_models_features(trained, data_dir, tmp_path):
  workdir = trained("digits_cnn")
  config = load_experiment("digits_cnn", "tiny", data_dir)
  result = audit.audit(config, str(tmp_path), folds=0, workdir=workdir)
  assert result["near_duplicates"]["space"] == f"features of {workdir}"
  assert result["near_duplicates"]["threshold"] > 0
  assert "label_issues" not in result
  assert result["balance"]["test"]["counts"] == np.bincount(
      data_lib_labels(config, "test"), minlength=10).tolist()


def data_lib_labels(config, split):
  import data as data_lib
  return data_lib.split_arrays(config.data, split)[1]



def _toy_builder():
  import tensorflow_datasets as tfds

  from data.offline import OfflineBuilder

  class StrataAuditSliceToy(OfflineBuilder):
    """Two classes in 4-d; group a (even rows) well separated, group b (odd rows) barely."""

    def _info(self):
      return self.dataset_info_from_configs(
          features=tfds.features.FeaturesDict({
              "x": tfds.features.Tensor(shape=(4,), dtype=np.float32),
              "label": tfds.features.ClassLabel(num_classes=2),
              "group": tfds.features.ClassLabel(names=["a", "b"])}),
          supervised_keys=("x", "label"), disable_shuffling=True)

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples(0, 600), "test": self._generate_examples(1, 400)}

    def _generate_examples(self, seed, n):
      rng = np.random.default_rng(seed)
      for i in range(n):
        group, label = i % 2, int(rng.integers(0, 2))
        x = rng.normal(size=4) + (2 * label - 1) * (2.0 if group == 0 else 0.1)
        yield i, {"x": x.astype(np.float32), "label": label, "group": group}

  return StrataAuditSliceToy


def test_per_slice_metrics_of_a_source_field(data_dir, tmp_path, monkeypatch):
  from data import builders
  from eval import calibration, restore
  from train import loop

  monkeypatch.setitem(builders.OFFLINE_BUILDERS, "audit_toy", _toy_builder())
  config = load_experiment("breast_cancer_mlp", "tiny", data_dir)
  with config.unlocked():
    config.data.source, config.data.data_dir = "audit_toy", str(tmp_path / "tfds")
    config.data.class_weights = "none"
    config.model.num_classes = 2
    config.train.steps = 200
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(config, workdir)
  result = audit.audit(config, str(tmp_path / "audit"), folds=0, workdir=workdir)
  assert result["slice_fields"] == ["group"]
  table = result["slices"]["group"]
  run = restore.restore(workdir)
  x, y, _ = run.split("test")
  pred = calibration.softmax(run.predict(x)).argmax(-1)
  group = np.arange(len(y)) % 2  # the generator's groups, in stored order
  for g in (0, 1):
    assert table[str(g)]["examples"] == int((group == g).sum())
    assert table[str(g)]["accuracy"] == pytest.approx(np.mean(pred[group == g] == y[group == g]))
  assert table["0"]["accuracy"] > table["1"]["accuracy"]  # the separated group is easier
  assert "**Slice `group`**" in open(tmp_path / "audit" / "report.md").read()
