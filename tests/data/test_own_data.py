"""`folder:PATH` and `table:PATH` sources (data/folder.py, data/table.py): a folder of images and
a CSV table trained end to end (tiny), what they store checked against the files (PIL, pandas),
the held-out split, reuse and rebuild, lineage, and each bad input as one line."""

import json
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data import sources
from data.sources import DataError
from tests.conftest import ROOT, load_experiment, run_cli
from train import config as config_lib
from train import loop

CLASSES = {"cat": (200, 40, 40), "dog": (40, 40, 200), "owl": (40, 200, 40)}


def _images(root, per_class=20, size=(12, 12), formats=("png", "jpg", "bmp")):
  """Noisy solid-colour images, one colour per class, in several formats and modes."""
  rng = np.random.default_rng(0)
  for c, colour in CLASSES.items():
    os.makedirs(root / c, exist_ok=True)
    for i in range(per_class):
      x = (rng.normal(0, 25, (*size, 3)) + colour).clip(0, 255).astype(np.uint8)
      im = Image.fromarray(x)
      im = im.convert("L").convert("RGB") if i == 3 else im
      im = im.convert("P") if i == 5 else im  # a palette BMP, stored as RGB PNG
      im.save(root / c / f"{i:03d}.{formats[i % len(formats)]}")
  (root / "cat" / "notes.txt").write_text("not an image")
  return root


def _table(path, n=240, **columns):
  rng = np.random.default_rng(1)
  age = rng.uniform(20, 80, n).round(1)
  sex = rng.choice(["f", "m"], n)
  smoker = rng.choice([True, False], n)
  risk = 0.05 * (age - 50) + (sex == "m") + 1.5 * smoker + rng.normal(0, 0.3, n)
  frame = pd.DataFrame({"age": age, "sex": sex, "smoker": smoker, "row": np.arange(n),
                        "outcome": np.where(risk > 0.8, "sick", "well"), **columns})
  frame.to_csv(path, index=False)
  return frame


def _data(source, data_dir, **fields):
  c = config_lib.base().data
  c.source, c.data_dir = source, str(data_dir)
  for k, v in fields.items():
    c[k] = v
  return c


def test_a_folder_is_stored_as_its_files_and_split_per_class(tmp_path):
  root = _images(tmp_path / "pets")
  c = _data(f"folder:{root}", tmp_path / "tfds")
  info = sources.source_info(c)
  assert (info.num_classes, info.split_sizes) == (3, {"train": 48, "test": 12})
  source = sources.open_split(c, "train")
  test = sources.open_split(c, "test")
  files = [source[i]["file"].decode() for i in range(len(source))] + [
      test[i]["file"].decode() for i in range(len(test))]
  assert sorted(files) == sorted(f"{c}/{i:03d}.{('png', 'jpg', 'bmp')[i % 3]}"
                                 for c in CLASSES for i in range(20))
  assert [test[i]["label"] for i in range(len(test))] == [0] * 4 + [1] * 4 + [2] * 4
  for split in (source, test):
    for i in range(len(split)):
      record = {**split[i], "file": split[i]["file"].decode()}
      with Image.open(root / record["file"]) as im:
        expected = np.asarray(im.convert("RGB"))
      if record["file"].endswith(".jpg"):  # stored as it was: TFDS decodes the same JPEG
        assert np.abs(record["image"].astype(int) - expected).max() <= 2
      else:
        np.testing.assert_array_equal(record["image"], expected)
      assert record["label"] == sorted(CLASSES).index(record["file"].split("/")[0])
  # prepared once; a changed folder is prepared again, with another split seed another split
  again = sources.source_info(c)
  assert again.fingerprint == info.fingerprint and again.data_dir == info.data_dir
  c2 = _data(f"folder:{root}", tmp_path / "tfds")
  c2.builder_config = {"split_seed": 1}
  assert sources.source_info(c2).data_dir != info.data_dir
  sources.clear_caches()
  Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(root / "owl" / "new.png")
  changed = sources.source_info(c)
  assert changed.split_sizes["train"] + changed.split_sizes["test"] == 61
  assert changed.fingerprint != info.fingerprint


