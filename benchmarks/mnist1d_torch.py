"""The MNIST-1D paper's PyTorch training of its models, the reference for our speed and accuracy.

A transcription of the mnist1d package's models and `train_model` (Greydanus 2020). `--model`:
cnn (three stride-2 Conv1d layers of 25 channels, kernels 5, 3, 3, padding 1, ReLU, a linear
head), mlp (100-100 ReLU, a skip around the second layer), gru (bidirectional GRU of 6 units,
all 40 steps' outputs flattened into a linear head). PyTorch's default initialisation;
Adam(lr=1e-2, weight_decay=0); batch 100 taken in order (`bix = step * 100 % 4000`, no
shuffling); 8,000 steps; test accuracy every `--eval_every` steps (the package's default is
250). It needs only torch and numpy, not this project:

  pip install torch==2.13.0 numpy
  python -m benchmarks.mnist1d_torch --data tests/data/mnist1d_frozen.npz --seed 0

Prints one JSON line: wall time from process start, steady-state steps/s, final test accuracy.
"""

import json
import time

T0 = time.perf_counter()

import numpy as np
import torch
from torch import nn

from train import cli


class ConvBase(nn.Module):

  def __init__(self, output_size: int = 10, channels: int = 25, linear_in: int = 125):
    super().__init__()
    self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
    self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
    self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
    self.linear = nn.Linear(linear_in, output_size)

  def forward(self, x):
    x = x.view(-1, 1, x.shape[-1])
    h = self.conv1(x).relu()
    h = self.conv2(h).relu()
    h = self.conv3(h).relu()
    return self.linear(h.view(h.shape[0], -1))


class MLP(nn.Module):

  def __init__(self, input_size: int = 40, output_size: int = 10, hidden_size: int = 100):
    super().__init__()
    self.linear1 = nn.Linear(input_size, hidden_size)
    self.linear2 = nn.Linear(hidden_size, hidden_size)
    self.linear3 = nn.Linear(hidden_size, output_size)

  def forward(self, x):
    h = self.linear1(x).relu()
    h = h + self.linear2(h).relu()
    return self.linear3(h)


class GRU(nn.Module):

  def __init__(self, input_size: int = 1, output_size: int = 10, hidden_size: int = 6,
               time_steps: int = 40, bidirectional: bool = True):
    super().__init__()
    self.gru = nn.GRU(input_size, hidden_size, batch_first=True, bidirectional=bidirectional)
    flat = hidden_size * time_steps * (2 if bidirectional else 1)
    self.linear = nn.Linear(flat, output_size)

  def forward(self, x):
    out, _ = self.gru(x.view(x.shape[0], -1, 1))
    return self.linear(out.reshape(out.shape[0], -1))


def accuracy(model, x, y) -> float:
  with torch.no_grad():
    return float((model(x).argmax(-1) == y).float().mean())


def main() -> None:
  p = cli.ArgumentParser()
  p.add_argument("--data", required=True)
  p.add_argument("--model", choices=("cnn", "mlp", "gru"), default="cnn")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--steps", type=int, default=8000)
  p.add_argument("--eval_every", type=int, default=250)
  p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
  a = p.parse_args()
  if a.threads:
    torch.set_num_threads(a.threads)
  torch.manual_seed(a.seed)
  d = np.load(a.data)
  x, y = torch.tensor(d["x"], dtype=torch.float32), torch.tensor(d["y"], dtype=torch.int64)
  xt, yt = torch.tensor(d["x_test"], dtype=torch.float32), torch.tensor(d["y_test"],
                                                                        dtype=torch.int64)
  model = {"cnn": ConvBase, "mlp": MLP, "gru": GRU}[a.model]()
  opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=0)
  loss_fn = nn.CrossEntropyLoss()
  t_loop = time.perf_counter()
  t_mid = None
  for step in range(a.steps):
    bix = (step * 100) % len(y)
    loss = loss_fn(model(x[bix:bix + 100]), y[bix:bix + 100])
    loss.backward()
    opt.step()
    opt.zero_grad()
    if a.eval_every and (step + 1) % a.eval_every == 0:
      accuracy(model, xt, yt)
    if step + 1 == a.steps // 4:
      t_mid = time.perf_counter()
  t_end = time.perf_counter()
  print(json.dumps({
      "reference": "pytorch", "model": a.model, "torch": torch.__version__, "threads": torch.get_num_threads(),
      "seed": a.seed, "steps": a.steps, "test_accuracy": accuracy(model, xt, yt),
      "steady_steps_per_s": (a.steps - a.steps // 4) / (t_end - t_mid),
      "loop_s": t_end - t_loop, "wall_s": time.perf_counter() - T0}))


if __name__ == "__main__":
  cli.guarded(main)
