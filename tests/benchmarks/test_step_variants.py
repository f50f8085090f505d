import jax
import numpy as np
import pytest

from benchmarks import attention_variants, step_variants
from tests.conftest import load_experiment
from train import loop


def _first_step(config):
  run = loop.build(config)
  state = run.init_state()
  _, metrics = run.train_step(state, run.example, run.step_rng)
  dots = run.train_step.lower(state, run.example, run.step_rng).as_text().count("dot_general")
  return state.params, np.asarray(metrics), dots


def test_the_fused_projections_keep_the_parameters_and_the_step(data_dir):
  config = load_experiment("charlm_transformer", "tiny", data_dir)
  params, metrics, dots = _first_step(config)
  with step_variants._fused_qkv():
    fused_params, fused_metrics, fused_dots = _first_step(config)
  assert fused_dots < dots  # one projection's forward and backward dots instead of three's
  assert jax.tree.structure(params) == jax.tree.structure(fused_params)
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params),
                                                  jax.tree.leaves(fused_params)))
  np.testing.assert_allclose(fused_metrics, metrics, rtol=1e-5, atol=1e-6)


def test_variants_are_compiled_and_timed_in_alternate_windows(data_dir):
  got = step_variants.measure("charlm_transformer", ["strata", "causal_blocks_1", "fast_math"],
                              windows=2, steps=2, tiny=True, data_dir=data_dir)
  assert list(got) == ["strata", "causal_blocks_1", "fast_math"]
  assert all(len(r["rates"]) == 2 and min(r["rates"]) > 0 and r["compile_s"] > 0
             for r in got.values())


def test_the_table_gives_each_variant_s_window_pair_ratios_to_the_first():
  results = {"strata": {"rates": [10.0, 5.0, 8.0], "compile_s": 1.0},
             "other": {"rates": [11.0, 6.0, 4.0], "compile_s": 2.0}}
  lines = step_variants.table(results).splitlines()
  assert lines[2] == "| strata | 8.00 (5.00-10.00) | 1.000 (1.000-1.000) | 1.0 |"
  # ratios 1.1, 1.2, 0.5: their median, not the ratio of the medians (6.0 / 8.0)
  assert lines[3] == "| other | 6.00 (4.00-11.00) | 1.100 (0.500-1.200) | 2.0 |"


def test_attention_variants_choose_the_attention_kernel(data_dir):
  """attention_kernel_* set the LM's field; the variants of XLA's attention ops build it with
  XLA's ops, which the compiled kernel would otherwise bypass; a workload without the field is
  refused in one line."""
  calls = {v: step_variants.build("charlm_transformer", v, tiny=True, data_dir=data_dir)[
      "step"].as_text().count("strata_attention") for v in (
          "strata", "attention_kernel_xla", "attention_kernel_cpu", "causal_blocks_1")}
  assert calls["strata"] == calls["attention_kernel_cpu"] > 0  # the experiment sets "cpu"
  assert calls["attention_kernel_xla"] == calls["causal_blocks_1"] == 0
  with pytest.raises(ValueError, match=r"^--variants attention_kernel_cpu: workload mnist1d_cnn's "
                                       r"config has no field model\.attention_kernel$"):
    step_variants.build("mnist1d_cnn", "attention_kernel_cpu", tiny=True, data_dir=data_dir)


@pytest.mark.parametrize("variant", ["head_major", "late_normalised"])
def test_the_attention_variants_compute_strata_s_attention_and_gradients(variant):
  from arch import attention

  rng = np.random.default_rng(0)
  q, k, v = (jax.numpy.asarray(rng.normal(size=(2, 16, 4, 8)), np.float32) for _ in range(3))
  mask = jax.numpy.asarray(rng.random((2, 1, 16, 16)) < 0.8)

  def grads(causal):
    return jax.grad(lambda q, k, v: jax.numpy.sum(jax.numpy.sin(attention.dot_product_attention(
        q, k, v, mask=None if causal else mask, is_causal=causal))), argnums=(0, 1, 2))(q, k, v)
  for causal in (True, False):
    ours = grads(causal)
    with getattr(attention_variants, variant)():
      theirs = grads(causal)
    for a, b in zip(ours, theirs):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_every_variants_compile_options_are_accepted_by_this_jaxlib():
  import jax
  import jax.numpy as jnp

  step = jax.jit(lambda x: jnp.tanh(x @ x).sum())
  x = jnp.ones((16, 16))
  for name, (_, options) in step_variants.VARIANTS.items():
    if name == "onednn_dots":  # compiles tiny steps, but stops a real one's process (SIGILL)
      continue
    step.lower(x).compile(compiler_options=options)  # an unknown option raises


def test_batch_slices_compute_the_same_step_over_independent_slices(data_dir):
  config = load_experiment("charlm_transformer", "tiny", data_dir)
  config.train.xla_cpu_batch_slices = 1  # as the variants set it (step_variants.CONFIG)
  params, metrics, dots = _first_step(config)
  with step_variants._batch_slices(2):
    sliced_params, sliced_metrics, sliced_dots = _first_step(config)
  assert sliced_dots == 2 * dots  # every dot of the pass, forward and backward, once a slice
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params),
                                                  jax.tree.leaves(sliced_params)))
  np.testing.assert_allclose(sliced_metrics, metrics, rtol=1e-5, atol=1e-6)
