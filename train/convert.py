"""A published checkpoint as a strata workdir, which `init_from.workdir` and the evaluation tools
take:

  python -m train.convert --format torchvision --checkpoint resnet50.pth --out runs/resnet50_tv \\
      --model resnet50 --check
  python -m train.convert --format timm --checkpoint vit_s16.safetensors --out runs/vit_s16 \\
      --model vit_small_patch16_224 --check
  python -m train.convert --format hf --checkpoint gpt2/ --out runs/gpt2 --check

`--format` names the layout (`arch.published`): torchvision (ResNets; timm's `resnet*` too),
timm (ViTs), big_vision (`.npz` ViTs), hf (a Hugging Face GPT-2 or Llama-family folder, its
shards read one by one). The model's structure is read from the checkpoint; the number of
heads, where the weights do not hold it, comes from `--num_heads`, else the folder's
config.json (hf) or timm's model `--model` where timm is installed, else width / 64; a timm
ViT's pooling and GELU come from `--model` too (else the pooling is read from the weights:
`arch.published.timm_layout`).
`--image_size` resamples a ViT's position embeddings to another resolution (big_vision's
bilinear `resample_posemb`). `--out` gets `config.json` (the supervised defaults with the
converted `model` fields), `checkpoints/0` (the parameters and BatchNorm statistics) and
`converted.json` (the source file, its format and size, and the check); a Hugging Face folder's
own tokenizer (`tokenizer.json`, else a SentencePiece `tokenizer.model`) is copied beside them
and the config's `data.tokenizer` names the copy. An `--out` that exists is refused: nothing is
overwritten.

`--check` loads the same file into the reference library's model `--model` (torchvision's
`get_model`, timm's `create_model`, transformers' GPT-2 or Llama of the converted shape; random
weights replaced), runs both on the same random images or tokens and prints the largest
absolute logit difference beside the largest logit.

`--export FILE.{safetensors,pth}` goes the other way: `--workdir`'s model as the layout's state
dict, which the reference library's `load_state_dict` takes (a ViT to a `.npz`: big_vision's
layout); a decoder LM's `--export DIR` is a Hugging Face GPT-2 or Llama folder that
`from_pretrained` loads (a scanned model's blocks unstacked first; refused in one line for a
model the layout cannot hold).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

import jax
import numpy as np
from absl import flags

import arch
from arch import scan
from arch.published import (
  big_vision_layout,
  hf_layout,
  hf_llama,
  timm_layout,
  torchvision_layout,
)
from arch.published.converted import Converted
from train import checkpoint, cli, files, published, published_files, reference
from train import config as config_lib
from train import lora as lora_lib
from train.errors import ConfigError

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so modules import together)."""
  flags.DEFINE_enum("format", None, published.FORMATS, "the checkpoint's layout")
  flags.DEFINE_string("checkpoint", None, "the published checkpoint file to convert")
  flags.DEFINE_string("out", None, "the new strata workdir (must not exist)")
  flags.DEFINE_string("model", "", "the reference library's model name (--check; a timm ViT's "
                      "heads)")
  flags.DEFINE_integer("num_heads", 0, "attention heads (0: from the folder's config.json or "
                       "--model, else width / 64)")
  flags.DEFINE_integer("image_size", 0, "the images' side: a ViT's position embeddings are "
                       "resampled to it (0: the checkpoint's; a ResNet's --check uses 224)")
  flags.DEFINE_bool("check", False, "compare with the reference library's model")
  flags.DEFINE_string("workdir", None, "--export: the strata workdir to export")
  flags.DEFINE_string("export", None, "--export: the state dict file to write")


# A Hugging Face folder's own tokenizer, by file name, and its `data.tokenizer` kind
TOKENIZER_FILES = (("tokenizer.json", "hf"), ("tokenizer.model", "sentencepiece"))


