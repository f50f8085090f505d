"""benchmarks.distillation: the summary and table, and one-line errors for bad arguments."""

import numpy as np
import pytest

from benchmarks import distillation


def test_summary_and_table():
  rows = [{"parameters": 100, "latency_ms": 0.1, "accuracy": a, "int8_accuracy": a - 0.01,
           "int8_latency_ms": 0.2, "bytes": 400, "int8_bytes": 160, "final_eval_accuracy": a}
          for a in (0.6, 0.7, 0.65)]
  s = distillation.summarise(rows)
  assert s["runs"] == 3
  assert s["accuracy"]["mean"] == pytest.approx(0.65)
  assert s["accuracy"]["sd"] == pytest.approx(np.std([0.6, 0.7, 0.65], ddof=1))
  assert ("| student | 3 | 100 | 400, 0.100 ± 0.000, 0.6500 ± 0.0500 | "
          "160, 0.200 ± 0.000, 0.6400 ± 0.0500 |") in distillation.table({"student": s})


@pytest.mark.parametrize("argv, field", [(["--student", "nope"], "'nope'"),
                                         (["--members", "1"], "--members=1"),
                                         (["--seeds", "1"], "--seeds=1"),
                                         (["--set", "nofield"], "--set 'nofield'")])
def test_bad_arguments_are_one_line(argv, field, capsys):
  with pytest.raises(SystemExit) as e:
    distillation.main(argv)
  assert e.value.code == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and field in err
