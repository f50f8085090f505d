"""The base of strata's offline TFDS builders: ArrayRecord files, nothing to download."""

from __future__ import annotations

from typing import Any

import tensorflow_datasets as tfds


class OfflineBuilder(tfds.core.GeneratorBasedBuilder):
  """Writes array_record files (no TensorFlow needed); served by `builder.as_data_source`."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def __init__(self, **kwargs: Any):
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  # TFDS prints a download-size line before preparing and a "prepared" line after it; these
  # builders download nothing and `data.sources` says in one line what it builds and where.
  def _log_download_bytes(self) -> None:
    pass

  def _log_download_done(self) -> None:
    pass
