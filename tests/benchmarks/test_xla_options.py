from benchmarks import xla_options


def test_each_variant_is_compiled_and_timed_in_alternate_windows(data_dir):
  rates = xla_options.measure("mnist1d_cnn", windows=2, seconds=0.05, tiny=True,
                              data_dir=data_dir)
  assert list(rates) == list(xla_options.VARIANTS)
  assert all(len(r) == 2 and min(r) > 0 for r in rates.values())
  text = xla_options.table({"mnist1d_cnn": rates})
  assert text.count("| mnist1d_cnn |") == len(xla_options.VARIANTS)
  assert "| 1.00x |" in text.splitlines()[2]  # jax's default is the reference
