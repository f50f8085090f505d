"""Streaming mode (`data.in_memory=False`): the same batches as in memory, read from disk, in
worker processes, with exact resume and clear refusals."""

import numpy as np
import pytest

import data as data_lib
from data import pipeline as pipeline_lib
from data import sources, transforms
from tests.conftest import data_config
from train import config as config_lib

_cfg = data_config


def _assert_batches_equal(a, b):
  assert set(a) == set(b)
  for k in a:
    assert a[k].dtype == b[k].dtype, k
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_streaming_batches_equal_in_memory_ones(data_dir):
  kw = dict(batch_size=100, eval_batch_size=300, normalize="per_feature",
            augment={"shift": 3, "noise_std": 0.1})
  mem, disk = _cfg("mnist1d", data_dir, **kw), _cfg("mnist1d", data_dir, in_memory="False", **kw)
  for train, split in ((True, "train"), (False, "test")):
    a = data_lib.build_pipeline(mem, split, train=train, seed=5)
    b = data_lib.build_pipeline(disk, split, train=train, seed=5)
    assert (a.streaming, b.streaming) == (False, True)
    assert (a.steps_per_epoch, a.num_examples) == (b.steps_per_epoch, b.num_examples)
    # An epoch boundary (40 steps per epoch) and the padded last evaluation batch.
    for i in ((0, 39, 40, 81) if train else (0, 3)):
      _assert_batches_equal(a.dataset[i], b.dataset[i])
    if not train:
      assert sum(float(x["mask"].sum()) for x in b) == 1000


def test_chunked_statistics_match_the_whole_array_ones():
  x = np.random.default_rng(0).normal(3.0, 2.0, size=(1003, 5, 4)).astype(np.float32)
  x[:, 0, 0] = 7.0  # a constant feature: its std is 1, not 0
  for mode in ("global", "per_channel", "per_feature", "unit"):
    whole = transforms.compute_statistics(x, mode)
    chunked = transforms.compute_statistics_chunked((x[i:i + 97] for i in range(0, 1003, 97)),
                                                    mode)
    np.testing.assert_allclose(chunked.mean, whole.mean, rtol=1e-6, atol=1e-6, err_msg=mode)
    np.testing.assert_allclose(chunked.std, whole.std, rtol=1e-6, err_msg=mode)
    assert chunked.mean.shape == whole.mean.shape
  # An independent reference for one mode: float64 NumPy over the example axis.
  ref = x.astype(np.float64).std(axis=0)
  np.testing.assert_allclose(transforms.compute_statistics_chunked(
      iter([x[:500], x[500:]]), "per_feature").std, np.where(ref < 1e-8, 1, ref), rtol=1e-6)


def test_process_rows_union_to_the_global_batch_when_streaming(data_dir):
  c = _cfg("digits", data_dir, batch_size=64, eval_batch_size=64, in_memory="false")
  for train, split in ((True, "train"), (False, "test")):
    whole = data_lib.build_pipeline(c, split, train=train, seed=1).dataset[5]
    parts = [data_lib.build_pipeline(c, split, i, 2, train=train, seed=1).dataset[5]
             for i in range(2)]
    for k in whole:
      np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[k])


def test_evaluation_has_its_own_worker_count(data_dir):
  c = _cfg("mnist1d", data_dir, in_memory="False", workers=2)
  assert data_lib.build_pipeline(c, "train", train=True, seed=0).workers == 2
  assert data_lib.build_pipeline(c, "test", train=False, seed=0).workers == 2  # -1: the same
  c = _cfg("mnist1d", data_dir, in_memory="False", workers=2, eval_workers=0)
  assert data_lib.build_pipeline(c, "train", train=True, seed=0).workers == 2
  assert data_lib.build_pipeline(c, "test", train=False, seed=0).workers == 0
  full = config_lib.base()
  full.data = _cfg("mnist1d", data_dir, eval_workers=-2)
  full.model = {"name": "mlp.MLP", "num_classes": 10}
  with pytest.raises(config_lib.ConfigError, match=r"data.eval_workers=-2; expected -1"):
    config_lib.validate(full)


