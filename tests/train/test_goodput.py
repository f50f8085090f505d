"""Goodput (train/goodput.py): where a run's wall time goes, in every train record of
throughput.jsonl and in summary.json, with metrics.jsonl left free of timings."""

import json
import os

import pytest

from train import goodput


def test_shares_split_a_window_and_add_up_to_one(monkeypatch):
  clock = iter([0.0, 1.0, 1.5, 2.0, 2.2, 2.2, 4.0, 10.0, 14.0, 14.0])
  monkeypatch.setattr(goodput.time, "perf_counter", lambda: next(clock))
  g = goodput.Goodput()                       # t = 0
  with g.phase("compile"):                    # 1.0 .. 1.5
    pass
  g.add("data_wait", 0.1)
  g.step()
  g.step()
  with g.phase("evaluation"):                 # 2.0 .. 2.2
    pass
  with g.phase("checkpoint"):                 # 2.2 .. 4.0
    pass
  r = g.record()                              # t = 10: a 10 s window
  assert r["share_compile"] == pytest.approx(0.05)
  assert r["share_evaluation"] == pytest.approx(0.02)
  assert r["share_checkpoint"] == pytest.approx(0.18)
  assert r["share_data_wait"] == pytest.approx(0.01)
  assert r["share_training"] == pytest.approx(0.74)
  assert r["data_wait_ms_per_step"] == pytest.approx(50.0)
  assert sum(v for k, v in r.items() if k.startswith("share_")) == pytest.approx(1.0)
  assert g.record()["share_training"] == pytest.approx(1.0)  # t = 14: 4 s of nothing else
  totals = g.totals()                         # the whole run, t = 0 .. 14
  assert totals["wall_s"] == pytest.approx(14.0)
  assert totals["share_training"] == pytest.approx((14 - 0.5 - 0.1 - 0.2 - 1.8) / 14)
  assert totals["compile_s"] == pytest.approx(0.5) and totals["checkpoint_s"] == pytest.approx(1.8)


def test_every_train_record_of_the_default_run_carries_goodput(trained):
  workdir = trained("mnist1d_cnn")
  with open(os.path.join(workdir, "throughput.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert records
  for r in records:
    shares = [r[f"share_{p}"] for p in ("training", *goodput.PHASES)]
    assert all(0 <= s <= 1 for s in shares) and sum(shares) == pytest.approx(1.0)
    assert r["data_wait_s"] >= 0 and r["data_wait_ms_per_step"] >= 0
  assert records[0]["share_compile"] > 0  # the train step is compiled before the first window
  with open(os.path.join(workdir, "summary.json")) as f:
    total = json.load(f)["goodput"]
  assert 0 < total["share_training"] < 1 and total["compile_s"] > 0 and total["evaluation_s"] > 0
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    text = f.read()
  assert "share_" not in text and "data_wait" not in text


def test_the_compilation_cache_s_hits_are_counted(tmp_path):
  # a step compiled twice through a fresh persistent cache: asked twice, served the second time
  import jax
  import jax.numpy as jnp

  from train import compilation_cache

  old = (jax.config.jax_compilation_cache_dir,
         jax.config.jax_persistent_cache_min_compile_time_secs)
  # the cache keeps even this quick compile (the default run's 0.13 s evaluation step is one)
  compilation_cache.use_compilation_cache(str(tmp_path))
  try:
    g = goodput.Goodput()
    x = jax.ShapeDtypeStruct((7,), jnp.float32)
    for _ in range(2):
      jax.jit(lambda x: jnp.sin(x) * 3.25 + 17.5).lower(x).compile()
      jax.clear_caches()  # the second compile goes past the in-memory cache to the disk's
    counts = g.record()
  finally:
    jax.config.update("jax_compilation_cache_dir", old[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])
  assert counts["compile_cache_requests"] == 2 and counts["compile_cache_hits"] == 1, counts
  # JAX's own figure: the compile time the hit saved, less the read (negative for a quick one)
  assert counts["compile_seconds_saved"] != 0 and g.totals()["compile_cache_hits"] == 1