def folder_tokenizer(folder: str, vocab_size: int) -> tuple[str, str] | None:
  """(the file, its `data.tokenizer` kind) of the tokenizer a Hugging Face `folder` holds
  (`TOKENIZER_FILES`, the first found), None for a file or a folder without one.

  Raises:
    ConfigError: its vocabulary is larger than the model's `vocab_size` (another model's?).
  """
  from data import tokenizer as data_tokenizer
  if not os.path.isdir(folder):
    return None
  for name, kind in TOKENIZER_FILES:
    path = os.path.join(folder, name)
    if os.path.isfile(path):
      size = data_tokenizer.get(f"{kind}:{path}").vocab_size
      if size > vocab_size:
        raise ConfigError(f"--checkpoint={folder}: its {name} has {size} ids, more than the "
                          f"model's vocabulary of {vocab_size}: not this model's tokenizer")
      return path, kind
  return None


def write_workdir(out: str, converted: Converted, record: dict[str, Any],
                  tokenizer: tuple[str, str] | None = None) -> None:
  """`out` as a strata workdir (module docstring), made in a temporary folder beside it and
  renamed into place, so that a failure leaves nothing half-written. `tokenizer` (a file and
  its kind) is copied in, and the config's `data.tokenizer` names the copy.

  Raises:
    ConfigError: `out` exists.
  """
  import orbax.checkpoint as ocp
  out = os.path.abspath(out)
  if os.path.exists(out):
    raise ConfigError(f"--out={out} exists; converting writes a new workdir and overwrites "
                      "nothing: choose another --out or remove it")
  os.makedirs(os.path.dirname(out), exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", dir=os.path.dirname(out))
  try:
    config = config_lib.base("supervised")
    config.model = converted.model
    if tokenizer:
      name = os.path.basename(tokenizer[0])
      shutil.copyfile(tokenizer[0], os.path.join(tmp, name))
      config.data.tokenizer = record["tokenizer"] = f"{tokenizer[1]}:{os.path.join(out, name)}"
    files.write_json_atomic(os.path.join(tmp, files.CONFIG),
                            json.loads(config.to_json_best_effort()))
    files.write_json_atomic(os.path.join(tmp, "converted.json"), record)
    variables = converted.variables
    tree = {"step": np.asarray(0, np.int32), "params": variables["params"],
            "model_state": {k: v for k, v in variables.items() if k != "params"}}
    with ocp.CheckpointManager(os.path.join(tmp, files.CHECKPOINTS)) as manager:
      manager.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave(tree)))
      manager.wait_until_finished()
    os.rename(tmp, out)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _num_heads(config: dict[str, Any]) -> int:
  """--num_heads, else what `config` says (a Hugging Face folder's config.json, timm's model's
  facts), else 0."""
  if FLAGS.num_heads:
    return FLAGS.num_heads
  return int(config.get("n_head", config.get("num_attention_heads", 0)))


def _timm_config() -> dict[str, Any]:
  """What timm's model `--model` knows and its weights do not: the heads, `global_pool` and the
  MLP's GELU ({} without --model or timm)."""
  if not FLAGS.model:
    return {}
  try:
    timm = reference.import_timm()
  except ImportError:
    return {}
  module = timm.create_model(FLAGS.model, pretrained=False)
  act = module.blocks[0].mlp.act
  return {"num_attention_heads": int(module.blocks[0].attn.num_heads),
          "global_pool": module.global_pool,
          "gelu": "tanh" if getattr(act, "approximate", "none") == "tanh" else "exact"}


