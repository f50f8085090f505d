"""The generated `shapes` dataset: determinism, classes, configuration, a small build."""

import io

import numpy as np
import pytest
from PIL import Image

import data as data_lib
from data import shapes, sources
from tests.conftest import data_config


def test_images_are_a_pure_function_of_split_and_index_and_classes_differ():
  a, la = shapes.jpeg("train", 12, 30, 48)
  b, lb = shapes.jpeg("train", 12, 30, 48)
  c, _ = shapes.jpeg("test", 12, 30, 48)
  assert (a, la) == (b, lb) and a != c and a[:2] == b"\xff\xd8"  # JPEG magic
  labels = [shapes.jpeg("train", i, 30, 16)[1] for i in range(300)]
  assert set(labels) == set(range(30))
  image = shapes.draw(0, 64, np.random.default_rng(1))
  assert image.shape == (64, 64, 3) and image.dtype == np.uint8


def test_builder_config_is_checked_and_names_the_field():
  assert shapes.shapes_config({"num_examples": 10_000}).name == "default"
  assert shapes.shapes_config({"num_examples": 40, "image_size": 16}).name == "px16_n40"
  with pytest.raises(ValueError, match=r"data.builder_config.image_size=8; expected an integer"):
    shapes.shapes_config({"image_size": 8})
  with pytest.raises(ValueError, match=r"unknown shapes argument\(s\) \['colors'\]"):
    shapes.shapes_config({"colors": 3})


def test_a_small_build_streams_decoded_crops(tmp_path):
  c = data_config("shapes", str(tmp_path), batch_size=8, eval_batch_size=50, in_memory="false",
                  builder_config={"num_examples": 40, "num_classes": 4, "image_size": 32},
                  image={"train": ("decode", "random_resized_crop", "flip", "normalize"),
                         "eval": ("decode", "central_crop_fraction", "normalize"), "size": 24})
  info = sources.source_info(c)
  assert info.split_sizes == {"train": 40, "test": 100} and info.num_classes == 4
  train = data_lib.build_pipeline(c, "train", train=True, seed=0)
  batch = train.dataset[3]
  assert train.streaming and batch["inputs"].shape == (8, 24, 24, 3)
  assert batch["inputs"].dtype == np.float32 and set(batch["label"]) <= set(range(4))
  ev = list(data_lib.build_pipeline(c, "test", train=False, seed=0))
  assert sum(float(b["mask"].sum()) for b in ev) == 100
  # The stored JPEG decodes to the generator's image up to JPEG's loss.
  raw = sources.open_split(c, "train")[5]["image"]
  data, _ = shapes.jpeg("train", 5, 4, 32)
  np.testing.assert_array_equal(raw, np.asarray(Image.open(io.BytesIO(data))))


@pytest.mark.slow  # two spawned worker processes: 6 s
def test_worker_processes_hand_image_batches_over_in_shared_memory_unchanged(tmp_path):
  c = data_config("shapes", str(tmp_path), batch_size=8, in_memory="false", workers=2,
                  builder_config={"num_examples": 40, "num_classes": 4, "image_size": 32},
                  image={"train": ("decode", "random_resized_crop", "flip", "normalize"),
                         "size": 24})
  p = data_lib.build_pipeline(c, "train", train=True, seed=0)
  it = p.iterator(prefetch=2)
  try:
    for i in range(7):  # past the first epoch (5 batches)
      got, want = next(it), p.dataset[i]
      for k in want:
        np.testing.assert_array_equal(np.asarray(got[k]), want[k])
  finally:
    it.close()
