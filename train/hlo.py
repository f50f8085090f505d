"""Reading a compiled program's optimised HLO text (`compiled.as_text()`): array sizes, its
computations, how often each runs, and the bytes its collectives send between chips.

XLA's cost analysis prices FLOPs and HBM traffic but not communication: a step whose mesh
all-gathers parameters (FSDP) or all-reduces activations (tensor parallelism) gets the same
roofline as one that does not. `collectives` reads what each chip sends in one call of the
program, by kind, for the roofline's third term (`train.aot.estimate`):

- per chip and per execution, with g the size of the collective's replica group and N its
  operand's bytes, as a ring moves them: all-gather (g - 1) N, reduce-scatter and all-to-all
  (g - 1) / g N, all-reduce 2 (g - 1) / g N, collective-permute N;
- an all-reduce whose result only a dynamic-slice reads is the TPU compiler's reduce-scatter
  (its "all-reduce-scatter" fusion) and counts as one;
- a collective in a loop's body counts once per trip: the trip count is the constant the loop's
  condition compares its counter with (`lax.scan` and `fori_loop` loops, counting from zero);
  XLA's own cost analysis counts a body once;
- the TPU compiler splits one asynchronous collective into a start, continuations and a done
  that repeat the instruction under one `channel_id`; it counts once.
"""

from __future__ import annotations

import collections
import math
import re

BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
         "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
ARRAY = re.compile(r"\b(" + "|".join(BYTES) + r")\[([\d,]*)\](\{[^}]*\})?")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s+([\w\-]+)\((.*)$")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_ATTRIBUTES = re.compile(r"\),\s*[a-z_]+=")
# attributes that name the computations an instruction runs
_CALLS = re.compile(r"\b(calls|body|condition|to_apply|true_computation|false_computation)"
                    r"=%?([\w.\-]+)")
_CALL_LISTS = re.compile(r"\b(?:called_computations|branch_computations)=\{([^}]*)\}")

Instruction = tuple[str, str, str, str]  # (name, result type, opcode, the rest of the line)


def piece_bytes(array: tuple[str, str, str]) -> int:
  """The bytes of one (type, dims, layout) match of `ARRAY`, wherever it lives."""
  kind, dims, _ = array
  return BYTES[kind] * math.prod(int(d) for d in dims.split(",") if d)


def shape_bytes(text: str) -> int:
  """The bytes in HBM of every array type written in `text` (a shape or a tuple of shapes): an
  array whose layout places it in memory space 1 (`S(1)`, a TPU core's on-chip VMEM, where
  XLA's memory-space assignment prefetches operands) counts nothing."""
  return sum(piece_bytes(a) for a in ARRAY.findall(text) if "S(1)" not in (a[2] or ""))


def parse(hlo: str) -> dict[str, list[Instruction]]:
  """{computation: [(name, result type, opcode, the rest of the line)]}, in the text's order
  (a computation is defined before any that calls it; the entry comes last)."""
  computations: dict[str, list[Instruction]] = {}
  current = None
  for line in hlo.splitlines():
    if current is None:
      m = _COMPUTATION.match(line)
      if m and "=" not in line.split("{", 1)[0].split("(", 1)[0]:
        current = m.group(1)
        computations[current] = []
      continue
    if line.strip() == "}":
      current = None
      continue
    m = _INSTRUCTION.match(line)
    if m:
      computations[current].append(m.groups())
  return computations


def operands(rest: str) -> list[str]:
  """The names of an instruction's operands: every %name before its attributes (layouts hold
  parentheses too)."""
  cut = _ATTRIBUTES.search(rest)
  return re.findall(r"%([\w.\-]+)", rest[:cut.start()] if cut else rest)