def export(workdir: str, out: str) -> None:
  """`workdir`'s model as its layout's state dict in `out` (module docstring)."""
  model, tree, config, _ = checkpoint.load_workdir(workdir)
  name = config["model"].get("name", "")
  fields = {"name": name, **{f: getattr(model, f) for f in arch.fields(arch.REGISTRY[name])}}
  params = lora_lib.merged(tree["params"], config.get("optim", {}).get("lora", {}))
  if fields.get("scan_layers"):  # the published layouts number their blocks: unstack them
    params, fields = scan.unstack_blocks(params), {**fields, "scan_layers": False}
  variables = {"params": params, **(tree.get("model_state") or {})}
  if name.startswith("cnn.ResNet"):
    state = torchvision_layout.to_torchvision(fields, variables)
  elif name in ("transformer.TransformerLM", "transformer.Llama"):
    layout = hf_llama if fields.get("norm") == "rms" else hf_layout
    state, hf = layout.to_hf(fields, variables)
    published_files.write_folder(out, state, hf)
    print(f"wrote {workdir}'s model as a Hugging Face {hf['model_type']} folder {out}")
    return
  elif name.startswith("transformer."):
    channels = int(np.asarray(variables["params"]["embed"]["kernel"]).shape[0] //
                   fields.get("patch_size", 1) ** 2) if "embed" in variables["params"] else 3
    layout = big_vision_layout.to_big_vision if out.endswith(".npz") else timm_layout.to_timm
    state = layout(fields, variables, channels)
  else:
    raise ConfigError(f"--workdir={workdir} holds model.name={name!r}; export knows ResNets "
                      "(torchvision), ViTs (timm; big_vision to a .npz) and decoder LMs (a Hugging "
                      "Face GPT-2 or Llama folder)")
  published_files.write_state(out, state)
  print(f"wrote {len(state)} tensors of {workdir}'s model to {out}")


def main(argv: list[str]) -> None:
  del argv
  if FLAGS.export or FLAGS.workdir:
    if not (FLAGS.export and FLAGS.workdir):
      raise ConfigError("--export FILE and --workdir DIR go together: the workdir to export "
                        "and the file to write")
    return export(FLAGS.workdir, FLAGS.export)
  for name in ("format", "checkpoint", "out"):
    if FLAGS[name].value is None:
      raise ConfigError(f"--{name} is required (or --workdir and --export to export)")
  if FLAGS.check and not FLAGS.model and FLAGS.format != "hf":
    raise ConfigError("--check needs --model, the reference library's model name (e.g. "
                      "resnet50, vit_small_patch16_224)")
  if os.path.exists(FLAGS.out):
    raise ConfigError(f"--out={FLAGS.out} exists; converting writes a new workdir and "
                      "overwrites nothing: choose another --out or remove it")
  state = published_files.read_state(FLAGS.checkpoint, lazy=True)
  config = (published_files.read_folder_config(FLAGS.checkpoint) if FLAGS.format == "hf"
            else _timm_config() if FLAGS.format == "timm" else {})
  converted = published.convert(FLAGS.format, state, _num_heads(config), FLAGS.image_size,
                                f"--checkpoint={FLAGS.checkpoint}", config)
  digest = published_files.digest(FLAGS.checkpoint)
  record: dict[str, Any] = {"format": FLAGS.format, "checkpoint": os.path.abspath(
      FLAGS.checkpoint), "sha256": digest, "reference_model": FLAGS.model,
      "model": converted.model, "tensors": len(state)}
  if FLAGS.check:
    record["check"] = published.check(FLAGS.format, FLAGS.model, converted, state)
    name = f"{FLAGS.format}'s {FLAGS.model}" if FLAGS.model else "transformers' model"
    print(f"check against {name}: max |logit difference| "
          f"{record['check']['max_abs_difference']:.3g} (largest |logit| "
          f"{record['check']['max_abs_logit']:.3g})")
  tokenizer = (folder_tokenizer(FLAGS.checkpoint, converted.model["vocab_size"])
               if FLAGS.format == "hf" else None)
  write_workdir(FLAGS.out, converted, record, tokenizer)
  print(f"wrote {FLAGS.out}: model {converted.model['name']} "
        f"({sum(int(np.size(v)) for v in jax.tree.leaves(converted.variables['params'])):,} "
        "parameters)")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
