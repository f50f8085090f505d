"""A sharded bfloat16 Hugging Face checkpoint converts tensor by tensor (slow: fresh
interpreters): `read_state(lazy=True)` reads each tensor when the conversion asks for it, so the
conversion's peak memory is about the converted model's bfloat16 bytes, where reading the whole
checkpoint first (in float32, as `lazy=False` does) takes over twice as much; the converted
parameters stay bfloat16 and give transformers' logits."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

if not all(importlib.util.find_spec(p) for p in ("torch", "safetensors", "transformers")):
  pytest.skip("the reference libraries are not installed: pip install -e '.[convert]'",
              allow_module_level=True)

MAKE = r'''
import sys, torch
from train import reference
t = reference.import_transformers()
config = t.LlamaConfig(vocab_size=8192, hidden_size=512, intermediate_size=1536,
                       num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4,
                       max_position_embeddings=64, tie_word_embeddings=False,
                       bos_token_id=None, eos_token_id=None)
torch.manual_seed(0)
model = t.LlamaForCausalLM(config).to(torch.bfloat16)
model.save_pretrained(sys.argv[1], max_shard_size="10MB")
print(sum(p.numel() for p in model.parameters()))
'''

# Converts the folder in argv[1] (lazily or not: argv[2]) and prints, as JSON, the peak memory
# above what the process held just before, the converted dtypes and the largest logit
# difference from transformers' model loaded from the same folder.
CONVERT = r'''
import json, sys
import jax.numpy as jnp, numpy as np, torch
import arch
from train import published, published_files, reference
folder, lazy = sys.argv[1], sys.argv[2] == "lazy"
def status(field):
  with open("/proc/self/status") as f:
    return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))
with open("/proc/self/clear_refs", "w") as f:  # the peak (VmHWM) from here on: what came before
  f.write("5")                                  # (imports, their transient peaks) is not counted
before = status("VmRSS")
state = published_files.read_state(folder, lazy=lazy)
converted = published.convert("hf", state, 0, 0, "--checkpoint",
                              published_files.read_folder_config(folder))
peak = status("VmHWM") - before
dtypes = sorted({str(np.asarray(v).dtype) for v in
                 __import__("jax").tree.leaves(converted.variables["params"])})
tokens = np.random.default_rng(0).integers(0, 8192, (2, 8)).astype(np.int32)
ours = np.asarray(arch.build(converted.model).apply(converted.variables, jnp.asarray(tokens)))
ref = reference.import_transformers().LlamaForCausalLM.from_pretrained(
    folder, torch_dtype=torch.float32).eval()
with torch.no_grad():
  want = ref(torch.from_numpy(tokens.astype(np.int64))).logits.numpy()
print(json.dumps({"peak": peak, "dtypes": dtypes,
                  "diff": float(np.abs(ours - want).max()), "scale": float(np.abs(want).max())}))
'''


def _run(code, *args):
  r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                     cwd=ROOT, timeout=600, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert r.returncode == 0, r.stderr[-3000:]
  return r.stdout.strip().splitlines()[-1]


def test_a_sharded_bfloat16_checkpoint_converts_within_its_own_size(tmp_path):
  folder = str(tmp_path / "llama")
  params = int(_run(MAKE, folder))
  shards = json.load(open(f"{folder}/model.safetensors.index.json"))["weight_map"].values()
  assert len(set(shards)) >= 5
  size = 2 * params  # bytes in bfloat16
  lazy = json.loads(_run(CONVERT, folder, "lazy"))
  whole = json.loads(_run(CONVERT, folder, "whole"))
  assert lazy["dtypes"] == ["bfloat16"] and whole["dtypes"] == ["float32"]
  for r in (lazy, whole):  # the same values either way: bfloat16 widens to float32 exactly
    assert r["diff"] <= 1e-4 * max(1.0, r["scale"]), r
  # seen: 0.84x the bfloat16 size lazily, 2.5x read whole
  assert lazy["peak"] < 1.25 * size, (lazy["peak"] / size, whole["peak"] / size)
  assert whole["peak"] > 2 * lazy["peak"], (lazy["peak"] / size, whole["peak"] / size)
  print(f"{params:,} parameters ({size / 2**20:.0f} MiB in bfloat16): peak above the start "
        f"{lazy['peak'] / 2**20:.0f} MiB lazily, {whole['peak'] / 2**20:.0f} MiB read whole")
