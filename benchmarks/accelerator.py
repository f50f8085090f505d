"""One accelerator benchmark: training steps of three large workloads in bfloat16 on whatever
device JAX finds, with throughput and MFU, and PyTorch twins on the same device where
`benchmarks/torch_workloads.py` has them.

  python -m benchmarks.accelerator [--tiny] [--only gpt2_small,resnet50,unet] [--steps 20]
                                   [--notorch] [--out benchmarks/results]

- gpt2_small: a decoder-only Transformer of GPT-2 small's shape (12 layers, width 768, 12
  heads, MLP 3072, context 1024, vocabulary 50,304) with an untied output layer (163M
  parameters; GPT-2's 124M ties it to the embedding), AdamW, batch 16 x 1024 tokens: tokens/s.
- resnet50: ResNet-50 (v1.5) on 224 x 224 images, Nesterov momentum, batch 256: images/s.
- unet: the `digits_ddpm` experiment's UNet and diffusion step (v-prediction, min-SNR) at its
  batch: images/s.
Each step is strata's paradigm step (`train.paradigms.*.make`), compiled once with donated state,
on synthetic batches made on the host (no dataset, no network), timed over `--steps` steps after
three warm-up steps. FLOPs per step come from XLA's cost analysis, MFU from the peak table in
`train/throughput.py` at bfloat16. PyTorch (eager, `torch.autocast` bfloat16, float32 master
weights) times its twin of the language model and the UNet on the same batches; it has no
ResNet-50 twin (torchvision is not a dependency). `--tiny` shrinks every workload to run in
seconds on a CPU (a test does). Needs jax, flax, optax and this project; torch only for the
twins. Writes OUT/accelerator.json and OUT/accelerator.md and prints the table.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from train import cli

WORKLOADS = ("gpt2_small", "resnet50", "unet")


def _config(name: str, tiny: bool) -> tuple[Any, dict[str, np.ndarray], str]:
  """(config, one synthetic batch, unit of the rate) of workload `name`."""
  from train import config as config_lib

  rng = np.random.default_rng(0)
  if name == "gpt2_small":
    c = config_lib.base("supervised")
    vocab, seq, batch = (256, 64, 4) if tiny else (50_304, 1024, 16)
    width, depth, heads = (32, 2, 2) if tiny else (768, 12, 12)
    c.model = dict(name="transformer.TransformerLM", vocab_size=vocab, width=width, depth=depth,
                   num_heads=heads, mlp_dim=4 * width, max_len=seq, positions="learned")
    c.optim.name, c.optim.learning_rate, c.optim.weight_decay = "adamw", 6e-4, 0.1
    c.optim.clip_norm = 1.0
    tokens = rng.integers(0, vocab, (batch, seq + 1)).astype(np.int32)
    data = {"inputs": tokens[:, :-1], "label": tokens[:, 1:],
            "mask": np.ones((batch, seq), np.float32)}
    unit = "tokens"
  elif name == "resnet50":
    c = config_lib.base("supervised")
    size, batch = (32, 4) if tiny else (224, 256)
    c.model = (dict(name="cnn.ResNet", num_classes=1000, stage_sizes=(1, 1), widths=(8, 16))
               if tiny else dict(name="cnn.ResNet50", num_classes=1000))
    c.optim.name, c.optim.learning_rate, c.optim.weight_decay = "nesterov", 0.1, 1e-4
    data = {"inputs": rng.normal(size=(batch, size, size, 3)).astype(np.float32),
            "label": rng.integers(0, 1000, batch).astype(np.int32),
            "mask": np.ones(batch, np.float32)}
    unit = "images"
  elif name == "unet":
    c = config_lib.load(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))), "experiments", "digits_ddpm.py") + (":tiny" if tiny else ""))
    batch = c.data.batch_size
    size = 8
    data = {"inputs": rng.uniform(-1, 1, (batch, size, size, 1)).astype(np.float32),
            "label": rng.integers(0, 10, batch).astype(np.int32),
            "mask": np.ones(batch, np.float32)}
    unit = "images"
  else:
    raise ValueError(f"workload {name!r}; expected one of {list(WORKLOADS)}")
  c.train.precision = "bfloat16"
  c.train.steps = 1000
  return c, data, unit


def measure(name: str, steps: int = 20, tiny: bool = False, torch: bool = True) -> dict[str, Any]:
  """The module docstring's measurements for workload `name`."""
  import jax

  import arch
  from train import paradigms, throughput

  config, batch, unit = _config(name, tiny)
  model = arch.build(config.model)
  paradigm = paradigms.get(config.paradigm).make(model, config, total_steps=config.train.steps)
  device = jax.devices()[0]
  batch = jax.device_put(batch, device)
  state = jax.jit(paradigm.init)(jax.random.key(0), batch)
  rng = jax.random.key(1)
  t = time.perf_counter()
  step = jax.jit(paradigm.train_step, donate_argnums=(0,)).lower(state, batch, rng).compile()
  compile_s = time.perf_counter() - t
  for _ in range(3):
    state, metrics = step(state, batch, rng)
  jax.block_until_ready(state)
  t = time.perf_counter()
  for _ in range(steps):
    state, metrics = step(state, batch, rng)
  jax.block_until_ready(state)
  rate = steps / (time.perf_counter() - t)
  flops = throughput.step_flops(step)
  peak, source = throughput.peak_flops(device, "bfloat16")
  per_step = int(np.prod(batch["label"].shape)) if unit == "tokens" else len(batch["label"])
  row = {"workload": name, "device": getattr(device, "device_kind", device.platform),
         "parameters": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params)),
         "batch": len(batch["label"]), "unit": unit, "compile_s": compile_s,
         "steps_per_s": rate, "per_s": rate * per_step, "flops_per_step": flops,
         "mfu": rate * flops / peak if peak else None, "peak_source": source,
         "loss": float(metrics.get("loss", metrics.get("g_loss", np.nan)))}
  if torch and name in ("gpt2_small", "unet"):
    row.update(_torch(config, jax.device_get(batch), steps, device.platform, per_step))
  return row


