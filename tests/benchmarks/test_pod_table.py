"""The pod table's rows, its markdown, and the vendored anchors against strata's models
(`benchmarks/pod_table.py`, `benchmarks/third_party/`). The compiles themselves are the
benchmark's (docs/pods.md); `tests/train/test_aot.py` tests the compile path they share."""

import jax
import jax.numpy as jnp
import pytest

from benchmarks import pod_table
from train import config as config_lib
from train import topology


def test_every_strata_row_is_a_valid_config_for_a_known_slice():
  names = [r.name for r in pod_table.ROWS]
  assert len(names) == len(set(names))
  for row in pod_table.ROWS:
    topology.parse(row.topology, row.slices)
    if row.who != "strata":
      continue
    config = config_lib.override(config_lib.load(row.spec), dict(row.overrides), flag="")
    if row.group in ("lm", "depth", "scale"):
      chips = pod_table.CHIPS[row.topology]  # a slice's
      m = config.mesh
      # the data axis spans the slices, a slice is FSDP (and tensor) only
      assert (m.data, m.fsdp * m.tensor, config.data.batch_size) == (
          row.slices, chips, 16 * chips * row.slices)
      assert config.model.scan_layers == ("unscanned" not in row.model)


def _row(who, step_s, **kw):
  row = dict(model="ResNet-50", topology="v5e:2x2", who=who, chips=4, mesh={"data": 4},
             global_batch=1024, memory=5e9, eval_memory=1e9, hbm=16e9, fits=True, flops=1e12,
             bytes=1e10, step_s=step_s, estimate="roofline bound; ...", mfu=0.1,
             tokens_per_example=0, compile_s={"train step": 12.4})
  return {**row, **kw}


def test_the_table_gives_the_ratio_to_the_anchor_and_the_failures():
  rows = [_row("strata", 0.050, model_flops=9e11, sent={"all-reduce": 1.5e8, "all-gather": 5e7},
               estimate="roofline bound (HBM); ..."), _row("flax", 0.100),
          dict(model="lm1.3b fsdp", topology="v5e-16", who="strata", chips=16,
               error="the compile did not finish in 900 s")]
  # compiled 1e12 below the model's 4e12: the traffic is a lower bound
  rows.append(dict(_row("strata", 0.2, model_flops=4e12), model="lm350m fsdp"))
  lines = pod_table.table(rows).splitlines()
  assert "| 1,000 (4,000) | ≥ 10 | - | 200 ms (roofline) |" in lines.pop()
  assert len(lines) == 2 + 3
  assert ("| ResNet-50 | v5e:2x2 (4) | strata | data 4 | 5 GB of 16 GB | 1,000 (900) | 10 | "
          "0.2 | 50 ms (roofline: HBM) |") in lines[2]
  assert "20,480 img/s | at most 10.0% | 12 s |" in lines[2]
  assert "| 1,000 | 10 | - | 100 ms (roofline); strata / anchor 0.50" in lines[3]
  assert "| lm1.3b fsdp | v5e-16 (16) | strata | | | the compile did not finish in 900 s |" \
      in lines[4]


def test_a_bad_group_is_one_line(capsys):
  with pytest.raises(SystemExit) as e:
    pod_table.main(["--rows", "nope"])
  assert e.value.code == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: --rows=nope: no group or row 'nope'") and "\n" not in err


def _count(model, x, **kw):
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, **kw))
  return sum(a.size for a in jax.tree.leaves(shapes["params"]))


def test_the_anchors_models_are_strata_recipes_models():
  from arch.transformer import ViTB16, ViTS16
  from benchmarks.third_party.big_vision_vit import train as bv_train
  from benchmarks.third_party.big_vision_vit import vit
  from benchmarks.third_party.flax_imagenet import models

  x = jnp.zeros((1, 224, 224, 3))
  # torchvision's resnet50(): 25,557,032 parameters, as strata's (tests/arch)
  assert _count(models.ResNet50(num_classes=1000), x, train=False) == 25_557_032
  big_vision = vit.Model(num_classes=1000, **bv_train.CONFIG["model"])
  assert _count(big_vision, x) == _count(ViTS16(num_classes=1000), x, train=False)
  b16 = vit.Model(num_classes=1000, **dict(bv_train.CONFIG["model"], variant="B/16"))
  assert _count(b16, x) == _count(ViTB16(num_classes=1000), x, train=False)


def test_redo_replaces_only_the_rows_asked_for_and_records_the_commit(tmp_path, monkeypatch):
  import json

  out = tmp_path / "rows.jsonl"
  names = [r.name for r in pod_table.ROWS if r.group == "anchors"][:3]
  out.write_text("".join(json.dumps(dict(_row("strata", 0.1), name=n, group="anchors"))
                         + "\n" for n in names))
  monkeypatch.setattr(pod_table, "_child", lambda row, timeout, dump: _row("strata", 0.3))
  pod_table.main(["--rows", names[1], "--out", str(out)])  # present: not compiled again
  assert [json.loads(x)["step_s"] for x in out.read_text().splitlines()] == [0.1] * 3
  pod_table.main(["--rows", names[1], "--out", str(out), "--redo"])
  rows = [json.loads(x) for x in out.read_text().splitlines()]
  assert [(r["name"], r["step_s"]) for r in rows] == [(names[0], 0.1), (names[2], 0.1),
                                                      (names[1], 0.3)]
  assert rows[-1]["commit"] == pod_table._commit()  # "" outside a git checkout


def test_dump_hlo_writes_each_compiled_module(tmp_path, monkeypatch):
  monkeypatch.setattr(jax.stages.Lowered, "compile", jax.stages.Lowered.compile)  # restored after
  pod_table._dump_modules(str(tmp_path), "ViT-S/16@v5e:2x2/big_vision")
  jax.jit(lambda x: jnp.tanh(x) * 2).lower(jnp.ones(3)).compile()
  jax.jit(lambda x: x @ x.T).lower(jnp.ones((2, 3))).compile()
  names = sorted(p.name for p in tmp_path.iterdir())
  assert names == ["ViT-S_16_v5e_2x2_big_vision.1.txt", "ViT-S_16_v5e_2x2_big_vision.2.txt"]
  assert "tanh" in (tmp_path / names[0]).read_text()
