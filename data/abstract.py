"""The shape of a run's batches without its dataset: for compiling a run ahead of time on a
machine that holds no data (`python -m train --dry_run --topology v5e-16`).

The batch is not described by hand: the real pipeline (`build_pipeline`, its image ops,
transforms, text windows) runs on a few random examples that TFDS's own mock
(`tfds.testing.mock_data`) draws from the source's feature spec, with per-process batches of
two; the shapes and dtypes of that batch, with the global batch size in front, are the run's.
Nothing is prepared, downloaded or read, and nothing is written outside a temporary directory.
"""

from __future__ import annotations

import contextlib
import copy
import io
import shutil
import tempfile
from typing import Any, Iterator
from unittest import mock

import numpy as np

from data import pipeline as pipeline_lib
from data import sources

# Per-process rows of the probe batch: two, so that no shape is squeezed by a batch of one.
PROBE_ROWS = 2


@contextlib.contextmanager
def mock_source(num_examples: int) -> Iterator[None]:
  """Every TFDS source serves `num_examples` random examples of its real feature spec
  (`tfds.testing.mock_data`), encoded and decoded as the real ones are. TFDS encodes mock
  images with TensorFlow, which strata does not install; here PIL encodes them (PNG, or JPEG
  for a JPEG feature). The source caches are cleared on entry and exit."""
  import tensorflow_datasets as tfds
  from PIL import Image
  from tensorflow_datasets.core.features import image_feature

  def encode(self, image):
    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
        buf, format="JPEG" if self.encoding_format == "jpeg" else "PNG")
    return buf.getvalue()

  pipeline_lib.clear_caches()
  try:
    with mock.patch.object(image_feature._ImageEncoder, "_encode_image", encode), \
        tfds.testing.mock_data(num_examples=num_examples,
                               policy=tfds.testing.MockPolicy.USE_CODE):
      yield
  finally:
    pipeline_lib.clear_caches()


def _probe_config(data_config: Any, data_dir: str) -> Any:
  d = copy.deepcopy(data_config)
  with d.unlocked():
    d.batch_size = d.eval_batch_size = PROBE_ROWS
    d.data_dir, d.download = data_dir, True  # the mock stands in for the prepared dataset
    if "synthetic" in d:  # a generator's samples have the real examples' shape
      d.synthetic.workdir, d.synthetic.fraction = "", 0.0
  return d


def batch_shapes(data_config: Any, split: str, *, train: bool, seed: int,
                 global_batch: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """{key: (shape, dtype)} of one global batch of `split` (training or evaluation batches) as
  `build_pipeline(data_config, ...)` makes them, with `global_batch` rows.

  Raises:
    DataError: the source is unknown, or its pipeline cannot be built from its description.
  """
  tmp = tempfile.mkdtemp(prefix="strata-abstract-data-")
  d = _probe_config(data_config, tmp)
  # Text windows need enough mock text for PROBE_ROWS windows of seq_len + 1 tokens; mock
  # strings are short, so the examples grow until they are enough.
  counts = [8] if d.seq_len <= 0 else [8 * 4 ** i for i in range(6)]
  try:
    for i, n in enumerate(counts):
      try:
        with mock_source(n), contextlib.redirect_stderr(io.StringIO()):  # "preparing ..." lines
          pipe = pipeline_lib.build_pipeline(d, split, train=train, seed=seed)
          batch = pipe.dataset[0]  # indexed, not iterated: no worker process starts
        break
      except sources.DataError as e:
        if i + 1 == len(counts) or "do not fit" not in str(e):
          raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return {k: ((global_batch, *np.shape(v)[1:]), np.asarray(v).dtype) for k, v in batch.items()}

