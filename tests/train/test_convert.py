"""`python -m train.convert` as a user runs it (slow: fresh interpreters): a torchvision ResNet
file and a sharded Hugging Face GPT-2 folder become workdirs with --check's difference printed,
`init_from` starts a run from the ResNet one (its backbone copied, a new head for another class
count), the workdirs export back to what the reference libraries load, and nothing is
overwritten."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

if not all(importlib.util.find_spec(p) for p in ("torch", "torchvision", "transformers",
                                                 "tokenizers")):
  pytest.skip("the reference libraries are not installed: pip install -e '.[convert]'",
              allow_module_level=True)

MAKE = r'''
import sys, torch
from train import reference
tv, transformers = reference.import_torchvision(), reference.import_transformers()
g = torch.Generator().manual_seed(0)
def randomise(m):
  with torch.no_grad():
    for n, p in m.state_dict().items():
      if p.dtype.is_floating_point:
        p.copy_(torch.rand(p.shape, generator=g) + 0.5 if n.endswith("running_var")
                else torch.randn(p.shape, generator=g) * (0.05 if p.ndim > 1 else 0.5))
  return m
out = sys.argv[1]
torch.save(randomise(tv.models.resnet.ResNet(tv.models.resnet.BasicBlock, [1, 1, 1, 1],
                                             num_classes=4)).state_dict(), out + "/resnet.pth")
config = transformers.GPT2Config(vocab_size=40, n_positions=32, n_embd=32, n_layer=2, n_head=2)
randomise(transformers.GPT2LMHeadModel(config)).save_pretrained(out + "/gpt2",
                                                                max_shard_size="50KB")
import tokenizers  # the folder's own tokenizer: 30 words, fewer ids than the model's 40
words = {w: i for i, w in enumerate(["[UNK]"] + [f"w{i}" for i in range(29)])}
tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(words, unk_token="[UNK]"))
tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
tok.save(out + "/gpt2/tokenizer.json")
'''


def run(*args, cwd=ROOT):
  return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd,
                        timeout=600, env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_convert_check_init_from_and_export(tmp_path):
  r = subprocess.run([sys.executable, "-c", MAKE, str(tmp_path)], capture_output=True,
                     text=True, cwd=ROOT, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  r = run("train.convert", "--format", "torchvision", "--checkpoint", f"{tmp_path}/resnet.pth",
          "--out", f"{tmp_path}/resnet", "--model", "resnet18", "--image_size", "64", "--check")
  # resnet18's get_model has 2 blocks a stage: the 1-block file does not fit it, said in a line
  assert r.returncode == 1 and "does not fit the reference model" in r.stderr, r.stderr[-2000:]
  assert not os.path.exists(f"{tmp_path}/resnet")
  r = run("train.convert", "--format", "torchvision", "--checkpoint", f"{tmp_path}/resnet.pth",
          "--out", f"{tmp_path}/resnet")
  assert r.returncode == 0, r.stderr[-2000:]
  record = json.load(open(f"{tmp_path}/resnet/converted.json"))
  assert record["model"]["stage_sizes"] == [1, 1, 1, 1] and len(record["sha256"]) == 64

  r = run("train.convert", "--format", "hf", "--checkpoint", f"{tmp_path}/gpt2", "--out",
          f"{tmp_path}/gpt2_strata", "--check")
  assert r.returncode == 0, r.stderr[-2000:]
  record = json.load(open(f"{tmp_path}/gpt2_strata/converted.json"))
  check = record["check"]
  assert check["max_abs_difference"] <= 1e-4 * max(1.0, check["max_abs_logit"]), check
  # the folder's tokenizer comes along, and the workdir's config names the copy
  spec = f"hf:{tmp_path}/gpt2_strata/tokenizer.json"
  assert record["tokenizer"] == spec and os.path.isfile(spec[3:])
  assert json.load(open(f"{tmp_path}/gpt2_strata/config.json"))["data"]["tokenizer"] == spec
  assert "max |logit difference|" in r.stdout

  # a fine-tune from the converted ResNet: 10 classes where it had 4, so the head starts anew
  exp = tmp_path / "finetune.py"
  exp.write_text(
      "from experiments import shapes_resnet\n"
      "def get_config(arg=None):\n"
      "  c = shapes_resnet.get_config('tiny')\n"
      "  c.model = dict(name='cnn.ResNet', num_classes=10, stage_sizes=(1, 1, 1, 1),\n"
      "                 widths=(64, 128, 256, 512), stem='imagenet', padding='symmetric')\n"
      f"  c.init_from.workdir = {str(tmp_path / 'resnet')!r}\n"
      "  c.train.steps = 2\n"
      "  return c\n")
  r = run("train", "--config", str(exp), "--workdir", f"{tmp_path}/run")
  assert r.returncode == 0, r.stderr[-3000:]
  copied = json.load(open(f"{tmp_path}/run/init_from.json"))
  assert copied["kept_initialisation"] == ["head/bias", "head/kernel"]
  assert "stage3_block0/conv2/kernel" in copied["parameters"]

  r = run("train.convert", "--workdir", f"{tmp_path}/gpt2_strata", "--export",
          f"{tmp_path}/gpt2_back")
  assert r.returncode == 0, r.stderr[-2000:]
  compare = (
      "import sys, torch\nfrom train import reference\nt = reference.import_transformers()\n"
      "a, b = (t.GPT2LMHeadModel.from_pretrained(p).eval() for p in sys.argv[1:])\n"
      "x = torch.randint(0, 40, (2, 9))\nprint(float((a(x).logits - b(x).logits).abs().max()))\n")
  r = subprocess.run([sys.executable, "-c", compare, f"{tmp_path}/gpt2", f"{tmp_path}/gpt2_back"],
                     capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert r.returncode == 0 and float(r.stdout.split()[-1]) == 0.0, r.stderr[-2000:]

  r = run("train.convert", "--format", "hf", "--checkpoint", f"{tmp_path}/gpt2", "--out",
          f"{tmp_path}/gpt2_strata")
  assert r.returncode == 2 and "overwrites nothing" in r.stderr
