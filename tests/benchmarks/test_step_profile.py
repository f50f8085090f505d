from benchmarks import step_profile


def test_the_traced_ops_of_a_tiny_step_are_grouped_by_kind(data_dir):
  result = step_profile.profile("mnist1d_cnn", steps=2, tiny=True, data_dir=data_dir)
  assert result["step_ms"] > 0 and result["ops"]
  assert result["page_faults"] >= 0 and result["user_ms"] + result["sys_ms"] > 0
  # the CNN's layers: products with their patch matrices in training (arch.conv's im2col)
  assert any(name.startswith("dot") for name in result["ops"])
  # Only ops: not the thread pool's region markers nor the ops' end markers, which the trace
  # also records on XLA's threads (counted as ops, they made a step's op count 4x too high).
  assert not any(name.startswith(("ThreadpoolListener", "end: ")) for name in result["ops"])
  total = sum(ms for ms, _ in result["ops"].values())
  by_kind = step_profile.kinds(result["ops"])
  assert abs(sum(ms for ms, _ in by_kind.values()) - total) < 1e-9
  assert list(by_kind.values()) == sorted(by_kind.values(), key=lambda v: -v[0])
  text = step_profile.report("mnist1d_cnn", result, top=3)
  assert text.startswith("mnist1d_cnn: step") and text.count("\n| ") >= 3
  # by module: the convolution layers' gradients are found by their flax path
  by_module = step_profile.modules(result["ops"], result["sources"])
  assert abs(sum(ms for ms, _ in by_module.values()) - total) < 1e-9
  assert "backward CNN/conv*" in by_module, list(by_module)
  assert "| module | ms a step |" in step_profile.report("mnist1d_cnn", result, 3, by_module=True)


def test_kinds_drop_the_op_number():
  ops = {"dot.1": (1.0, 1.0), "dot.22": (2.0, 1.0), "transpose_copy_fusion": (0.5, 2.0)}
  assert step_profile.kinds(ops) == {"dot": (3.0, 2.0), "transpose_copy_fusion": (0.5, 2.0)}


def test_module_of_names_the_layer_path_with_repeated_layers_merged():
  m = step_profile.module_of
  assert (m("jit(step)/transpose(jvp(TransformerLM))/decoder/block1/attn/query/dot_general")
          == "backward TransformerLM/decoder/block*/attn/query")
  assert (m("jit(step)/jvp(TransformerLM)/decoder/block0/tanh")
          == "forward TransformerLM/decoder/block*")
  assert m("jit(step)/jvp(TransformerLM)/embed/jit(_take)/gather") == "forward TransformerLM/embed"
  assert (m("jit(step)/transpose(jvp(CNN))/conv1/transpose(jvp())/conv_general_dilated")
          == "backward CNN/conv*")
  assert (m("jit(step)/transpose(jvp(TransformerLM))/decoder/block2/attn/btnh,bsnh->bnts/"
            "dot_general") == "backward TransformerLM/decoder/block*/attn")
  assert m("jit(step)/add") == "forward (step)"
  assert m(None) == step_profile.NO_SOURCE
  ops = {"a": (1.0, 1.0), "b": (2.0, 2.0), "c": (0.5, 1.0)}
  sources = {"a": "jit(step)/jvp(M)/block0/x/dot_general", "b": "jit(step)/jvp(M)/block1/x/add"}
  assert step_profile.modules(ops, sources) == {"forward M/block*/x": (3.0, 3.0),
                                                step_profile.NO_SOURCE: (0.5, 1.0)}


def test_a_variant_of_the_step_is_profiled_with_its_change(data_dir, monkeypatch):
  import contextlib

  from benchmarks import step_variants

  entered = []

  @contextlib.contextmanager
  def change():
    entered.append(True)
    yield
  monkeypatch.setitem(step_variants.VARIANTS, "probe",
                      (change, {"xla_cpu_enable_fast_math": True}))
  result = step_profile.profile("mnist1d_cnn", steps=1, tiny=True, data_dir=data_dir,
                                variant="probe")
  assert entered == [True] and result["ops"]