def test_a_folder_and_a_table_train_end_to_end(tmp_path):
  root = _images(tmp_path / "pets")
  c = load_experiment("digits_cnn", "tiny")
  c.data.source, c.data.data_dir = f"folder:{root}", str(tmp_path / "tfds")
  c.data.batch_size, c.data.eval_batch_size, c.data.augment.crop_padding = 16, 12, 0
  c.model.num_classes = 3
  c.train.steps = 60
  result = loop.train_and_evaluate(c, str(tmp_path / "folder_run"))
  assert result["accuracy"] > 0.75  # three colours; chance is 1/3
  lineage = json.load(open(tmp_path / "folder_run" / "lineage.json"))
  assert lineage["dataset"]["name"] == f"folder:{root}"
  assert len(lineage["dataset"]["fingerprint"]) == 64

  frame = _table(tmp_path / "patients.csv")
  c = load_experiment("breast_cancer_mlp", "tiny")
  c.data.source, c.data.data_dir = f"table:{tmp_path / 'patients.csv'}", str(tmp_path / "tfds")
  c.data.label, c.data.features = "outcome", ("age", "sex", "smoker")
  c.data.batch_size, c.data.eval_batch_size = 32, 48
  c.model.widths = (16,)
  c.train.steps = 300
  result = loop.train_and_evaluate(c, str(tmp_path / "table_run"))
  majority = max((frame.outcome == "sick").mean(), (frame.outcome == "well").mean())
  assert result["accuracy"] > majority + 0.05
  encoding = json.load(open(tmp_path / "table_run" / "lineage.json"))["dataset"]["encoding"]
  assert encoding == {"label": "outcome", "classes": ["sick", "well"], "width": 5, "features": [
      {"column": "age", "kind": "numeric"},
      {"column": "sex", "kind": "categorical", "categories": ["f", "m"]},
      {"column": "smoker", "kind": "categorical", "categories": ["False", "True"]}]}
  # the stored rows are the table's, one-hot encoded
  data = _data(c.data.source, tmp_path / "tfds", label="outcome",
               features=("age", "sex", "smoker"))
  train, test = sources.load_split(data, "train"), sources.load_split(data, "test")
  x = np.concatenate([train.inputs, test.inputs])
  expected = np.stack([frame.age, frame.sex == "f", frame.sex == "m", ~frame.smoker,
                       frame.smoker], axis=1).astype(np.float32)
  order = np.lexsort(expected.T)
  np.testing.assert_array_equal(x[np.lexsort(x.T)], expected[order])
  assert len(test.labels) == 48 and set(test.labels) == {0, 1}


def test_images_of_different_sizes_need_a_resize_op(tmp_path):
  root = _images(tmp_path / "pets", per_class=4)
  Image.fromarray(np.zeros((20, 16, 3), np.uint8)).save(root / "dog" / "big.png")
  c = _data(f"folder:{root}", tmp_path / "tfds")
  assert sources.input_feature(c).shape == (None, None, 3)
  with pytest.raises(DataError, match=r"the inputs differ in shape .*data\.image\.size"):
    sources.load_split(c, "train")
  # ... which bring them to one, streamed from the build
  run = load_experiment("digits_cnn", "tiny")
  run.data.source, run.data.data_dir = c.source, c.data_dir
  run.data.batch_size, run.data.eval_batch_size, run.data.augment.crop_padding = 4, 3, 0
  run.data.in_memory, run.data.normalize, run.data.image.size = "False", "none", 12
  run.data.image.train = run.data.image.eval = ("decode", "resize", "normalize")
  run.model.num_classes, run.train.steps = 3, 6
  result = loop.train_and_evaluate(run, str(tmp_path / "run"))
  assert result["count"] == 3


