"""`data.data_dir` at a URL (data/remote_data_dir.py) on `file://` URLs, which run the same code as
`gs://` (the emulator's run is in tests/train/test_remote_workdir.py): a dataset prepared on one
machine is uploaded and downloaded, not prepared again, on the next; an upload that did not finish
is not taken for a prepared dataset; a run trains, streaming, from the local copy."""

import json
import os

import numpy as np
import pytest

from data import remote_data_dir, sources
from tests.conftest import run_cli
from train import config as config_lib


def _info(source, url, cache, monkeypatch, **fields):
  monkeypatch.setenv("STRATA_CACHE", str(cache))
  c = config_lib.base().data
  c.source, c.data_dir = source, url
  for k, v in fields.items():
    c[k] = v
  return sources.source_info(c)


def test_a_dataset_prepared_on_one_machine_is_downloaded_on_the_next(tmp_path, monkeypatch,
                                                                      capfd):
  url = f"file://{tmp_path}/bucket/tfds"
  first = _info("mnist1d", url, tmp_path / "a", monkeypatch)
  err = capfd.readouterr().err
  assert "preparing the offline dataset 'mnist1d'" in err
  assert f"data.data_dir={url}: uploaded" in err
  build = os.path.relpath(first.data_dir, remote_data_dir.cache_for(url))
  assert (tmp_path / "bucket" / "tfds" / build / remote_data_dir.PREPARED).exists()

  second = _info("mnist1d", url, tmp_path / "b", monkeypatch)
  err = capfd.readouterr().err
  assert "preparing" not in err and f"data.data_dir={url}: downloading {build}" in err
  assert second.fingerprint == first.fingerprint and second.split_sizes == first.split_sizes
  assert second.data_dir.startswith(str(tmp_path / "b"))


def test_a_build_whose_upload_did_not_finish_is_prepared_again(tmp_path, monkeypatch, capfd):
  url = f"file://{tmp_path}/bucket/tfds"
  first = _info("digits", url, tmp_path / "a", monkeypatch)
  build = os.path.relpath(first.data_dir, remote_data_dir.cache_for(url))
  os.remove(tmp_path / "bucket" / "tfds" / build / remote_data_dir.PREPARED)  # cut short
  capfd.readouterr()
  again = _info("digits", url, tmp_path / "b", monkeypatch)
  err = capfd.readouterr().err
  assert "downloading" not in err and "preparing the offline dataset 'digits'" in err
  assert again.fingerprint == first.fingerprint  # the offline builders are deterministic
  assert (tmp_path / "bucket" / "tfds" / build / remote_data_dir.PREPARED).exists()


def test_a_table_source_takes_its_cached_encoding_along(tmp_path, monkeypatch, capfd):
  rows = ["x,colour,y"] + [f"{i / 10},{'red' if i % 3 else 'blue'},{i % 2}" for i in range(40)]
  (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
  url = f"file://{tmp_path}/bucket/tfds"
  first = _info(f"table:{tmp_path / 't.csv'}", url, tmp_path / "a", monkeypatch, label="y")
  second = _info(f"table:{tmp_path / 't.csv'}", url, tmp_path / "b", monkeypatch, label="y")
  assert "downloading" in capfd.readouterr().err
  assert second.encoding == first.encoding and second.fingerprint == first.fingerprint
  cached = [p for p in (tmp_path / "b").rglob("*.json") if p.parent.name == "strata_table"]
  assert len(cached) == 1 and json.loads(cached[0].read_text())


def test_a_run_streams_from_the_local_copy_of_a_url_data_dir(tmp_path):
  url = f"file://{tmp_path}/bucket/tfds"
  r = run_cli(["--config", "experiments/mnist1d_cnn.py:tiny", "--config.train.steps=30",
               f"--config.data.data_dir={url}", "--config.data.in_memory=False",
               f"--workdir={tmp_path / 'run'}"],
              env_extra={"JAX_PLATFORMS": "cpu", "STRATA_CACHE": str(tmp_path / "cache")})
  assert r.returncode == 0, r.stderr[-2000:]
  assert f"data.data_dir={url}: uploaded" in r.stderr
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["steps"] == 30 and np.isfinite(summary["final_eval"]["loss"])


@pytest.mark.slow  # gcsfs retries for about a minute
def test_an_unreachable_data_dir_bucket_is_one_data_error(tmp_path, monkeypatch):
  pytest.importorskip("gcsfs")
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
  monkeypatch.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
  with pytest.raises(sources.DataError, match="data.data_dir=gs://nobucket/tfds cannot be read"):
    _info("breast_cancer", "gs://nobucket/tfds", tmp_path / "a", monkeypatch)


def test_a_catalog_dataset_in_neither_copy_names_the_bucket(tmp_path, monkeypatch):
  url = f"file://{tmp_path}/bucket/tfds"
  with pytest.raises(sources.DataError) as e:
    _info("mnist", url, tmp_path / "a", monkeypatch)
  assert f"dataset not prepared in data_dir='{url}'" in str(e.value)
  assert f"to {url}, or set data.download=True" in str(e.value)
