"""TFDS's side effects kept out of a run while strata makes, prepares and reads its builders:
its warnings and progress bars (`quiet`), and, while a builder is made, the empty temporary
directory it leaves behind (`building`)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator

import tensorflow_datasets as tfds
from absl import logging


@contextlib.contextmanager
def quiet() -> Iterator[None]:
  """TFDS's warnings and per-split progress bars off while an offline builder is made and
  prepared (it downloads nothing, so they say nothing a user needs)."""
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  tfds.display_progress_bar(False)
  try:
    yield
  finally:
    logging.set_verbosity(verbosity)
    tfds.display_progress_bar(True)


@contextlib.contextmanager
def no_temp_litter() -> Iterator[None]:
  """TFDS's DatasetBuilder, made on a data dir not yet prepared, makes an empty temporary
  directory for dataset info it then fails to fetch (`DatasetInfo.initialize_from_bucket`) and
  never removes it: one left in /tmp per dataset prepared (1,089 after a day of tests here).
  Made inside a private temporary directory, which is removed after when nothing but such empty
  directories is in it (another thread's file there is left alone)."""
  private = tempfile.mkdtemp(prefix="strata-tfds-")
  tempdir, tempfile.tempdir = tempfile.tempdir, private
  try:
    yield
  finally:
    tempfile.tempdir = tempdir
    for name in os.listdir(private):
      with contextlib.suppress(OSError):  # not empty: not TFDS's
        os.rmdir(os.path.join(private, name))
    with contextlib.suppress(OSError):
      os.rmdir(private)


@contextlib.contextmanager
def building() -> Iterator[None]:
  """`quiet` and `no_temp_litter` together, while a builder is made (and prepared)."""
  with quiet(), no_temp_litter():
    yield
