"""The report tools that compare runs (eval.lm, eval.attention, eval.forecast, eval.uncertainty)
on workdirs in object storage: each reads its runs' local copies, names each run by its URL and
uploads what it writes. `file://` URLs run the same mirror as `gs://` (tests/train/test_mirror.py;
the emulator's run is tests/train/test_remote_workdir.py)."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from train import remote_workdir

pytestmark = pytest.mark.slow  # trains four tiny runs, fits the forecast baselines


def _tool(module, args, cache):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=600,
                        env=dict(os.environ, JAX_PLATFORMS="cpu", STRATA_CACHE=str(cache)))


def _bucket(trained, name, tmp_path):
  """The tiny run of experiment `name`, uploaded to a file:// bucket: its URL and folder."""
  folder = tmp_path / "bucket" / name
  url = f"file://{folder}"
  remote_workdir.upload(trained(name), url)
  return url, folder


def test_the_comparison_tools_read_url_workdirs_and_upload_their_reports(trained, tmp_path):
  url, folder = _bucket(trained, "charlm_transformer", tmp_path)
  r = _tool("eval.lm", ["--workdir", url, "--split", "test"], tmp_path / "c1")
  assert r.returncode == 0, r.stderr[-2000:]
  assert f"| {url} | 20 |" in r.stdout

  r = _tool("eval.attention", ["--workdir", url, "--prompt", "def f(x):"], tmp_path / "c2")
  assert r.returncode == 0, r.stderr[-2000:]
  assert r.stdout.strip() == f"{url}/attention.png"
  assert (folder / "attention.png").read_bytes()[:4] == b"\x89PNG"

  url, folder = _bucket(trained, "series_mlp", tmp_path)
  r = _tool("eval.forecast", ["--workdir", url], tmp_path / "c3")
  assert r.returncode == 0, r.stderr[-2000:]
  saved = json.loads((folder / "forecast.json").read_text())
  assert [row["workdir"] for rows in saved["rows"].values() for row in rows
          if "workdir" in row] == [url]

  url, folder = _bucket(trained, "mnist1d_cnn", tmp_path)
  r = _tool("eval.uncertainty", ["--workdir", url, "--passes", "2"], tmp_path / "c4")
  assert r.returncode == 0, r.stderr[-2000:]
  report = json.loads((folder / "uncertainty" / "report.json").read_text())
  assert report["members"] == [url]
  assert not (folder / ".lock.json").exists()