def _torch(config: Any, batch: dict[str, np.ndarray], steps: int, platform: str,
           per_step: int) -> dict[str, Any]:
  """The PyTorch twin's steps/s on the same batch and device kind."""
  import torch

  from benchmarks import torch_workloads

  device = "cuda" if platform == "gpu" and torch.cuda.is_available() else "cpu"
  twin = torch_workloads.build(config, batch, device=device, bf16=True)
  tensors = twin.convert(batch)

  def sync():
    if device == "cuda":
      torch.cuda.synchronize()
  for _ in range(3):
    twin.step(tensors)
  sync()
  t = time.perf_counter()
  for _ in range(steps):
    twin.step(tensors)
  sync()
  rate = steps / (time.perf_counter() - t)
  return {"torch_device": device, "torch_steps_per_s": rate, "torch_per_s": rate * per_step,
          "torch_parameters": twin.parameters}


def markdown(rows: list[dict[str, Any]]) -> str:
  head = ("| workload | device | parameters | batch | compile | steps/s | throughput | "
          "GFLOP/step | MFU | PyTorch steps/s | strata / PyTorch |")
  lines = [head, "|" + "---|" * (head.count(" | ") + 1)]
  for r in rows:
    mfu = "–" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
    torch = (f"{r['torch_steps_per_s']:,.2f} | {r['steps_per_s'] / r['torch_steps_per_s']:.2f}x"
             if "torch_steps_per_s" in r else "– | –")
    lines.append(f"| {r['workload']} | {r['device']} | {r['parameters']:,} | {r['batch']} | "
                 f"{r['compile_s']:.1f} s | {r['steps_per_s']:,.2f} | {r['per_s']:,.0f} "
                 f"{r['unit']}/s | {r['flops_per_step'] / 1e9:,.3g} | {mfu} | {torch} |")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
  from train import files, progress

  p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--tiny", action="store_true", help="Shrunken workloads (seconds on a CPU).")
  p.add_argument("--only", default=",".join(WORKLOADS))
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--notorch", action="store_true", help="Leave out the PyTorch twins.")
  p.add_argument("--out", default=os.path.join("benchmarks", "results"))
  args = p.parse_args(argv)
  names = [n for n in args.only.split(",") if n]
  unknown = sorted(set(names) - set(WORKLOADS))
  if unknown:
    cli.fail(f"--only={args.only!r}: unknown workload(s) {unknown}; expected some of "
             f"{list(WORKLOADS)}", 2)
  if args.steps < 1:
    cli.fail(f"--steps={args.steps}; expected a positive number of timed steps", 2)
  torch = not args.notorch
  if torch:
    try:
      import torch as _  # noqa: F401
    except ImportError:
      progress.console("PyTorch is not installed: timing strata only (pip install -e '.[bench]')")
      torch = False
  rows = []
  for name in names:
    progress.console(f"[accelerator] {name}")
    rows.append(measure(name, args.steps, args.tiny, torch))
    progress.console(markdown(rows[-1:]).splitlines()[-1])
  text = markdown(rows)
  os.makedirs(args.out, exist_ok=True)
  files.write_json_atomic(os.path.join(args.out, "accelerator.json"),
                          {"tiny": args.tiny, "steps": args.steps, "workloads": rows})
  files.write_text_atomic(os.path.join(args.out, "accelerator.md"), text + "\n")
  print(text)


if __name__ == "__main__":
  cli.guarded(main)
