"""The first step of `gs://` workdirs: each client a run would write through works against a
local GCS emulator (tests/train/gcs_emulator.py): etils `epath` (gcsfs), TensorStore, and orbax's
CheckpointManager saving, listing and restoring a train-state-like tree."""

import numpy as np
import pytest

pytestmark = pytest.mark.slow

pytest.importorskip("gcp_storage_emulator")
pytest.importorskip("gcsfs")


def test_epath_tensorstore_and_orbax_work_against_the_emulator():
  import jax.numpy as jnp
  import orbax.checkpoint as ocp
  import tensorstore as ts
  from etils import epath

  from tests.train.gcs_emulator import emulator

  with emulator("bucket"):
    record = epath.Path("gs://bucket/run/metrics.jsonl")
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text('{"step": 1}\n')
    assert record.read_text() == '{"step": 1}\n'
    assert [p.name for p in epath.Path("gs://bucket/run").iterdir()] == ["metrics.jsonl"]

    array = ts.open({"driver": "zarr", "kvstore": "gs://bucket/run/array/", "create": True,
                     "metadata": {"shape": [4], "dtype": "<f4", "chunks": [2]}}).result()
    array.write(np.arange(4, dtype=np.float32)).result()
    np.testing.assert_array_equal(array.read().result(), np.arange(4))

    tree = {"params": {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)},
            "step": jnp.int32(7)}
    with ocp.CheckpointManager("gs://bucket/run/checkpoints",
                               options=ocp.CheckpointManagerOptions(max_to_keep=2)) as manager:
      for step in (1, 2, 3):
        manager.save(step, args=ocp.args.StandardSave(
            {**tree, "params": {k: v * step for k, v in tree["params"].items()}}))
      manager.wait_until_finished()
      assert manager.all_steps() == [2, 3]
      back = manager.restore(3, args=ocp.args.StandardRestore(tree))
    np.testing.assert_array_equal(back["params"]["w"], np.arange(6.0).reshape(2, 3) * 3)
    assert int(back["step"]) == 7
    assert sorted(p.name for p in epath.Path("gs://bucket/run/checkpoints").iterdir()) == [
        "2", "3"]
