"""train.xla_cpu_ynnpack: the run's compiled CPU steps hand no op to YNNPACK unless it is set,
and it is a resumable change."""

from tests.train.test_loop import _tiny
from train import loop, resumable
from train import run as run_lib


def _ynn_calls(compiled) -> int:
  return compiled.as_text().count("__ynn_fusion")


def test_the_steps_compile_without_ynnpack_unless_it_is_asked_for(data_dir):
  # the tiny CNN's dense head is a dot, which jax's default hands to YNNPACK on CPU
  counts = {}
  for ynnpack in (False, True):
    run = loop.build(_tiny("mnist1d_cnn", data_dir, **{"train.xla_cpu_ynnpack": ynnpack}))
    train = run_lib.compile_train_step(run)
    evaluate = run.eval_step.lower(run.abstract, run_lib.abstract_batch(run),
                                   run.step_rng).compile()
    counts[ynnpack] = (_ynn_calls(train), _ynn_calls(evaluate))
  assert counts[False] == (0, 0)
  assert min(counts[True]) > 0


def test_the_options_are_for_cpu_only(data_dir):
  config = _tiny("mnist1d_cnn", data_dir)
  assert run_lib.compiler_options(config, "cpu") == {"xla_cpu_experimental_ynn_fusion_type": ""}
  assert run_lib.compiler_options(config, "tpu") is None
  assert run_lib.compiler_options(config, "gpu") is None
  config.train.xla_cpu_ynnpack = True
  assert run_lib.compiler_options(config, "cpu") is None


def test_it_is_a_resumable_change():
  assert "train.xla_cpu_ynnpack" in resumable.RESUMABLE_CHANGES
