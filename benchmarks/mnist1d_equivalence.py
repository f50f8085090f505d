"""Are our MNIST-1D CNN and GRU the paper's PyTorch models? Same weights in, same numbers out,
in float64.

  python -m benchmarks.mnist1d_equivalence --model cnn --side torch \\
      --data tests/data/mnist1d_frozen.npz --out /tmp/cnn_torch.npz
  python -m benchmarks.mnist1d_equivalence --model cnn --side jax \\
      --data tests/data/mnist1d_frozen.npz --out /tmp/cnn_torch.npz

The torch side (torch: the `bench` extra) builds `benchmarks/mnist1d_torch.py`'s model (`--model`
cnn or gru, the mnist1d package's ConvBase and GRU) with `torch.manual_seed(--seed)` in float64,
records its initial weights, and takes `--steps` Adam(1e-2) steps on in-order batches of 100
(`bix = step * 100 % 4000`), as the paper's loop does. The JAX side loads those initial weights
into `experiments/mnist1d_<model>.py`'s model (float64), takes the same steps with optax's Adam,
and prints the largest differences in initial logits, initial gradients and final weights.
Differences at float64 rounding mean the model, the loss, the optimizer and the batch order are
the same computation; a different final accuracy between the two frameworks can then only come
from the initial draw (the seed) and float32 rounding.

`--dtype float32 --steps 8000` on the JAX side trains our model the paper's full 8,000 steps in
float32 from the torch run's initial weights of `--seed` and prints its test accuracy, to set
beside `mnist1d_torch.py --model M --seed S`, which starts from the same weights.
"""

from __future__ import annotations

import numpy as np

from train import cli

HIDDEN = 6


def torch_side(a) -> None:
  import torch

  from benchmarks.mnist1d_torch import GRU, ConvBase

  d = np.load(a.data)
  torch.manual_seed(a.seed)  # as mnist1d_torch.py: the same initial weights as its run
  m = {"cnn": ConvBase, "gru": GRU}[a.model]().double()
  init = {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}
  x0, y0 = torch.tensor(d["x"][:100]), torch.tensor(d["y"][:100]).long()
  logits0 = m(x0)
  torch.nn.functional.cross_entropy(logits0, y0).backward()
  grads0 = {k: p.grad.numpy().copy() for k, p in m.named_parameters()}
  opt = torch.optim.Adam(m.parameters(), lr=1e-2)
  for step in range(a.steps):
    bix = step * 100 % 4000
    xb, yb = torch.tensor(d["x"][bix:bix + 100]), torch.tensor(d["y"][bix:bix + 100]).long()
    opt.zero_grad()
    torch.nn.functional.cross_entropy(m(xb), yb).backward()
    opt.step()
  np.savez(a.out, logits0=logits0.detach().numpy(),
           **{"init/" + k: v for k, v in init.items()},
           **{"grad0/" + k: v for k, v in grads0.items()},
           **{"final/" + k: v.detach().numpy() for k, v in m.state_dict().items()})
  print(f"wrote {a.out}")


def _to_flax(t: dict[str, np.ndarray], prefix: str, model: str) -> dict:
  if model == "cnn":
    p = {f"conv{i}": {"kernel": t[f"{prefix}conv{i + 1}.weight"].transpose(2, 1, 0),  # OIW->WIO
                      "bias": t[f"{prefix}conv{i + 1}.bias"]} for i in range(3)}
    w = t[f"{prefix}linear.weight"]  # torch flattens (C, L), feature c * L + l; ours (L, C)
    c = p["conv2"]["kernel"].shape[-1]
    w = w.reshape(w.shape[0], c, -1).transpose(0, 2, 1).reshape(w.shape[0], -1)
    return {**p, "head": {"kernel": w.T, "bias": t[f"{prefix}linear.bias"]}}

  def cell(sfx):
    w = {n: t[f"{prefix}gru.{n}_l0{sfx}"] for n in ("weight_ih", "weight_hh", "bias_ih",
                                                    "bias_hh")}
    p = {}
    for j, g in enumerate("rzn"):  # torch stacks the gates as rows [r; z; n]
      rows = slice(j * HIDDEN, (j + 1) * HIDDEN)
      p["i" + g] = {"kernel": w["weight_ih"][rows].T, "bias": w["bias_ih"][rows]}
      p["h" + g] = {"kernel": w["weight_hh"][rows].T, "bias": w["bias_hh"][rows]}
    return {"cell": p}
  return {"layer0_fwd": cell(""), "layer0_bwd": cell("_reverse"),
          "head": {"kernel": t[f"{prefix}linear.weight"].T, "bias": t[f"{prefix}linear.bias"]}}


