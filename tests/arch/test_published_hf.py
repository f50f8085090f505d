"""Hugging Face GPT-2 (arch/published/hf_layout.py) against `transformers` itself: a GPT-2 with
every parameter randomised, saved in shards by `save_pretrained` and read shard by shard, gives
transformers' logits (float32: 1.9e-6 at logits of 4.6 here), its output layer the embedding as
GPT-2's is, and the same 20 greedy tokens from
strata's cached decoding (`train.generate`) as transformers' `generate`, each step's top-1 ahead
of the second by far more than the logits differ; export writes a folder `from_pretrained` loads
with the same logits."""

import importlib.util
import os

import jax.numpy as jnp
import numpy as np
import pytest

import arch
from arch.published import hf_layout
from train import generate, published_files, reference

if not all(importlib.util.find_spec(p) for p in ("torch", "torchvision", "transformers")):
  pytest.skip("the reference libraries are not installed: pip install -e '.[convert]'",
              allow_module_level=True)
import torch  # noqa: E402

transformers = reference.import_transformers()


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
  """A random GPT-2 (vocabulary 50, width 64, 2 blocks of 4 heads) saved in 6 shards: embeddings
  large and the rest small, so that greedy decoding wanders instead of repeating one token."""
  config = transformers.GPT2Config(vocab_size=50, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                                   bos_token_id=0, eos_token_id=None)
  module = transformers.GPT2LMHeadModel(config)
  g = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for name, p in module.named_parameters():
      scale = 2.0 if ("wte" in name or "wpe" in name) else (0.15 if p.ndim > 1 else 0.5)
      p.copy_(torch.randn(p.shape, generator=g) * scale)
  folder = str(tmp_path_factory.mktemp("gpt2") / "gpt2")
  module.save_pretrained(folder, max_shard_size="100KB")
  return module.eval(), folder


def test_gpt2_from_shards_gives_transformers_logits_and_greedy_tokens(gpt2):
  module, folder = gpt2
  assert len([f for f in os.listdir(folder) if f.endswith(".safetensors")]) > 1
  state = published_files.read_state(folder)
  heads = published_files.read_folder_config(folder)["n_head"]
  converted = hf_layout.gpt2(state, heads)
  assert converted.model["depth"] == 2 and converted.model["norm_epsilon"] == 1e-5
  model = arch.build(converted.model)
  tokens = np.random.default_rng(0).integers(0, 50, (2, 10))
  with torch.no_grad():
    want = module(torch.from_numpy(tokens)).logits.numpy()
  got = np.asarray(model.apply(converted.variables, jnp.asarray(tokens)))
  diff = float(np.max(np.abs(got - want)))
  assert diff <= 1e-4 * max(1.0, float(np.max(np.abs(want)))), diff

  prompt = torch.from_numpy(tokens[:1])  # holds a 0, the pad id: the mask says it is a token
  out = module.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20,
                        do_sample=False, output_scores=True, return_dict_in_generate=True,
                        pad_token_id=0)
  theirs = out.sequences[0, 10:].numpy()
  margins = [float(np.diff(np.sort(s[0].numpy())[-2:])[0]) for s in out.scores]
  assert min(margins) > 100 * diff  # no near-tie that a 1e-5 difference could flip
  assert len(set(theirs.tolist())) > 3  # a path, not one token repeated
  ours = np.asarray(generate.generate(model, converted.variables["params"],
                                      jnp.asarray(tokens[:1], jnp.int32), 20, temperature=0))[0]
  np.testing.assert_array_equal(ours, theirs)


def test_gpt2_exports_to_a_folder_transformers_loads(gpt2, tmp_path):
  module, folder = gpt2
  converted = hf_layout.gpt2(published_files.read_state(folder), 4)
  state, config = hf_layout.to_hf(converted.model, converted.variables)
  assert config["tie_word_embeddings"] and "lm_head.weight" not in state
  published_files.write_folder(str(tmp_path / "back"), state, config)
  back = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "back")).eval()
  x = torch.from_numpy(np.random.default_rng(1).integers(0, 50, (2, 12)))
  with torch.no_grad():
    np.testing.assert_array_equal(back(x).logits.numpy(), module(x).logits.numpy())
  # a file whose output layer is not the embedding: a head of its own, exported untied
  untied = dict(published_files.read_state(folder))
  untied["lm_head.weight"] = untied["transformer.wte.weight"] * 2
  converted = hf_layout.gpt2(untied, 4)
  assert not converted.model["tie_embeddings"]
  state, config = hf_layout.to_hf(converted.model, converted.variables)
  assert not config["tie_word_embeddings"]
  np.testing.assert_array_equal(state["lm_head.weight"], untied["lm_head.weight"])
  converted.variables["params"]["head"]["bias"] += 1  # trained a bias GPT-2 has no place for
  with pytest.raises(hf_layout.L.ConversionError, match="no GPT-2 equivalent"):
    hf_layout.to_hf(converted.model, converted.variables)
