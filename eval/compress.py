"""Compression of a trained classifier: size, accuracy and latency before and after.

  python -m eval.compress --workdir runs/mnist1d_cnn [--prune 0.5] [--out DIR]

Restores the newest checkpoint of a supervised classifier and compares, on its evaluation split:
the float32 model; int8 weight quantisation (`train.compression.quantize_int8`, per output
channel, symmetric); and, with `--prune F`, global magnitude pruning of a fraction F of the
kernel weights (no fine-tuning). Each variant is exported with `jax.export` (StableHLO at batch
1, its weights beside it in their stored dtypes), loaded back and checked against the model's
own outputs; the report gives parameter bytes, exported file sizes, test accuracy, agreement with
the float32 predictions, and batch-1 latency of the exported function. Writes DIR/compressed/report.json, report.md and the .stablehlo files.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from eval import report as report_lib
from eval import restore
from train import cli, compression, files, remote_workdir, workdir_lock


@workdir_lock.writes_into_workdir("compressed")
def evaluate(workdir: str, prune: float = 0.0, out: str | None = None) -> dict[str, Any]:
  """The module docstring's comparison; returns what report.json holds."""
  run = restore.restore(workdir)
  config, step = run.config, run.step
  report_lib.check_classifier(config, workdir)
  x, labels, _ = run.split(config.data.eval_split)
  x = x.astype(np.float32)
  params = jax.tree.map(np.asarray, run.state.params)
  quantized = compression.quantize_int8(params)
  # each variant: the parameters the function closes over, and how it turns them into float32
  variants = {"float32": (params, lambda p: p),
              "int8 weights": (quantized, compression.dequantize)}
  stored = {"float32": compression.size_bytes(params),
            "int8 weights": compression.size_bytes(quantized)}
  if prune:
    masks = compression.magnitude_masks(params, prune)
    variants[f"pruned {prune:.0%}"] = (jax.tree.map(np.asarray, compression.apply_masks(
        params, masks)), lambda p: p)
    # stored sparse: the kept values (float32) and a bitmap over the kernels
    kept = sum(int(np.sum(m)) for m in jax.tree.leaves(masks))
    stored[f"pruned {prune:.0%}"] = kept * 4 + sum(np.size(m) for m in jax.tree.leaves(masks)) // 8
  os.makedirs(out, exist_ok=True)
  rows = {}
  for name, (p, unpack) in variants.items():
    def predict(p, inputs, unpack=unpack):  # the paradigm's predict, over these parameters
      return run.paradigm.predict(run.state.replace(params=unpack(p)), inputs)

    logits = run.predict(x, 500, state=run.state.replace(params=unpack(p)))
    slug = name.replace(" ", "_").replace("%", "pct")
    path = os.path.join(out, f"{slug}.stablehlo")
    sizes = compression.export(predict, p, x[:1], path)
    exported = compression.load_exported(path)
    one = np.asarray(exported(jnp.asarray(x[:1])))
    np.testing.assert_allclose(one, logits[:1], rtol=1e-4, atol=1e-4,
                               err_msg=f"{name}: the exported function disagrees with the model")
    speed = report_lib.speed(lambda b, f=exported: f(b), x[:1], batch_sizes=(1,))
    rows[name] = {"parameter_bytes": stored[name], **sizes,
                  "accuracy": float(np.mean(logits.argmax(-1) == labels)),
                  "agreement_with_float32": None,
                  "latency_ms_p50": speed["latency_ms"]["p50"],
                  "latency_ms_p99": speed["latency_ms"]["p99"],
                  "kernel_sparsity": compression.sparsity_of(unpack(p)),
                  "_pred": logits.argmax(-1)}
  base = rows["float32"]["_pred"]
  for r in rows.values():
    r["agreement_with_float32"] = float(np.mean(r.pop("_pred") == base))
  result = {"workdir": workdir, "checkpoint_step": step, "model": config.model.name,
            "split": config.data.eval_split, "examples": int(len(labels)), "variants": rows}
  files.write_report(out, result, markdown(result))
  return result


def markdown(result: dict[str, Any]) -> str:
  base = result["variants"]["float32"]
  lines = [f"Compression of {result['workdir']} ({result['model']}, step "
           f"{result['checkpoint_step']}) on `{result['split']}` ({result['examples']} examples); "
           "latency of the exported function at batch 1, compiled beforehand.", "",
           "| variant | parameter bytes | vs float32 | exported weights / program | accuracy | "
           "same prediction as float32 | kernel sparsity | latency p50 / p99 |",
           "|---|---|---|---|---|---|---|---|"]
  for name, r in result["variants"].items():
    lines.append(f"| {name} | {r['parameter_bytes']:,} | "
                 f"{base['parameter_bytes'] / r['parameter_bytes']:.2f}x smaller | "
                 f"{r['weights_bytes']:,} / {r['program_bytes']:,} B | {r['accuracy']:.4f} | "
                 f"{r['agreement_with_float32']:.4f} | {r['kernel_sparsity']:.3f} | "
                 f"{r['latency_ms_p50']:.3f} / {r['latency_ms_p99']:.3f} ms |")
  return "\n".join(lines)


FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
  with remote_workdir.local_workdir(FLAGS.workdir) as workdir:  # gs://: a local copy, uploaded
    result = evaluate(workdir, FLAGS.prune, FLAGS.out)
  print(markdown(result))


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so modules import together)."""
  flags.DEFINE_string("workdir", None, "A trained supervised classifier's run.", required=True)
  flags.DEFINE_float("prune", 0.0, "Also prune this fraction of the kernel weights (0: no).")
  flags.DEFINE_string("out", None, "Where the report and the exported files go (default "
                      "WORKDIR/compressed).")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
