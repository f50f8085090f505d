"""benchmarks.precision_spread: the summary against NumPy, the runs end to end (slow)."""

import json

import numpy as np
import pytest

from benchmarks import precision_spread


def test_summary_matches_numpy():
  f32, bf16 = [0.93, 0.95, 0.91], [0.90, 0.94, 0.92, 0.89]
  s = precision_spread.summarise({"float32": f32, "bfloat16": bf16}, lower_is_better=False)
  assert s["float32"]["mean"] == pytest.approx(np.mean(f32))
  assert s["float32"]["sd"] == pytest.approx(np.std(f32, ddof=1))
  assert s["bfloat16"]["sd"] == pytest.approx(np.std(bf16, ddof=1))
  gap = np.mean(bf16) - np.mean(f32)
  assert s["gap"] == pytest.approx(gap)
  assert s["gap_in_sd"] == pytest.approx(gap / np.std(f32, ddof=1))
  assert "| mnist1d_cnn | supervised | test accuracy | 0.93, 0.95, 0.91 |" in (
      precision_spread.table({"mnist1d_cnn": s}))


@pytest.mark.parametrize("argv, field", [(["--only", "mnist1d_cnn,nope"], "--only="),
                                         (["--seeds", "1"], "--seeds=1"),
                                         (["--steps", "-3"], "--steps=-3")])
def test_bad_arguments_are_one_line(argv, field, capsys):
  with pytest.raises(SystemExit) as e:
    precision_spread.main(argv)
  assert e.value.code == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and field in err


@pytest.mark.slow
def test_short_runs_of_each_precision_are_scored(tmp_path, capsys):
  precision_spread.main(["--only", "digits_vae", "--seeds", "2", "--steps", "30",
                         "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
  with open(tmp_path / "out" / "precision_spread.json") as f:
    r = json.load(f)["results"]["digits_vae"]
  for p in ("float32", "bfloat16"):
    assert len(r[p]["values"]) == 2 and all(v > 0 for v in r[p]["values"])
    config = json.loads((tmp_path / "runs" / "digits_vae" / p / "seed1" / "config.json").read_text())
    assert config["train"]["precision"] == p and config["seed"] == 1
  assert "| digits_vae | reconstruction |" in capsys.readouterr().out