def trip_count(condition: list[Instruction]) -> int | None:
  """The trips of a loop whose `condition` compares its counter with one integer constant
  (`lax.scan`, `fori_loop`: counting from zero while below it); None for any other."""
  constants = [int(m.group(1)) for _, result, opcode, rest in condition
               if opcode == "constant" and re.match(r"[su](32|64)\[\]", result)
               for m in [re.match(r"(-?\d+)\)", rest)] if m]
  compares = [rest for _, _, opcode, rest in condition if opcode == "compare"]
  if len(constants) == 1 and len(compares) == 1 and "direction=LT" in compares[0]:
    return constants[0]
  return None


def executions(computations: dict[str, list[Instruction]]) -> dict[str, int]:
  """How many times each computation runs in one call of the program (the entry, last, once):
  a loop's body once per trip (`trip_count`; once where it is not known), every other called
  computation once per call of its caller."""
  names = list(computations)
  runs = collections.Counter({names[-1]: 1})
  for name in reversed(names):  # callers before the computations they call
    for _, _, opcode, rest in computations[name]:
      called = [(attr, c) for attr, c in _CALLS.findall(rest)]
      called += [("calls", c.strip().lstrip("%"))
                 for group in _CALL_LISTS.findall(rest) for c in group.split(",") if c.strip()]
      trips = 1
      if opcode == "while":
        condition = dict(called).get("condition")
        trips = trip_count(computations.get(condition, [])) or 1
      for attr, callee in called:
        if callee in computations:
          runs[callee] += runs[name] * (trips if attr == "body" else 1)
  return dict(runs)


COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")


def group_size(rest: str, devices: int) -> int:
  """The size of a collective's replica groups, in any of the forms XLA prints them:
  `{{0,1},{2,3}}`, iota `[2,2]<=[4]`, the mesh form `mesh[...], device_ids=(...) {'axis_0'}`
  (the named axes' sizes multiplied); all `devices` when the groups are empty or absent."""
  m = re.search(r"replica_groups=mesh\[([^\]]*)\][^{]*\{([^}]*)\}", rest)
  if m:
    sizes = dict(re.findall(r"'([^']+)'=(\d+)", m.group(1)))
    return math.prod(int(sizes[a]) for a in re.findall(r"'([^']+)'", m.group(2)))
  m = re.search(r"replica_groups=\[([\d,]+)\]<=", rest)
  if m:
    return int(m.group(1).split(",")[-1])
  m = re.search(r"replica_groups=\{\{([\d,]*)\}", rest)
  if m and m.group(1):
    return len(m.group(1).split(","))
  return devices


def collectives(hlo: str, devices: int) -> dict[str, float]:
  """{kind: bytes one chip sends in one call of the program} for a program compiled over
  `devices` devices (module docstring)."""
  computations = parse(hlo)
  runs = executions(computations)
  by_channel: dict[str, tuple[str, float]] = {}
  for name, body in computations.items():
    types = {n: t for n, t, _, _ in body}
    sliced = {ops[0] for _, _, opcode, rest in body
              if opcode == "dynamic-slice" and (ops := operands(rest))}
    for i, (instruction, result, opcode, rest) in enumerate(body):
      kind = opcode.removesuffix("-start")
      if kind not in COLLECTIVES or runs.get(name, 0) == 0:
        continue
      sent = sum(piece_bytes(a) for o in operands(rest) for a in ARRAY.findall(types.get(o, "")))
      g = group_size(rest, devices)
      if kind == "all-reduce" and instruction in sliced:
        kind = "reduce-scatter"
      share = {"all-gather": g - 1, "reduce-scatter": (g - 1) / g, "all-to-all": (g - 1) / g,
               "all-reduce": 2 * (g - 1) / g, "collective-permute": 1}[kind]
      channel = re.search(r"channel_id=(\d+)", rest)
      key = channel.group(1) if channel else f"{name}/{i}"
      moved = runs[name] * share * sent
      if moved > by_channel.get(key, ("", -1.0))[1]:
        by_channel[key] = (kind, moved)
  out: dict[str, float] = collections.defaultdict(float)
  for kind, moved in by_channel.values():
    out[kind] += moved
  return dict(out)
