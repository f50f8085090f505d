"""Hugging Face Llama-family decoders (arch/published/hf_llama.py) against `transformers`'
`LlamaForCausalLM` itself, every parameter randomised: grouped-query attention, a tied or
untied output layer, Llama 3's rotary scaling, Qwen2's query, key and value biases; strata's
`transformer.Llama` gives transformers' logits (float32) and the same 20 greedy tokens from its
cached decoding, each step's top-1 ahead of the second by far more than the logits differ;
export gives a folder `from_pretrained` loads with the same logits."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import arch
from arch.published import hf_llama
from train import generate, published_files, reference

if not all(importlib.util.find_spec(p) for p in ("torch", "torchvision", "transformers")):
  pytest.skip("the reference libraries are not installed: pip install -e '.[convert]'",
              allow_module_level=True)
import torch  # noqa: E402

transformers = reference.import_transformers()

CASES = {
    "gqa_untied": dict(num_key_value_heads=2, tie_word_embeddings=False),
    # Qwen2: biases on the query, key and value projections alone, rotary base 1e6, tied
    "qwen2_tied": dict(num_key_value_heads=2, tie_word_embeddings=True, qwen2=True,
                       rope_parameters={"rope_type": "default", "rope_theta": 1e6}),
    "tied_llama3_rope": dict(num_key_value_heads=1, tie_word_embeddings=True, rope_parameters={
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
}


def llama(case: str):
  kw = dict(CASES[case])
  config_class, model_class = ((transformers.Qwen2Config, transformers.Qwen2ForCausalLM)
                               if kw.pop("qwen2", False) else
                               (transformers.LlamaConfig, transformers.LlamaForCausalLM))
  config = config_class(vocab_size=60, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=64, rms_norm_eps=1e-5,
                        bos_token_id=None, eos_token_id=None, **kw)
  module = model_class(config)
  g = torch.Generator().manual_seed(3)
  with torch.no_grad():
    for name, p in module.named_parameters():
      scale = 0.5 if "embed" in name else (0.3 if p.ndim > 1 else 0.5)
      p.copy_(torch.randn(p.shape, generator=g) * scale + (1.0 if p.ndim == 1 else 0.0))
  return module.eval()


@pytest.mark.parametrize("case", sorted(CASES))
def test_llama_gives_transformers_logits_greedy_tokens_and_exports_back(case, tmp_path):
  module = llama(case)
  module.save_pretrained(str(tmp_path / "hf"))
  state = published_files.read_state(str(tmp_path / "hf"))
  config = published_files.read_folder_config(str(tmp_path / "hf"))
  converted = hf_llama.llama(state, config)
  assert converted.model["tie_embeddings"] == CASES[case]["tie_word_embeddings"]
  assert converted.model["num_kv_heads"] == CASES[case]["num_key_value_heads"]
  assert converted.model["qkv_bias"] == CASES[case].get("qwen2", False)
  model = arch.build(converted.model)
  tokens = np.random.default_rng(0).integers(0, 60, (2, 24))  # past the 16 of llama3's context
  with torch.no_grad():
    want = module(torch.from_numpy(tokens)).logits.numpy()
  got = np.asarray(model.apply(converted.variables, jnp.asarray(tokens)))
  diff = float(np.max(np.abs(got - want)))
  assert diff <= 1e-4 * max(1.0, float(np.max(np.abs(want)))), diff

  prompt = torch.from_numpy(tokens[:1, :8])
  out = module.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20,
                        do_sample=False, output_scores=True, return_dict_in_generate=True,
                        pad_token_id=0)
  theirs = out.sequences[0, 8:].numpy()
  margins = [float(np.diff(np.sort(s[0].numpy())[-2:])[0]) for s in out.scores]
  assert min(margins) > 100 * diff and len(set(theirs.tolist())) > 3, (margins, theirs)
  ours = generate.generate(model, converted.variables["params"],
                           jnp.asarray(tokens[:1, :8], jnp.int32), 20, temperature=0)
  np.testing.assert_array_equal(np.asarray(ours)[0], theirs)

  back_state, back_config = hf_llama.to_hf(converted.model, converted.variables)
  published_files.write_folder(str(tmp_path / "back"), back_state, back_config)
  assert back_config["model_type"] == module.config.model_type
  back = type(module).from_pretrained(str(tmp_path / "back")).eval()
  with torch.no_grad():
    np.testing.assert_array_equal(back(torch.from_numpy(tokens)).logits.numpy(), want)


def test_llama_variants_strata_cannot_build_are_one_line():
  module = transformers.LlamaForCausalLM(transformers.LlamaConfig(
      vocab_size=20, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
      num_attention_heads=2, attention_bias=True))
  state = {k: v.numpy() for k, v in module.state_dict().items()}
  with pytest.raises(hf_llama.L.ConversionError, match="has biases"):
    hf_llama.llama(state, module.config.to_dict())
  config = {**module.config.to_dict(), "attention_bias": False,
            "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}}
  with pytest.raises(hf_llama.L.ConversionError, match="rope_type='yarn'"):
    hf_llama.llama({k: v for k, v in state.items() if not k.endswith("bias")}, config)
  config = {**module.config.to_dict(), "attention_bias": False, "use_sliding_window": True}
  with pytest.raises(hf_llama.L.ConversionError, match="use_sliding_window=True"):
    hf_llama.llama({k: v for k, v in state.items() if not k.endswith("bias")}, config)


def test_a_converted_llama_runs_scanned_and_exports_from_its_scanned_layers(tmp_path):
  """A converted (unrolled) Llama initialises the same model with `scan_layers=True`
  (`train.transfer.same_layout`): the same logits; and a scanned model's parameters unstacked
  (as `train.convert --export` does) export to the same folder contents."""
  from arch import scan
  from train import transfer
  module = llama("gqa_untied")
  module.save_pretrained(str(tmp_path / "hf"))
  converted = hf_llama.llama(published_files.read_state(str(tmp_path / "hf")),
                             published_files.read_folder_config(str(tmp_path / "hf")))
  scanned_model = arch.build({**converted.model, "scan_layers": True})
  tokens = jnp.asarray(np.random.default_rng(2).integers(0, 60, (2, 12)))
  target = scanned_model.init(jax.random.key(0), tokens)["params"]
  params, copied = transfer.merge(target, transfer.same_layout(converted.variables["params"],
                                                               target), (), "parameter")
  assert len(copied) == len(jax.tree.leaves(target))
  np.testing.assert_allclose(scanned_model.apply({"params": params}, tokens),
                             model_logits(converted, tokens), rtol=1e-5, atol=1e-5)
  state, _ = hf_llama.to_hf(converted.model, {"params": scan.unstack_blocks(params)})
  plain, _ = hf_llama.to_hf(converted.model, converted.variables)
  for k in plain:
    np.testing.assert_array_equal(state[k], plain[k], err_msg=k)


def model_logits(converted, tokens):
  return arch.build(converted.model).apply(converted.variables, tokens)
