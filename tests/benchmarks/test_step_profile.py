from benchmarks import step_profile


def test_the_traced_ops_of_a_tiny_step_are_grouped_by_kind(data_dir):
  result = step_profile.profile("mnist1d_cnn", steps=2, tiny=True, data_dir=data_dir)
  assert result["step_ms"] > 0 and result["ops"]
  assert result["page_faults"] >= 0 and result["user_ms"] + result["sys_ms"] > 0
  assert any(name.startswith("convolution") or "conv" in name for name in result["ops"])
  # Only ops: not the thread pool's region markers nor the ops' end markers, which the trace
  # also records on XLA's threads (counted as ops, they made a step's op count 4x too high).
  assert not any(name.startswith(("ThreadpoolListener", "end: ")) for name in result["ops"])
  total = sum(ms for ms, _ in result["ops"].values())
  by_kind = step_profile.kinds(result["ops"])
  assert abs(sum(ms for ms, _ in by_kind.values()) - total) < 1e-9
  assert list(by_kind.values()) == sorted(by_kind.values(), key=lambda v: -v[0])
  text = step_profile.report("mnist1d_cnn", result, top=3)
  assert text.startswith("mnist1d_cnn: step") and text.count("\n| ") >= 3


def test_kinds_drop_the_op_number():
  ops = {"dot.1": (1.0, 1.0), "dot.22": (2.0, 1.0), "transpose_copy_fusion": (0.5, 2.0)}
  assert step_profile.kinds(ops) == {"dot": (3.0, 2.0), "transpose_copy_fusion": (0.5, 2.0)}
