"""The pod table: strata's recipes and decoder LMs compiled for TPU slices on this CPU host, and
the anchors' own train steps compiled the same way beside them (docs/pods.md).

    python -m benchmarks.pod_table --rows anchors        # ResNet-50 and ViT-S/16 against flax
                                                         # and big_vision, v5e:2x2 and v5e:4x4
    python -m benchmarks.pod_table --rows lm --timeout 900
    python -m benchmarks.pod_table --rows scale          # 6.7B, and two slices over DCN
    python -m benchmarks.pod_table --list                # every row's name and group

Each row compiles in its own child process (`--one NAME`) under a time limit (`--timeout`
seconds), through `train.aot.compile_for` for strata's rows and the vendored code under
`benchmarks/third_party/` for the anchors', so a compile that runs away or crashes libtpu is
recorded as such and the next row goes on. Every finished row is appended to `--out` (JSON lines;
rows already there are skipped, so an interrupted table continues), and the table of all rows in
`--out` is printed as markdown. Step times are the roofline-checked estimates of `train.aot`;
strata and its anchor are compiled for the same slice, global batch and precision, with the
batch split over every chip and the state replicated (both anchors' layout), so their ratio is
like for like.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import re
import subprocess
import sys
import time
from typing import Any

import train  # noqa: F401  (quiets libtpu on a host without a TPU, before jax loads)

OUT = os.path.join("docs", "figures", "pod_table.jsonl")


@dataclasses.dataclass(frozen=True)
class Row:
  """One compile: `model` (a label), for `topology` (a `train.topology` name), by `who`
  (strata, or the anchor's name) from `spec` (an experiment file and its overrides)."""
  group: str
  model: str
  topology: str
  who: str = "strata"
  spec: str = ""
  overrides: tuple[tuple[str, Any], ...] = ()
  slices: int = 1  # several slices joined over the data-centre network (multi-slice)

  @property
  def name(self) -> str:
    return (f"{self.model}@{self.topology}" + (f"x{self.slices}" if self.slices > 1 else "")
            + ("" if self.who == "strata" else f"/{self.who}"))


# GPT-2's shapes (124M, 350M) and GPT-3 XL's (1.3B), vocabulary 50,304, context 1024, bfloat16,
# 16 sequences a chip, activations recomputed (without it the 124M LM asks 29.8 GB a v5e chip).
LMS = {
    "lm124m": dict(width=768, depth=12, num_heads=12, mlp_dim=3072),
    "lm350m": dict(width=1024, depth=24, num_heads=16, mlp_dim=4096),
    "lm1.3b": dict(width=2048, depth=24, num_heads=16, mlp_dim=8192),
}
# GPT-3 6.7B's shape (width 4096, 32 blocks of 32 heads, MLP 16384): the 7B class, only on the
# large slices (`SCALE`)
LM7B = {"lm6.7b": dict(width=4096, depth=32, num_heads=32, mlp_dim=16384)}
CHIPS = {"v5e-16": 16, "v5e-64": 64, "v5e-256": 256, "v5p-128": 64}


def _lm(model: str, topology: str, layout: str, scan: bool = True, depth: int = 0,
        slices: int = 1, group: str = "lm") -> Row:
  """A decoder LM row; `depth` > 0 replaces the model's (the compile-time-against-depth rows).
  With `slices` > 1 the data axis spans the slices (one replica a slice, over the data-centre
  network: MaxText's `dcn_data_parallelism`) and each slice is laid out as one slice is."""
  chips = CHIPS[topology]
  mesh = {"fsdp": (("mesh.data", slices), ("mesh.fsdp", chips)),
          "fsdp+tp": (("mesh.data", slices), ("mesh.fsdp", chips // 4), ("mesh.tensor", 4)),
          "fsdp+tp+sp": (("mesh.data", slices), ("mesh.fsdp", chips // 4), ("mesh.tensor", 4),
                         ("sharding.sequence_parallel", True)),
          }[layout]
  shape = {**LMS, **LM7B}[model]
  fields = {f"model.{k}": v for k, v in dict(shape, **({"depth": depth} if depth else {}))
            .items()}
  chips *= slices
  overrides = (("model.vocab_size", 50304), *fields.items(), ("model.max_len", 1024),
               ("model.scan_layers", scan), ("model.remat_policy", "nothing_saveable"),
               ("data.seq_len", 1024), ("data.batch_size", 16 * chips),
               ("data.eval_batch_size", 16 * chips), ("train.precision", "bfloat16"), *mesh)
  label = (f"{model}" + (f" depth {depth}" if depth else "") + f" {layout}"
           + ("" if scan else " unscanned"))
  return Row("depth" if depth else group, label, topology,
             spec="experiments/charlm_transformer.py", overrides=overrides, slices=slices)


# Llama 3.2 1B's shape (Meta's config.json: width 2048, 16 blocks of 32 heads with 8 key/value
# heads, SwiGLU 8192, vocabulary 128,256, tied embeddings, rotary base 500,000) as
# `transformer.Llama`, the LM rows' batch, context, precision and recomputation.
LLAMA_1B = dict(vocab_size=128256, width=2048, depth=16, num_heads=32, num_kv_heads=8,
                mlp_dim=8192, tie_embeddings=True, rope_base=500000.0)


def _llama(topology: str, layout: str) -> Row:
  """A row of the modern decoder at Llama 3.2 1B's shape (`LLAMA_1B`)."""
  chips = CHIPS[topology]
  mesh = {"fsdp": (("mesh.data", 1), ("mesh.fsdp", chips)),
          "fsdp+tp": (("mesh.data", 1), ("mesh.fsdp", chips // 4), ("mesh.tensor", 4))}[layout]
  overrides = (*((f"model.{k}", v) for k, v in LLAMA_1B.items()), ("model.max_len", 1024),
               ("model.scan_layers", True), ("model.remat_policy", "nothing_saveable"),
               ("data.seq_len", 1024), ("data.batch_size", 16 * chips),
               ("data.eval_batch_size", 16 * chips), ("train.precision", "bfloat16"), *mesh)
  return Row("lm", f"llama3.2-1b {layout}", topology, spec="experiments/charlm_llama.py",
             overrides=overrides)


RESNET50 = "experiments/imagenet_resnet50.py"
VIT_S16 = "experiments/imagenet_vit_s16.py"
VIT_B16 = (("model.name", "transformer.ViTB16"),)  # the ViT-S/16 recipe at the B size

ROWS = (
    *(r for t in ("v5e:2x2", "v5e:4x4") for r in (
        Row("anchors", "ResNet-50", t, spec=RESNET50),
        Row("anchors", "ResNet-50", t, who="flax"),
        Row("anchors", "ViT-S/16", t, spec=VIT_S16),
        Row("anchors", "ViT-S/16", t, who="big_vision"))),
    *(r for t in ("v5e-16", "v5e-64", "v5e-256", "v5p-128") for r in (
        Row("recipes", "ResNet-50", t, spec=RESNET50),
        Row("recipes", "ViT-S/16", t, spec=VIT_S16),
        Row("recipes", "ViT-B/16", t, spec=VIT_S16, overrides=VIT_B16))),
    *(_lm(m, t, layout) for m in LMS for t in CHIPS
      for layout in ("fsdp", "fsdp+tp", "fsdp+tp+sp")),
    *(_lm("lm124m", "v5e-16", layout, scan=False) for layout in ("fsdp", "fsdp+tp")),
    *(_llama(t, layout) for t in ("v5e-16", "v5p-128") for layout in ("fsdp", "fsdp+tp")),
    # compile time and memory against depth, scanned and unrolled (124M's blocks, v5e-16, FSDP)
    *(_lm("lm124m", "v5e-16", "fsdp", scan=scan, depth=d) for d in (6, 24, 48)
      for scan in (True, False)),
    # the 7B class on the large slices, and the 1.3B and 6.7B LMs over two v5e-256 slices
    *(_lm("lm6.7b", t, layout, group="scale") for t in ("v5e-256", "v5p-128")
      for layout in ("fsdp", "fsdp+tp", "fsdp+tp+sp")),
    *(_lm(m, "v5e-256", "fsdp", slices=2, group="scale") for m in ("lm1.3b", "lm6.7b")),
)


def _report_row(report: Any) -> dict[str, Any]:
  """The figures of a `train.aot.Report`, as JSON."""
  return dict(chips=report.slice.chips * report.slice.slices, mesh=report.mesh,
              global_batch=report.global_batch, memory=report.memory["total"],
              eval_memory=report.eval_memory, hbm=report.chip.hbm, fits=report.fits,
              flops=report.flops, model_flops=report.model_flops, bytes=report.bytes_accessed,
              sent=report.collective_bytes, step_s=report.step_seconds,
              estimate=report.estimate_source, mfu=report.mfu,
              tokens_per_example=report.tokens_per_example, compile_s=report.compile_seconds,
              slices=report.slice.slices)


def _strata(row: Row) -> dict[str, Any]:
  from train import aot, topology
  from train import config as config_lib

  config = config_lib.override(config_lib.load(row.spec), dict(row.overrides), flag="")
  return _report_row(aot.compile_for(config, topology.parse(row.topology, row.slices)))


def _anchor_step(step: Any, state: Any, batch: dict[str, Any], extra: tuple, slice_: Any,
                 devices: list, mesh: Any) -> dict[str, Any]:
  """Compiles an anchor's `step(state, *extra, batch)`, its state replicated and its batch
  split over `mesh`'s data axis, and reports it as `train.aot` reports strata's."""
  import jax
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from train import aot, hlo, memory, throughput

  chip = throughput.chip(devices[0])
  replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                       state)
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=split) for k, v in batch.items()}
  extra = tuple(jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated) for x in extra)
  t = time.perf_counter()
  compiled = jax.jit(step, donate_argnums=0).lower(state, *extra, batch).compile()
  seconds = time.perf_counter() - t
  params = state.params if hasattr(state, "params") else state["params"]
  total = memory.report(state, memory.device_bytes(batch), compiled, params)["total"]
  cost = throughput.cost_analysis(compiled)
  sent = hlo.collectives(compiled.as_text(), len(devices))
  _, step_s, source = aot.estimate(cost, chip, sent=sum(sent.values()))
  flops = cost.get("flops", 0.0)
  return dict(chips=slice_.chips, mesh={"data": slice_.chips},
              global_batch=next(iter(batch.values())).shape[0], memory=total, eval_memory=0,
              hbm=chip.hbm, fits=total <= chip.hbm, flops=flops,
              bytes=cost.get("bytes accessed", 0.0), sent=sent, step_s=step_s, estimate=source,
              mfu=flops / (step_s * chip.bf16), tokens_per_example=0,
              compile_s={"train step": seconds})


def _flax(row: Row, batch_size: int = 1024) -> dict[str, Any]:
  """flax's examples/imagenet with configs/tpu.py (batch 1024, half precision: bfloat16 model
  and images on a TPU), its train_step ported to jit (benchmarks/third_party/flax_imagenet)."""
  import jax
  import jax.numpy as jnp
  import ml_collections
  import numpy as np
  from jax.sharding import Mesh

  from benchmarks.third_party.flax_imagenet import models
  from benchmarks.third_party.flax_imagenet import train as flax_train
  from train import topology

  slice_ = topology.parse(row.topology)
  devices = topology.devices(slice_)
  config = ml_collections.ConfigDict(dict(learning_rate=0.1, warmup_epochs=5.0,
                                          num_epochs=100.0, momentum=0.9))
  steps_per_epoch = 1_281_167 // batch_size
  lr = flax_train.create_learning_rate_fn(config, config.learning_rate * batch_size / 256,
                                          steps_per_epoch)
  model = flax_train.create_model(model_cls=models.ResNet50, half_precision=True)
  state = jax.eval_shape(
      lambda key: flax_train.create_train_state(key, config, model, 224, lr), jax.random.key(0))
  batch = {"image": jax.ShapeDtypeStruct((batch_size, 224, 224, 3), jnp.bfloat16),
           "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32)}
  step = functools.partial(flax_train.train_step, learning_rate_fn=lr)
  return _anchor_step(step, state, batch, (), slice_, devices,
                      Mesh(np.asarray(devices), ("data",)))


def _big_vision(row: Row, batch_size: int = 1024) -> dict[str, Any]:
  """big_vision's configs/vit_s16_i1k.py (batch 1024, 90 epochs), its update_fn
  (benchmarks/third_party/big_vision_vit) with the matmuls in bfloat16 (`dtype_mm`), as strata's
  recipe computes in bfloat16; the config leaves it at float32."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import Mesh

  from benchmarks.third_party.big_vision_vit import train as bv_train
  from benchmarks.third_party.big_vision_vit import vit
  from train import topology

  slice_ = topology.parse(row.topology)
  devices = topology.devices(slice_)
  mesh = Mesh(np.asarray(devices), ("data",))
  model = vit.Model(num_classes=1000, dtype_mm="bfloat16", **bv_train.CONFIG["model"])
  total_steps = 90 * 1_268_355 // batch_size
  images = jax.ShapeDtypeStruct((batch_size, 224, 224, 3), jnp.float32)

  def init(key):
    params = model.init(key, jnp.zeros((1, 224, 224, 3), jnp.float32))["params"]
    return {"params": params, "opt": bv_train.make_tx(params, total_steps).init(params)}

  state = jax.eval_shape(init, jax.random.key(0))
  tx = bv_train.make_tx(state["params"], total_steps)
  update = bv_train.make_update_fn(model, tx, mesh)
  batch = {"image": images, "labels": jax.ShapeDtypeStruct((batch_size, 1000), jnp.float32)}
  return _anchor_step(update, state, batch, (jax.ShapeDtypeStruct((), jax.random.key(0).dtype),),
                      slice_, devices, mesh)


def compile_row(row: Row) -> dict[str, Any]:
  """The row's figures (in this process)."""
  return {"strata": _strata, "flax": _flax, "big_vision": _big_vision}[row.who](row)


def _child(row: Row, timeout: float, dump_hlo: str = "") -> dict[str, Any]:
  """compile_row in a child process, at most `timeout` seconds."""
  t = time.perf_counter()
  try:
    r = subprocess.run([sys.executable, "-m", "benchmarks.pod_table", "--one", row.name]
                       + (["--dump_hlo", dump_hlo] if dump_hlo else []),
                       capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {"error": f"the compile did not finish in {timeout:.0f} s"}
  for line in r.stdout.splitlines():
    if line.startswith("ROW "):
      return json.loads(line[4:])
  lines = [x for x in (r.stderr or "").splitlines() if x.strip()]
  why = next((x for x in reversed(lines) if x.startswith("error: ")), None)
  return {"error": why[7:] if why else
          f"exit status {r.returncode} after {time.perf_counter() - t:.0f} s: "
          + (lines[-1][:300] if lines else "no output")}


def _dump_modules(folder: str, row_name: str) -> None:
  """From now on in this process, each program compiled also writes its optimized HLO text to
  `folder`/ROW.N.txt (N counts the modules: the init, the train step, the evaluation step)."""
  import jax

  os.makedirs(folder, exist_ok=True)
  stem = os.path.join(folder, re.sub(r"[^\w.+-]+", "_", row_name))
  compile_, count = jax.stages.Lowered.compile, [0]

  def compile_and_write(self, *args, **kwargs):
    compiled = compile_(self, *args, **kwargs)
    count[0] += 1
    with open(f"{stem}.{count[0]}.txt", "w") as f:
      f.write(compiled.as_text())
    return compiled
  jax.stages.Lowered.compile = compile_and_write


def _commit() -> str:
  """The checkout's commit ("+" when it has changes not committed), or "" outside git."""
  try:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    # the docs (this table's own lines among them) are not the code a row was compiled with
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                            ".", ":(exclude)docs"],
                           capture_output=True, text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return ""
  return head + ("+" if dirty else "")


def _size(n: float) -> str:
  return f"{n / 1e9:.3g} GB"


def table(rows: list[dict[str, Any]]) -> str:
  """The markdown table of `rows` (as `--out` holds them); anchor rows carry the ratio of
  strata's step time to the anchor's for the same model and slice."""
  from train import topology
  strata = {(r["model"], r["topology"]): r for r in rows if r["who"] == "strata"}
  out = ["| model | slice (chips) | by | mesh | memory a chip (of HBM) | GFLOP a chip: compiled "
         "(model's) | HBM GB a chip | GB a chip sends | step estimate | rate | MFU | compile "
         "(train step) |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    slices = f" x {r['slices']} slices" if r.get("slices", 1) > 1 else ""
    chips = r.get("chips") or topology.parse(r["topology"]).chips * r.get("slices", 1)
    head = f"| {r['model']} | {r['topology']}{slices} ({chips}) | {r['who']} |"
    if "error" in r:
      out.append(f"{head} | | {r['error']} | | | | | | | |")
      continue
    mesh = " x ".join(f"{k} {v}" for k, v in r["mesh"].items() if v > 1) or "1"
    # the train step's (the anchors compile no evaluation step); evaluation's when it is larger
    memory = (f"{_size(r['memory'])} of {_size(r['hbm'])}"
              + (f" (evaluation {_size(r['eval_memory'])})" if r["eval_memory"] > r["memory"]
                 else "") + ("" if r["fits"] else ", does not fit"))
    rate = r["global_batch"] / r["step_s"]
    rate = (f"{rate * r['tokens_per_example'] / 1e6:.3g} M tokens/s" if r["tokens_per_example"]
            else f"{rate:,.0f} img/s")
    bound = r["estimate"].startswith("roofline")
    # which of the roofline's terms binds (rows compiled before communication was priced: none)
    term = re.match(r"roofline bound \((\w+)\)", r["estimate"])
    step = f"{r['step_s'] * 1e3:.4g} ms" + (
        f" (roofline: {term.group(1)})" if term else " (roofline)" if bound else "")
    if r["who"] != "strata" and (r["model"], r["topology"]) in strata:
      ours = strata[(r["model"], r["topology"])]
      if "step_s" in ours:
        step += f"; strata / anchor {ours['step_s'] / r['step_s']:.2f}"
    mfu = ("at most " if bound else "") + f"{100 * r['mfu']:.1f}%"
    flops = f"{r['flops'] / 1e9:,.0f}" + (f" ({r['model_flops'] / 1e9:,.0f})"
                                           if r.get("model_flops") else "")
    # A compiled count below the model's: the compiler made loops (collective matmuls) whose
    # bodies its cost analysis counts once, so the HBM traffic is a lower bound too.
    short = r.get("model_flops", 0) > 1.05 * r["flops"]
    traffic = ("≥ " if short else "") + f"{r['bytes'] / 1e9:.3g}"
    # bytes the collectives send (`train.hlo.collectives`); "-": compiled before they were read
    sent = f"{sum(r['sent'].values()) / 1e9:.3g}" if "sent" in r else "-"
    out.append(f"{head} {mesh} | {memory} | {flops} | {traffic} | {sent} | {step} | {rate} | "
               f"{mfu} | {r['compile_s'].get('train step', 0):.0f} s |")
  return "\n".join(out)


def write_doc(path: str, rows: list[dict[str, Any]]) -> None:
  """Replaces each table between `<!-- pod_table:GROUP -->` and `<!-- /pod_table -->` in the
  markdown file `path` with the table of GROUP's rows (in `ROWS` order, slice by slice)."""
  order = {r.name: i for i, r in enumerate(ROWS)}
  with open(path) as f:
    text = f.read()
  for group in dict.fromkeys(r.group for r in ROWS):
    start, end = f"<!-- pod_table:{group} -->", "<!-- /pod_table -->"
    if start not in text:
      continue
    mine = sorted((r for r in rows if r["group"] == group and r["name"] in order),
                  key=lambda r: (r["topology"] if group == "lm" else "", order[r["name"]]))
    head, rest = text.split(start, 1)
    text = head + start + "\n" + table(mine) + "\n" + end + rest.split(end, 1)[1]
  with open(path, "w") as f:
    f.write(text)


def main(argv: list[str] | None = None) -> None:
  from train import cli

  parser = cli.ArgumentParser(prog="python -m benchmarks.pod_table",
                              description=__doc__.split("\n")[0])
  parser.add_argument("--rows", default="anchors",
                      help="comma-separated groups (anchors, recipes, lm, depth) or row names; all")
  parser.add_argument("--timeout", type=float, default=1200.0, help="seconds a row may compile")
  parser.add_argument("--out", default=OUT, help="JSON lines, one a row (appended)")
  parser.add_argument("--redo", action="store_true",
                      help="compile the rows asked for again, replacing their lines in --out")
  parser.add_argument("--list", action="store_true", help="print the rows and stop")
  parser.add_argument("--write_doc", metavar="MARKDOWN",
                      help="rewrite the tables of this markdown file from --out and stop")
  parser.add_argument("--dump_hlo", metavar="DIR", default="",
                      help="write each compiled module's optimized HLO to DIR/ROW.N.txt (for "
                           "benchmarks.hlo_traffic)")
  parser.add_argument("--one", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  by_name = {r.name: r for r in ROWS}
  if args.one:
    if args.dump_hlo:
      _dump_modules(args.dump_hlo, args.one)
    record = cli.guarded(lambda: compile_row(by_name[args.one]))
    print("ROW " + json.dumps(record), flush=True)
    return
  if args.list:
    for r in ROWS:
      print(f"{r.group:8} {r.name}")
    return
  if args.write_doc:
    with open(args.out) as f:
      write_doc(args.write_doc, [json.loads(line) for line in f if line.strip()])
    return
  wanted = set(args.rows.split(","))
  unknown = wanted - {"all", *(r.group for r in ROWS), *by_name}
  if unknown:
    parser.error(f"--rows={args.rows}: no group or row {sorted(unknown)[0]!r}; expected "
                 f"anchors, recipes, lm, depth, all or a name of --list")
  rows = [r for r in ROWS if "all" in wanted or r.group in wanted or r.name in wanted]
  names = {r.name for r in rows}
  done = []
  if os.path.exists(args.out):
    with open(args.out) as f:
      done = [json.loads(line) for line in f if line.strip()]
  if args.redo and done:  # the other rows' lines are kept as they were, in their order
    done = [d for d in done if d["name"] not in names]
    with open(args.out, "w") as f:
      f.writelines(json.dumps(d) + "\n" for d in done)
  have = {d["name"] for d in done}
  commit = _commit()
  for row in rows:
    if row.name in have:
      continue
    t = time.perf_counter()
    result = _child(row, args.timeout, args.dump_hlo)
    record = {"name": row.name, "group": row.group, "model": row.model,
              "topology": row.topology, "who": row.who, **result,
              "wall_s": round(time.perf_counter() - t, 1),
              "date": time.strftime("%Y-%m-%d"), "commit": commit}
    print(f"{row.name}: " + (result["error"] if "error" in result else
                             f"{result['step_s'] * 1e3:.4g} ms, "
                             f"{_size(result['memory'])} a chip") +
          f" ({record['wall_s']:.0f} s)", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "a") as f:
      f.write(json.dumps(record) + "\n")
    done.append(record)
  print(table([d for d in done if d["name"] in names]))


if __name__ == "__main__":
  main()
