"""Compiling for a TPU slice this host does not have (train/topology.py, train/aot.py): slice
names as Cloud TPU and MaxText spell them, each paradigm's tiny experiment compiled for a v5e
2x2 through libtpu with its per-chip report, FLOPs against a count by hand, and a run that does
not fit refused with its fixes. Needs the `tpu` extra (libtpu); skipped without it."""

import importlib.util
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, load_experiment
from train import aot, memory, throughput, topology
from train.errors import FlagError

needs_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                  reason="libtpu (pip install -e '.[tpu]')")

# MaxText's accelerator_to_spec_map.py: name -> chip grid, and which dimensions wrap.
MAXTEXT = {
    "v5e-16": ((4, 4), (False, False, False)), "v5e-32": ((4, 8), (False, False, False)),
    "v5e-64": ((8, 8), (False, False, False)), "v5e-128": ((8, 16), (False, True, False)),
    "v5e-256": ((16, 16), (True, True, False)), "v6e-256": ((16, 16), (True, True, False)),
    "v4-8": ((2, 2, 1), (False,) * 3), "v4-16": ((2, 2, 2), (False,) * 3),
    "v4-32": ((2, 2, 4), (False,) * 3), "v4-64": ((2, 4, 4), (False,) * 3),
    "v4-128": ((4, 4, 4), (True,) * 3), "v5p-128": ((4, 4, 4), (True,) * 3),
    "v5p-256": ((4, 4, 8), (True,) * 3), "v5p-512": ((4, 8, 8), (True,) * 3),
    "v5p-1024": ((8, 8, 8), (True,) * 3),
}


@pytest.mark.parametrize("name", sorted(MAXTEXT))
def test_slice_names_give_maxtexts_grids(name):
  s = topology.parse(name)
  assert (s.shape, s.wrap) == MAXTEXT[name]
  # v4 and v5p names count TensorCores (two a chip); v5e and v6e names count chips
  assert s.chips == int(name.split("-")[1]) // (2 if name[:2] in ("v4", "v5") and
                                                name[:3] != "v5e" else 1)


@pytest.mark.parametrize("name,match", [
    ("v7-8", "expected a slice such as"), ("v5p-7", "count TensorCores"),
    ("v5e-12", "not a power of two"), ("v5e:4x4x4", "2 dimensions"),
])
def test_bad_slice_names_are_one_line(name, match):
  with pytest.raises(FlagError, match=match):
    topology.parse(name)


def test_the_estimate_is_never_below_the_roofline():
  v5e = next(c for c in throughput.PEAKS if c.kind == "TPU v5 lite")
  cost = {"flops": 197e12 * 0.010, "bytes accessed": 819e9 * 0.002}  # 10 ms of compute
  assert aot.estimate({**cost, "optimal_seconds": 0.012}, v5e)[1:] == (
      0.012, "the TPU compiler's cost model")
  compiler, seconds, source = aot.estimate({**cost, "optimal_seconds": -63.9}, v5e)
  assert compiler == -63.9 and seconds == pytest.approx(0.010) and "rejected" in source
  assert aot.estimate(cost, v5e)[1] == pytest.approx(0.010)  # no estimate given
  # 6 GB sent a step over a v5e chip's 200 GB/s out (half its 400 GB/s ICI): 30 ms, binding
  _, seconds, source = aot.estimate({**cost, "optimal_seconds": 0.012}, v5e, sent=6e9)
  assert seconds == pytest.approx(0.030) and "(interconnect)" in source


def test_without_libtpu_one_line_says_how_to_install_it(monkeypatch):
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
  with pytest.raises(ImportError, match=r"pip install -e '\.\[tpu\]'"):
    topology.devices(topology.parse("v5e:2x2"))


@needs_libtpu
@pytest.mark.parametrize("experiment", ["mnist1d_cnn", "digits_ae", "digits_dcgan"])
def test_each_paradigms_tiny_experiment_compiles_for_a_v5e_2x2(experiment, capsys):
  config = load_experiment(experiment, "tiny")
  report = aot.dry_run(config, "v5e:2x2")
  assert report.mesh == {"data": 4, "fsdp": 1, "tensor": 1} and report.chip.kind == "TPU v5 lite"
  assert report.fits and 0 < report.memory["total"] < report.chip.hbm
  assert report.memory["temporaries"] > 0 and report.eval_memory > 0
  assert report.flops > 0 and report.step_seconds > 0 and 0 < report.mfu <= 1
  assert set(report.compile_seconds) == {"init", "train step", "evaluation step"}
  out = "".join(capsys.readouterr())
  assert "compiled for v5e:2x2 (4 chips, 2x2)" in out and "memory per chip" in out
  assert "mesh data=4 x fsdp=1 x tensor=1, global batch" in out
  assert "MFU" in out and "examples/s" in out


