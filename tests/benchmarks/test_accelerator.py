"""`python -m benchmarks.accelerator --tiny` end to end on CPU: every workload, with the PyTorch
twins where they exist, the same parameter count on both sides."""

import json

import pytest

from benchmarks import accelerator


@pytest.mark.slow
def test_tiny_accelerator_benchmark_runs_on_cpu(tmp_path, capsys):
  pytest.importorskip("torch")
  accelerator.main(["--tiny", "--steps", "2", "--out", str(tmp_path)])
  rows = json.load(open(tmp_path / "accelerator.json"))["workloads"]
  assert [r["workload"] for r in rows] == list(accelerator.WORKLOADS)
  for r in rows:
    assert r["steps_per_s"] > 0 and r["flops_per_step"] > 0 and 0 < r["mfu"] < 1
    if r["workload"] in ("gpt2_small", "unet"):
      assert r["torch_parameters"] == r["parameters"] and r["torch_steps_per_s"] > 0
  table = (tmp_path / "accelerator.md").read_text().splitlines()
  assert len(table) == 2 + len(rows) and "tokens/s" in table[2]


def test_bad_arguments_are_one_line(capsys):
  with pytest.raises(SystemExit) as e:
    accelerator.main(["--only", "gpt3"])
  assert e.value.code == 2
  assert capsys.readouterr().err.strip() == (
      "error: --only='gpt3': unknown workload(s) ['gpt3']; expected some of ['gpt2_small', "
      "'resnet50', 'unet']")