@pytest.mark.slow  # two spawned worker processes, twice: 9 s
def test_worker_processes_give_the_same_stream_and_resume_from_their_state(data_dir):
  c = _cfg("mnist1d", data_dir, batch_size=100, in_memory="False", workers=2,
           augment={"noise_std": 0.1})
  p = data_lib.build_pipeline(c, "train", train=True, seed=0)
  it = p.iterator(prefetch=2)
  try:
    for i in range(45):  # past the first epoch's end (40 steps)
      _assert_batches_equal(next(it), p.dataset[i])
    state = it.get_state()
  finally:
    it.close()
  fresh = data_lib.build_pipeline(c, "train", train=True, seed=0).iterator(prefetch=2)
  try:
    fresh.set_state(state)
    for i in range(45, 48):
      _assert_batches_equal(next(fresh), p.dataset[i])
  finally:
    fresh.close()


def test_auto_streams_past_the_size_limit_and_options_that_need_every_label_refuse(
    data_dir, monkeypatch):
  c = _cfg("mnist1d", data_dir)
  # 5,000 signals of 40 float64: 1.6 MB decoded, under the limit.
  assert sources.decoded_bytes(c, ["train", "test"]) == 5000 * 40 * 8
  assert not data_lib.build_pipeline(c, "train", train=True, seed=0).streaming
  monkeypatch.setattr(pipeline_lib, "AUTO_IN_MEMORY_BYTES", 1 << 20)
  assert data_lib.build_pipeline(c, "train", train=True, seed=0).streaming
  for field, value, match in (("sampler", "balanced", "data.sampler='balanced' needs every"),
                              ("class_weights", "balanced", "data.class_weights='balanced'"),
                              ("keep_classes", (1, 2), r"data.keep_classes=\(1, 2\) needs")):
    bad = _cfg("mnist1d", data_dir, in_memory="false", **{field: value})
    with pytest.raises(sources.DataError, match=match):
      data_lib.build_pipeline(bad, "train", train=True, seed=0)
  with pytest.raises(config_lib.ConfigError, match="data.in_memory='sometimes'; expected 'auto'"):
    full = config_lib.base()
    full.data.in_memory = "sometimes"
    config_lib.validate(full)


def test_image_ops_run_per_example_with_the_same_draws_in_both_modes(data_dir):
  image = {"train": ("random_resized_crop", "flip", "normalize"),
           "eval": ("central_crop_fraction", "normalize"), "size": 6, "mean": (8.0,),
           "std": (5.0,)}
  mem = _cfg("digits", data_dir, batch_size=32, eval_batch_size=100, image=image)
  disk = _cfg("digits", data_dir, batch_size=32, eval_batch_size=100, image=image,
              in_memory="false")
  for train, split, index in ((True, "train", 44), (False, "test", 3)):
    a = data_lib.build_pipeline(mem, split, train=train, seed=2).dataset[index]
    b = data_lib.build_pipeline(disk, split, train=train, seed=2).dataset[index]
    assert a["inputs"].shape == (32 if train else 100, 6, 6, 1)
    assert a["inputs"].dtype == np.float32
    _assert_batches_equal(a, b)
  p = data_lib.build_pipeline(mem, "train", train=True, seed=2)
  # Epoch 1 and epoch 2 visit example orders that differ, and crops are drawn anew each time.
  assert not np.array_equal(p.dataset[0]["inputs"], p.dataset[44]["inputs"])
  bad = _cfg("digits", data_dir, image={**image, "mean": (1.0, 2.0, 3.0), "std": (1.0,) * 3})
  with pytest.raises(ValueError, match="expected one value per channel"):
    data_lib.build_pipeline(bad, "train", train=True, seed=0).dataset[0]