@needs_libtpu
def test_flops_per_chip_equal_a_count_by_hand():
  # An MLP's step on a data-parallel slice, per chip with B its share of the batch: forward
  # 2*B*in*out a layer, the weights' gradients as much again, the inputs' gradients as much but
  # for the first layer's (the data needs none); the rest (activations, loss, Adam) is small.
  config = load_experiment("mnist1d_mlp", "tiny")
  with config.unlocked():
    config.model.widths = (512, 512)
    config.data.batch_size = 1024
  report = aot.compile_for(config, topology.parse("v5e:2x2"))
  dims, b = [40, 512, 512, 10], 1024 // 4
  layers = [2 * b * i * o for i, o in zip(dims, dims[1:])]
  by_hand = 3 * sum(layers) - layers[0]
  assert report.flops == pytest.approx(by_hand, rel=0.03)
  # the model's FLOPs, from the global program over the 4 chips, are the same count
  assert report.model_flops == pytest.approx(by_hand, rel=0.03)


@needs_libtpu
def test_a_run_that_does_not_fit_a_chip_is_refused_with_the_fixes():
  config = load_experiment("mnist1d_mlp", "tiny")
  with config.unlocked():
    config.model.widths = (50_000, 50_000)  # 10 GB of float32 parameters, thrice with Adam
  with pytest.raises(memory.OutOfMemoryError) as e:
    aot.dry_run(config, "v5e:2x2")
  line = str(e.value)
  assert "\n" not in line and "TPU v5 lite" in line and "v5e:2x2" in line
  assert "more mesh.fsdp" in line and "model.remat=True" in line


@needs_libtpu
def test_a_tiny_vit_with_a_tensor_axis_compiles_and_splits_its_blocks():
  config = load_experiment("imagenet_vit_s16", "tiny")
  with config.unlocked():
    config.mesh.tensor = 2
  report = aot.compile_for(config, topology.parse("v5e:2x2"))
  assert report.mesh == {"data": 2, "fsdp": 1, "tensor": 2} and report.fits
  # the blocks' kernels are halved on each chip; embeddings, norms and the head are not
  total = report.parameters_total
  assert total / 2 < report.memory["parameters"] < total


@needs_libtpu
def test_two_slices_put_the_data_axis_across_them():
  config = load_experiment("mnist1d_cnn", "tiny")
  with config.unlocked():
    config.data.batch_size = config.data.eval_batch_size = 128
  report = aot.compile_for(config, topology.parse("v5e:2x2", slices=2))
  assert report.mesh == {"data": 8, "fsdp": 1, "tensor": 1} and report.fits


@needs_libtpu
def test_a_cpu_process_beside_libtpu_prints_nothing_new():
  # JAX alone would try libtpu as a backend here and print its warnings (train/__init__.py)
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_PLATFORMS", "TPU_"))}
  out = subprocess.run([sys.executable, "-c", "import train, jax; print(jax.devices())"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
  assert out.returncode == 0 and out.stderr == "" and "CpuDevice" in out.stdout


def _train(*args, **env):
  return subprocess.run([sys.executable, "-m", "train", "--compilation_cache=", *args],
                        capture_output=True, text=True, cwd=ROOT, timeout=300,
                        env={**os.environ, **env})


def test_a_libtpu_crash_is_one_line_and_the_childs_own_lines_pass(capfd):
  # a child that says a line, then dies as libtpu does on an internal error (train/aot.py)
  crash = ("import os, sys; print('compiled for x', file=sys.stderr); "
           "print('F1203 12:00:00.000000 1 conv.h:17] Check failed: a == b (8 vs. 0)', "
           "file=sys.stderr); print('    @     0x7f  absl::LogMessage', file=sys.stderr); "
           "sys.stderr.flush(); os.abort()")
  with pytest.raises(aot.CompilerCrash) as e:
    aot.in_child([], "v5e:2x2", command=[sys.executable, "-c", crash])
  assert str(e.value) == (
      "libtpu crashed compiling for --topology=v5e:2x2 (SIGABRT: Check failed: a == b (8 vs. "
      "0)): an internal error of the TPU compiler, not of the run; another libtpu version may "
      "compile it (the tpu extra pins one)")
  assert e.value.exit_status == 1
  assert capfd.readouterr().err.splitlines()[0] == "compiled for x"
  aot.in_child([], "v5e:2x2", command=[sys.executable, "-c", "pass"])  # status 0: returns
  with pytest.raises(SystemExit) as e:
    aot.in_child([], "v5e:2x2", command=[sys.executable, "-c", "raise SystemExit(2)"])
  assert e.value.code == 2


@needs_libtpu
@pytest.mark.slow  # libtpu 0.0.42's own crash on this model's 1-D convolutions
def test_libtpus_crash_on_the_mnist1d_vae_is_one_line_naming_the_check():
  r = _train("--config", "experiments/mnist1d_vae.py:tiny", "--dry_run", "--topology", "v5e:2x2")
  lines = r.stderr.strip().splitlines()
  assert r.returncode == 1 and len(lines) == 1 and "Check failed" in lines[0], r.stderr[-2000:]


@needs_libtpu
@pytest.mark.slow  # 35 s: a UNet's convolutions are slow to compile for a TPU
def test_the_diffusion_tiny_experiment_compiles_for_a_v5e_2x2():
  report = aot.compile_for(load_experiment("digits_ddpm", "tiny"), topology.parse("v5e:2x2"))
  assert report.fits and report.flops > 0 and report.step_seconds > 0
