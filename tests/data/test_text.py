"""The byte corpus source and next-token windows."""

import numpy as np
import pytest

from data import builders, pipeline, sources
from train import config as config_lib
from train.paradigms import supervised


def _text_config(data_dir, source="pydoc_text", **kw):
  c = config_lib.base().data
  c.source, c.data_dir, c.seq_len = source, data_dir, 16
  for k, v in kw.items():
    c[k] = v
  return c


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("text"))
  sources.source_info(_text_config(path))
  return path


def test_pydoc_text_is_ascii_and_split_by_position(text_dir):
  c = _text_config(text_dir)
  parts = [sources.load_text(c, s) for s in ("train", "validation", "test")]
  corpus = builders.pydoc_text()
  assert b"".join(p.tobytes() for p in parts) == corpus
  assert max(corpus) < 128 and len(corpus) > 400_000
  np.testing.assert_allclose([len(p) / len(corpus) for p in parts], [0.9, 0.05, 0.05], atol=1e-4)
  info = sources.source_info(c)
  assert info.num_classes == 0 and info.input_key == "text" and len(info.fingerprint) == 64


def test_train_windows_are_next_token_pairs_from_a_seeded_phase(text_dir):
  c = _text_config(text_dir, batch_size=8)
  stream = sources.load_text(c, "train")
  p = pipeline.build_pipeline(c, "train", train=True, seed=3)
  ds = p.dataset
  first = ds[0]
  assert first["inputs"].shape == first["label"].shape == first["mask"].shape == (8, 16)
  assert first["inputs"].dtype == np.int32
  np.testing.assert_array_equal(first["inputs"][:, 1:], first["label"][:, :-1])
  epoch = [ds[i] for i in range(p.steps_per_epoch)]
  for b in epoch[:5]:
    for row_in, row_out in zip(b["inputs"], b["label"]):
      start = int(np.flatnonzero(np.all(np.lib.stride_tricks.sliding_window_view(
          stream, 16) == row_in, axis=1))[0])
      np.testing.assert_array_equal(stream[start + 1:start + 17], row_out)
  # One epoch: windows of one phase, each at most once.
  starts = np.concatenate([ds._order(0)[:p.steps_per_epoch * 8]])
  assert len(set(starts % 16)) == 1 and len(set(starts)) == len(starts)
  assert set(ds._order(1) % 16) != set(starts % 16) or not np.array_equal(ds._order(1), starts)
  again = pipeline.build_pipeline(c, "train", train=True, seed=3).dataset
  np.testing.assert_array_equal(again[7]["inputs"], ds[7]["inputs"])
  other = pipeline.build_pipeline(c, "train", train=True, seed=4).dataset
  assert not np.array_equal(other[0]["inputs"], first["inputs"])


def test_eval_windows_score_every_target_exactly_once(text_dir):
  c = _text_config(text_dir, eval_batch_size=64)
  stream = sources.load_text(c, "validation")
  p = pipeline.build_pipeline(c, "validation", train=False, seed=0)
  labels, count = [], 0
  for b in p:
    labels.append(b["label"][b["mask"] > 0])
    count += b["mask"].sum()
  np.testing.assert_array_equal(np.concatenate(labels), stream[1:])
  assert count == len(stream) - 1
  # Two processes' rows together are the one-process batch.
  halves = [pipeline.build_pipeline(c, "validation", i, 2, train=False, seed=0).dataset[3]
            for i in range(2)]
  np.testing.assert_array_equal(np.concatenate([h["inputs"] for h in halves]),
                                p.dataset[3]["inputs"])


def test_text_errors_name_the_field(text_dir):
  with pytest.raises(sources.DataError, match="is a text corpus with no labels .feature .text.\); set data.seq_len > 0"):
    sources.load_split(_text_config(text_dir, seq_len=0), "train")
  with pytest.raises(sources.DataError, match="data.normalize='global' does not apply"):
    pipeline.build_pipeline(_text_config(text_dir, normalize="global"), "train", train=True,
                            seed=0)
  with pytest.raises(sources.DataError, match=r"data.dtype='bfloat16' does not apply.*expected "
                     r"'float32'"):
    pipeline.build_pipeline(_text_config(text_dir, dtype="bfloat16"), "train", train=True,
                            seed=0)
  with pytest.raises(sources.DataError, match="data.batch_size=40000 windows"):
    pipeline.build_pipeline(_text_config(text_dir, batch_size=40000), "train", train=True,
                            seed=0)
  c = config_lib.base()
  c.data = _text_config(text_dir)
  c.model = {"name": "transformer.TransformerLM", "vocab_size": 100}
  import arch
  with pytest.raises(sources.DataError, match=r"token id 126 is out of range for "
                     r"model.vocab_size=100 \(expected ids in \[0, 99\]\)"):
    supervised.check_data(c, arch.build(c.model))
  c.model = {"name": "recurrent.RecurrentNet", "num_classes": 128}
  with pytest.raises(config_lib.ConfigError, match="needs model.vocab_size > 0"):
    supervised.check_data(c, arch.build(c.model))


def test_tiny_shakespeare_goes_through_the_same_path(tmp_path):
  """The TFDS catalog's tiny_shakespeare (one text record per split), with TFDS's mock data."""
  import tensorflow_datasets as tfds

  c = _text_config(str(tmp_path), source="tiny_shakespeare", download=True, seq_len=4,
                   batch_size=2)
  with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
    sources._cached_builder.cache_clear()
    sources._cached_text.cache_clear()
    stream = sources.load_text(c, "train")
    batch = pipeline.build_pipeline(c, "train", train=True, seed=0).dataset[0]
  sources._cached_builder.cache_clear()
  sources._cached_text.cache_clear()
  assert stream.dtype == np.uint8 and len(stream) > 8
  np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["label"][:, :-1])
