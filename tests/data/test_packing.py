"""Packed document windows against an independent NumPy concatenation: no target crosses a
document boundary unmasked, evaluation scores every token once, the Transformer's attention
stays inside a document."""

import jax
import numpy as np
import pytest

from data import packing
from data.text import build
from tests.conftest import data_config


def _docs(seed=0, n=23):
  rng = np.random.default_rng(seed)
  texts = [bytes(rng.integers(32, 127, size=int(rng.integers(1, 40))).astype(np.uint8))
           for _ in range(n)]
  source = [{"text": t} for t in texts]
  lengths = packing.document_lengths(source, "text", None)
  return texts, packing._Documents(source, "text", lengths)


def _check_window(batch_row, stream, doc_of, start, seq_len):
  """Every unmasked target is the next token of the same document in the concatenation."""
  inputs, label, mask, seg = (batch_row[k] for k in ("inputs", "label", "mask", "segments"))
  for j in range(seq_len):
    p = start + j
    if p >= len(stream):
      assert seg[j] == -1 and mask[j] == 0
      continue
    assert inputs[j] == stream[p]
    same = p + 1 < len(stream) and doc_of[p + 1] == doc_of[p]
    assert mask[j] == float(same), (start, j)
    if same:
      assert label[j] == stream[p + 1]
    for jj in range(seq_len):
      if start + jj < len(stream):
        assert (seg[j] == seg[jj]) == (doc_of[p] == doc_of[start + jj])


def test_training_windows_never_cross_a_document_unmasked_and_are_seeded():
  texts, docs = _docs()
  seq_len = 8
  ds = packing.PackedTrainBatches(docs, seq_len, seed=3, sampler="shuffle", num_batches=1000,
                                  global_batch=4, process_index=0, process_count=1)
  for index in (0, 5, ds.steps_per_epoch + 1):  # two epochs: two document orders
    epoch, b = divmod(index, ds.steps_per_epoch)
    order = np.random.default_rng([3, epoch, 1]).permutation(len(texts))
    stream = np.frombuffer(b"".join(texts[d] for d in order), np.uint8)
    doc_of = np.repeat(np.arange(len(order)), [len(texts[d]) for d in order])
    windows = np.random.default_rng([3, epoch]).permutation(ds.windows_per_epoch)
    batch = ds[index]
    assert batch["inputs"].shape == batch["mask"].shape == (4, seq_len)
    for row, w in enumerate(windows[b * 4:(b + 1) * 4]):
      _check_window({k: v[row] for k, v in batch.items()}, stream, doc_of, w * seq_len, seq_len)
  again = packing.PackedTrainBatches(docs, seq_len, seed=3, sampler="shuffle", num_batches=1000,
                                     global_batch=4, process_index=0, process_count=1)
  for k, v in ds[7].items():
    np.testing.assert_array_equal(again[7][k], v)


def test_evaluation_scores_every_token_but_each_documents_first_exactly_once():
  texts, docs = _docs(1)
  seq_len = 8
  ds = packing.PackedEvalBatches(docs, seq_len, global_batch=4, process_index=0,
                                 process_count=1)
  stream = np.frombuffer(b"".join(texts), np.uint8)
  doc_of = np.repeat(np.arange(len(texts)), [len(t) for t in texts])
  scored = 0
  for index in range(len(ds)):
    batch = ds[index]
    for row in range(4):
      start = (index * 4 + row) * seq_len
      _check_window({k: v[row] for k, v in batch.items()}, stream, doc_of, start, seq_len)
    scored += int(batch["mask"].sum())
  assert scored == len(stream) - len(texts)
  # Two processes: each keeps its rows; together they score the same tokens.
  halves = [packing.PackedEvalBatches(docs, seq_len, global_batch=4, process_index=i,
                                      process_count=2) for i in range(2)]
  assert sum(float(h[i]["mask"].sum()) for h in halves for i in range(len(ds))) == scored


def test_pydoc_text_streams_through_packing_with_lengths_cached(data_dir, tmp_path):
  c = data_config("pydoc_text", str(tmp_path), seq_len=64, batch_size=4, eval_batch_size=8,
                  in_memory="false")
  ds, tokens, steps = build(c, "validation", True, train=False, seed=0, num_batches=1,
                            global_batch=8, process_index=0, process_count=1)
  assert isinstance(ds, packing.PackedEvalBatches) and steps == len(ds)
  assert sum(float(ds[i]["mask"].sum()) for i in range(len(ds))) == tokens - 1  # one document
  cached = list(tmp_path.glob("strata_pydoc_text/*/strata-document-lengths-*.npy"))
  assert len(cached) == 1 and np.load(cached[0]).sum() == tokens


def test_the_transformer_attends_within_its_document_only():
  from arch.transformer import TransformerLM

  model = TransformerLM(vocab_size=64, width=8, depth=1, num_heads=2, mlp_dim=8, max_len=12)
  tokens = np.random.default_rng(0).integers(0, 64, size=(1, 12)).astype(np.int32)
  segments = np.array([[0] * 5 + [1] * 7], np.int32)
  apply = jax.jit(model.apply)  # one compile per signature instead of op-by-op dispatch
  variables = jax.jit(model.init)(jax.random.key(0), tokens)
  out = apply(variables, tokens, segments=segments)
  changed = tokens.copy()
  changed[0, :5] = (changed[0, :5] + 1) % 64       # another first document
  out2 = apply(variables, changed, segments=segments)
  np.testing.assert_allclose(out[0, 5:], out2[0, 5:], rtol=1e-5, atol=1e-5)
  assert not np.allclose(out[0, :5], out2[0, :5])
  # Without segments the second document sees the first.
  assert not np.allclose(apply(variables, tokens)[0, 5:], apply(variables, changed)[0, 5:])


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rotary"])
def test_a_packed_document_is_computed_as_it_would_be_alone(positions):
  """Positions restart at each document's first token: the second document of a packed window
  gets the logits of the same tokens run alone from position 0."""
  from arch.transformer import TransformerLM, segment_positions

  model = TransformerLM(vocab_size=64, width=8, depth=2, num_heads=2, mlp_dim=8, max_len=12,
                        positions=positions)
  tokens = np.random.default_rng(1).integers(0, 64, size=(1, 12)).astype(np.int32)
  segments = np.array([[0] * 5 + [1] * 7], np.int32)
  variables = jax.jit(model.init)(jax.random.key(0), tokens)
  apply = jax.jit(model.apply)
  packed = apply(variables, tokens, segments=segments)
  alone = apply(variables, tokens[:, 5:])
  np.testing.assert_allclose(packed[0, 5:], alone[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(segment_positions(np.array([[0, 0, 1, 1, 1, 2, -1, -1]])),
                                [[0, 1, 0, 1, 2, 0, 0, 1]])


def test_the_stdlib_corpus_is_documents_split_by_path():
  from data import builders

  files = builders.stdlib_sources()
  assert len(files) > 500 and all(p.endswith(".py") for p, _ in files)
  splits = [builders._stdlib_split(p) for p, _ in files]
  assert 0.85 < splits.count("train") / len(splits) < 0.95
  assert builders._stdlib_split("json/decoder.py") == builders._stdlib_split("json/decoder.py")