def jax_side(a) -> None:
  import jax
  jax.config.update("jax_enable_x64", a.dtype == "float64")
  import jax.numpy as jnp
  import optax

  import arch
  from train import config as config_lib

  t = dict(np.load(a.out))
  d = np.load(a.data)
  dtype = jnp.dtype(a.dtype)
  model = arch.build({**config_lib.load(f"experiments.mnist1d_{a.model}").model.to_dict(), "dtype": dtype,
                      "param_dtype": dtype})
  d = {k: np.asarray(v, dtype) if k.startswith("x") else v for k, v in d.items()}

  def loss(p, x, y):
    out = model.apply({"params": p}, x)
    return optax.softmax_cross_entropy_with_integer_labels(out, y).mean(), out

  grad = jax.jit(jax.value_and_grad(loss, has_aux=True))
  tx = optax.adam(1e-2)

  @jax.jit
  def step_fn(params, opt_state, x, y):
    _, g = grad(params, x, y)
    updates, opt_state = tx.update(g, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  params = jax.tree.map(lambda v: jnp.asarray(v, dtype), _to_flax(t, "init/", a.model))
  (_, logits0), g0 = grad(params, d["x"][:100], d["y"][:100])
  opt_state = tx.init(params)
  for step in range(a.steps):
    bix = step * 100 % 4000
    params, opt_state = step_fn(params, opt_state, d["x"][bix:bix + 100], d["y"][bix:bix + 100])

  def max_diff(ours, theirs):
    a_, b_ = jax.tree.leaves(ours), jax.tree.leaves(theirs)
    return max(float(np.abs(np.asarray(x) - y).max()) for x, y in zip(a_, b_))

  grads_t = {k.replace("grad0/", "init/"): v for k, v in t.items() if k.startswith("grad0/")}
  print(f"initial logits: max |difference| {np.abs(np.asarray(logits0) - t['logits0']).max():.2e}")
  grad_diff = max_diff(g0, _to_flax(grads_t, "init/", a.model))
  print(f"initial gradients: max |difference| {grad_diff:.2e}")
  print(f"weights after {a.steps} Adam steps: max |difference| "
        f"{max_diff(params, _to_flax(t, 'final/', a.model)):.2e}")
  test = model.apply({"params": params}, d["x_test"]).argmax(-1) == d["y_test"]
  print(f"test accuracy after {a.steps} steps ({a.dtype}): {float(test.mean()):.4f}")


def main() -> None:
  p = cli.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", choices=("cnn", "gru"), default="gru")
  p.add_argument("--side", choices=("torch", "jax"), required=True)
  p.add_argument("--data", required=True)
  p.add_argument("--out", required=True, help="the torch side's .npz (written, then read)")
  p.add_argument("--steps", type=int, default=100)
  p.add_argument("--seed", type=int, default=0, help="torch side: torch.manual_seed")
  p.add_argument("--dtype", default="float64", choices=("float64", "float32"),
                 help="jax side: float32 trains as the runs do, from the torch run's weights")
  a = p.parse_args()
  torch_side(a) if a.side == "torch" else jax_side(a)


if __name__ == "__main__":
  cli.guarded(main)
