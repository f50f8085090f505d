"""Where a compiled program's HBM traffic goes: the bytes each top-level instruction of an
optimized HLO module reads and writes (its operands' and its result's sizes), summed by kind, for
one module or two side by side (docs/pod_table.md: strata's ResNet-50 step against flax's).

    XLA_FLAGS="--xla_dump_to=/tmp/dump --xla_dump_hlo_as_text" python -m benchmarks.pod_table ...
    python -m benchmarks.hlo_traffic A.after_optimizations.txt [B.after_optimizations.txt]

A fusion is one instruction: what it reads from and writes to memory is its operands and its
result, whatever it computes inside; it is named by the heaviest operation it fuses (a
convolution, a dot, a reduction, else elementwise). Instructions that move no data (parameters,
tuples, bitcasts, constants) count nothing. The total approximates XLA's own "bytes accessed",
which counts the same operands and results (it also counts the bodies of loops once: so does
this).
"""

from __future__ import annotations

import collections
import re
import sys

from train.hlo import ARRAY, operands, parse, piece_bytes, shape_bytes

# moving no data of their own (a loop's or a call's body is counted where it is defined)
FREE = {"parameter", "tuple", "get-tuple-element", "bitcast", "constant", "after-all",
        "partition-id", "replica-id", "opt-barrier", "while", "conditional", "call"}


def _kind(opcode: str, rest: str, computations: dict) -> str:
  if opcode != "fusion":
    return opcode
  called = re.search(r"calls=%?([\w.\-]+)", rest)
  inner = {op for _, _, op, _ in computations.get(called.group(1) if called else "", [])}
  for heavy in ("convolution", "dot", "reduce-window", "reduce", "scatter", "gather",
                "dynamic-update-slice"):
    if heavy in inner:
      return f"fusion ({heavy})"
  return "fusion (elementwise)"


def traffic(hlo: str) -> dict[str, tuple[int, int]]:
  """{kind: (instructions, bytes)} over every computation that is not a fusion's body."""
  computations = parse(hlo)
  # fusions' bodies, and reducers and comparators (to_apply): nothing of their own to move
  fused = {called for body in computations.values() for _, _, opcode, rest in body
           for called in re.findall(r"to_apply=%?([\w.\-]+)", rest)
           + (re.findall(r"calls=%?([\w.\-]+)", rest)[:1] if opcode == "fusion" else [])}
  out: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
  for name, body in computations.items():
    if name in fused:
      continue
    types = {n: t for n, t, _, _ in body}
    for _, result, opcode, rest in body:
      if opcode in FREE:
        continue
      read = sum(shape_bytes(types.get(a, "")) for a in operands(rest))
      # An asynchronous pair moves its data once: the start reads its operands (its result
      # tuple names the source again), the done writes its result.
      if opcode == "slice-start":
        # ((source), slice, context): a prefetch reads only its slice of the source, and
        # writes it to HBM only when it does not go on chip (S(1))
        piece = ARRAY.findall(result)[1]
        moved = piece_bytes(piece) * (1 if "S(1)" in (piece[2] or "") else 2)
      elif opcode.endswith("-start"):
        moved = read
      elif opcode.endswith("-done"):
        moved = shape_bytes(result)
      else:
        moved = read + shape_bytes(result)
      entry = out[_kind(opcode, rest, computations)]
      entry[0] += 1
      entry[1] += moved
  return {k: (n, b) for k, (n, b) in out.items()}


def main(argv: list[str] | None = None) -> None:
  from train import cli  # one-line usage errors, status 2

  parser = cli.ArgumentParser(prog="python -m benchmarks.hlo_traffic",
                              description=__doc__.split("\n")[0])
  parser.add_argument("modules", nargs="+", help="one or two optimized HLO text files")
  args = parser.parse_args(argv)
  if len(args.modules) > 2:
    parser.error(f"{len(args.modules)} modules: expected one or two")
  tables = []
  for path in args.modules:
    with open(path) as f:
      tables.append(traffic(f.read()))
  kinds = sorted(set().union(*tables), key=lambda k: -max(t.get(k, (0, 0))[1] for t in tables))
  head = " | ".join(f"{p.rsplit('/', 1)[-1][:40]} (n, GB)" for p in args.modules)
  print(f"| kind | {head} |" + (" difference GB |" if len(tables) == 2 else ""))
  print("|---|" + "---|" * len(tables) + ("---|" if len(tables) == 2 else ""))
  for k in kinds + ["total"]:
    cells = []
    for t in tables:
      n, b = (sum(x[0] for x in t.values()), sum(x[1] for x in t.values())) if k == "total" \
          else t.get(k, (0, 0))
      cells.append(f"{n} {b / 1e9:.3f}")
    diff = ""
    if len(tables) == 2:
      sizes = [(sum(x[1] for x in t.values()) if k == "total" else t.get(k, (0, 0))[1])
               for t in tables]
      diff = f" {(sizes[0] - sizes[1]) / 1e9:+.3f} |"
    print(f"| {k} | " + " | ".join(cells) + " |" + diff)


if __name__ == "__main__":
  sys.exit(main())