@pytest.mark.parametrize("case, message", [
    ("empty_class", "class folder {root}/owl holds no images"),
    ("unreadable", "image {root}/dog/002.png cannot be read"),
    ("one_class", "has 1 class folder(s) ['cat']; expected one subfolder of images per class"),
    ("no_folder", "{root}/missing is not a folder"),
])
def test_bad_folders_are_one_line(tmp_path, case, message):
  root = _images(tmp_path / "pets", per_class=3)
  path = root
  if case == "empty_class":
    for f in os.listdir(root / "owl"):
      os.remove(root / "owl" / f)
  elif case == "unreadable":
    (root / "dog" / "002.png").write_bytes(b"\x89PNG\r\n\x1a\n but cut short")
  elif case == "one_class":
    path = tmp_path / "one"
    os.makedirs(path / "cat")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path / "cat" / "a.png")
  else:
    path = root / "missing"
  with pytest.raises(DataError) as e:
    sources.source_info(_data(f"folder:{path}", tmp_path / "tfds"))
  assert message.format(root=root) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("case, fields, message", [
    ("missing_column", {"features": ("age", "weight")},
     "data.features: column 'weight' is not in {path}; expected one of ['age', 'sex'"),
    ("missing_label", {"label": "result"}, "data.label: column 'result' is not in"),
    ("one_class", {}, "the label column 'outcome' has one class ['well']; expected at least two"),
    ("missing_value", {}, "column 'age' has 1 missing value(s), the first in data row 8"),
    ("no_label", {"label": ""}, "needs data.label, the name of the label column"),
    ("label_in_features", {"features": ("age", "outcome")}, "includes the label column"),
])
def test_bad_tables_are_one_line(tmp_path, case, fields, message):
  path = tmp_path / "t.csv"
  frame = _table(path, n=40)
  if case == "one_class":
    frame.assign(outcome="well").to_csv(path, index=False)
  elif case == "missing_value":
    frame.assign(age=frame.age.where(frame.row != 7)).to_csv(path, index=False)
  c = _data(f"table:{path}", tmp_path / "tfds", **{"label": "outcome", **fields})
  with pytest.raises(DataError) as e:
    sources.source_info(c)
  assert message.format(path=path) in str(e.value) and "\n" not in str(e.value)


def test_the_cli_says_a_bad_folder_in_one_line_with_exit_status_3(tmp_path):
  root = _images(tmp_path / "pets", per_class=3)
  (root / "dog" / "001.jpg").write_bytes(b"\xff\xd8 not a jpeg")
  r = run_cli(["--config", "experiments/digits_cnn.py:tiny", f"--config.data.source=folder:{root}",
               "--config.model.num_classes=3", f"--config.data.data_dir={tmp_path / 'tfds'}",
               f"--workdir={tmp_path / 'run'}"], env_extra={"JAX_PLATFORMS": "cpu"})
  assert r.returncode == 3, r.stderr[-2000:]
  lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1 and f"image {root}/dog/001.jpg cannot be read" in lines[0]
  assert "Traceback" not in r.stderr and ROOT


def test_a_parquet_table_is_read_as_its_csv_twin(tmp_path):
  pytest.importorskip("pyarrow")
  frame = _table(tmp_path / "t.csv", n=60)
  frame.to_parquet(tmp_path / "t.parquet")
  got = {}
  for suffix in ("csv", "parquet"):
    c = _data(f"table:{tmp_path / f't.{suffix}'}", tmp_path / "tfds", label="outcome")
    got[suffix] = (sources.source_info(c).encoding, sources.load_split(c, "train").inputs)
  assert got["csv"][0] == got["parquet"][0]
  assert [f["column"] for f in got["csv"][0]["features"]] == ["age", "sex", "smoker", "row"]
  np.testing.assert_array_equal(got["csv"][1], got["parquet"][1])


def test_a_prepared_folder_or_table_is_not_read_again(tmp_path, monkeypatch):
  import PIL.Image

  root = _images(tmp_path / "pets", per_class=3)
  _table(tmp_path / "t.csv", n=30)
  folder = _data(f"folder:{root}", tmp_path / "tfds")
  table = _data(f"table:{tmp_path / 't.csv'}", tmp_path / "tfds", label="outcome")
  before = [sources.source_info(c) for c in (folder, table)]
  sources.clear_caches()

  def refuse(*args, **kwargs):
    raise AssertionError("read again")
  monkeypatch.setattr(PIL.Image, "open", refuse)
  monkeypatch.setattr(pd, "read_csv", refuse)
  assert [sources.source_info(c) for c in (folder, table)] == before


def test_integer_labels_keep_their_numeric_order(tmp_path):
  frame = _table(tmp_path / "t.csv", n=66)
  frame.assign(digit=np.arange(66) % 11).to_csv(tmp_path / "t.csv", index=False)
  c = _data(f"table:{tmp_path / 't.csv'}", tmp_path / "tfds", label="digit",
            features=("row",))
  info = sources.source_info(c)
  assert info.encoding["classes"] == [str(d) for d in range(11)]
  split = sources.load_split(c, "train")
  np.testing.assert_array_equal(split.labels, split.inputs[:, 0].astype(int) % 11)
