import numpy as np
import pytest

from data import builders, sources
from tests.conftest import FROZEN_MNIST1D
from train import config as config_lib


def _data_config(source, data_dir, **kw):
  c = config_lib.base().data
  c.source, c.data_dir = source, data_dir
  for k, v in kw.items():
    c[k] = v
  return c


def test_mnist1d_equals_the_papers_frozen_data(data_dir):
  frozen = np.load(FROZEN_MNIST1D)
  c = _data_config("mnist1d", data_dir)
  for split, xk, yk in (("train", "x", "y"), ("test", "x_test", "y_test")):
    arrays = sources.load_split(c, split)
    assert arrays.inputs.dtype == np.float64
    np.testing.assert_allclose(arrays.inputs, frozen[xk], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(arrays.labels, frozen[yk])
  assert sources.source_info(c).split_sizes == {"train": 4000, "test": 1000}


def test_canonical_mnist1d_args_equal_the_packages():
  from mnist1d.data import get_dataset_args

  args = dict(get_dataset_args(as_dict=True))
  args.pop("url")
  assert args == builders.MNIST1D_CANONICAL_ARGS


def test_sklearn_sources_have_the_documented_stratified_splits(data_dir):
  from sklearn.datasets import load_breast_cancer, load_digits

  for name, loader, sizes in (("digits", load_digits, (1437, 360)),
                              ("breast_cancer", load_breast_cancer, (455, 114))):
    c = _data_config(name, data_dir)
    info = sources.source_info(c)
    assert (info.split_sizes["train"], info.split_sizes["test"]) == sizes
    full = np.bincount(loader().target) / len(loader().target)
    for split in ("train", "test"):
      frac = np.bincount(sources.load_split(c, split).labels) / sizes[split == "test"]
      np.testing.assert_allclose(frac, full, atol=0.01)  # stratified


def test_fingerprint_is_stable_across_builds_and_changes_with_arguments(data_dir, tmp_path):
  a = sources.source_info(_data_config("digits", data_dir)).fingerprint
  b = sources.source_info(_data_config("digits", str(tmp_path / "again"))).fingerprint
  assert a == b and len(a) == 64
  small = _data_config("mnist1d", str(tmp_path / "m"))
  small.builder_config = {"num_samples": 200}
  info = sources.source_info(small)
  assert info.split_sizes == {"train": 160, "test": 40}
  assert info.fingerprint != sources.source_info(_data_config("mnist1d", data_dir)).fingerprint


def test_unknown_generator_argument_is_named(tmp_path):
  c = _data_config("mnist1d", str(tmp_path))
  c.builder_config = {"num_sampels": 10}
  with pytest.raises(ValueError, match=r"num_sampels.*expected some of.*num_samples"):
    sources.source_info(c)


def test_unknown_source_lists_the_offline_ones(tmp_path):
  with pytest.raises(sources.DataError, match=r"'no_such_data'.*digits.*mnist1d"):
    sources.source_info(_data_config("no_such_data", str(tmp_path)))


def test_unprepared_catalog_dataset_says_where_and_how(tmp_path):
  with pytest.raises(sources.DataError) as e:
    sources.source_info(_data_config("mnist", str(tmp_path)))
  msg = str(e.value)
  assert "'mnist'" in msg and str(tmp_path) in msg and "download_and_prepare" in msg


def test_unknown_split_is_named(data_dir):
  with pytest.raises(sources.DataError, match=r"'validation'.*expected one of \['test', 'train'\]"):
    sources.load_split(_data_config("digits", data_dir), "validation")


def test_catalog_path_with_tfds_mock_data(tmp_path):
  """The catalog goes through the same builder/as_data_source path (TFDS's own mock data)."""
  import tensorflow_datasets as tfds

  c = _data_config("mnist", str(tmp_path), download=True)  # mocked download_and_prepare
  with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
    sources._cached_builder.cache_clear()
    sources._cached_split.cache_clear()
    info = sources.source_info(c)
    arrays = sources.load_split(c, "train")
  sources._cached_builder.cache_clear()
  sources._cached_split.cache_clear()
  assert info.num_classes == 10 and info.input_key == "image"
  assert arrays.inputs.shape == (12, 28, 28, 1) and arrays.labels.shape == (12,)


def test_preparing_an_offline_source_says_one_line(tmp_path, capfd):
  """A first run prints what it builds and where, not TFDS's warnings and progress bars."""
  c = _data_config("digits", str(tmp_path))
  sources.source_info(c)
  out, err = capfd.readouterr()
  lines = [line for line in (out + err).splitlines() if line.strip()]
  assert lines == [f"preparing the offline dataset 'digits' in {tmp_path}/strata_digits/1.0.0 "
                   "(once; later runs reuse it)"], lines
  sources.load_split(c, "train")
  assert not "".join(capfd.readouterr()).strip()  # prepared: nothing more


def test_preparing_a_dataset_leaves_nothing_in_the_temporary_directory(tmp_path, monkeypatch):
  # TFDS's DatasetBuilder, made on a data dir not yet prepared, left an empty directory in /tmp
  # for every dataset prepared (DatasetInfo.initialize_from_bucket)
  import tempfile

  from data import sources
  from train import config as config_lib

  temp = tmp_path / "temp"
  temp.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(temp))
  c = config_lib.base().data
  c.source, c.data_dir = "breast_cancer", str(tmp_path / "tfds")
  sources.source_info(c)
  assert (tmp_path / "tfds").exists() and not list(temp.iterdir())
  assert tempfile.tempdir == str(temp)  # restored
