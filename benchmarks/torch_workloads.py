"""PyTorch twins of the benchmark workloads: the same model, batch, loss and optimizer as each
strata experiment, written as a PyTorch user would (eager mode, `torch.optim`, NCHW layouts,
`F.scaled_dot_product_attention`), so `benchmarks.run` can time both in one process.

    twin = build("digits_vae", config)       # config: the experiment's ConfigDict
    batch = twin.convert(strata_batch)        # numpy/jax arrays -> torch tensors, once
    loss = twin.step(batch)                   # one training step, in place

Each twin reads its sizes from `config.model`, so an experiment's tiny mode has a tiny twin; a
config that uses a feature a twin does not implement raises ValueError naming the field. The
parameter counts must equal strata's (`benchmarks.run` checks it, a test too), and for the CNN and
the language model the forward pass equals strata's given the same weights (`load_flax`, tested).

What each step does, as strata's paradigm does it:
- mnist1d_cnn: softmax cross-entropy, Adam.
- charlm_transformer: masked next-token cross-entropy, AdamW with weight decay on matrices only,
  global-norm clipping, warm-up + cosine learning rate.
- digits_vae: Bernoulli negative ELBO with the KL weight warming up, Adam with a cosine rate.
- digits_dcgan: one discriminator update (non-saturating loss on reals and fresh fakes + R1
  penalty by double backward), one generator update, an EMA of the generator; two Adams.
- digits_unet: v-prediction with min-SNR weights at random timesteps of a cosine schedule,
  AdamW with clipping, an EMA of the weights.
Not done on the PyTorch side: the logging metrics strata's steps also return (gradient and
parameter norms), so strata does slightly more work per step.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Twin(NamedTuple):
  """A PyTorch workload: `step(batch)` trains one step and returns the loss tensor;
  `convert(batch)` turns a strata batch ({"inputs", "label", "mask"} arrays) into the tensors
  `step` takes."""
  model: nn.Module
  step: Callable[[dict[str, torch.Tensor]], torch.Tensor]
  convert: Callable[[dict[str, Any]], dict[str, torch.Tensor]]

  @property
  def parameters(self) -> int:
    return sum(p.numel() for p in self.model.parameters())


def _tensors(batch: dict[str, Any], channels_first: int = 0) -> dict[str, torch.Tensor]:
  """numpy copies of a batch as tensors; inputs (B, *spatial, C) -> (B, C, *spatial) when
  `channels_first` gives the number of spatial axes."""
  out = {k: torch.from_numpy(np.array(v)) for k, v in batch.items()}
  if "label" in out:
    out["label"] = out["label"].long()  # the index dtype cross_entropy takes
  if channels_first:
    x = out["inputs"]
    if x.ndim == 1 + channels_first:  # no channel axis
      x = x.unsqueeze(-1)
    out["inputs"] = x.movedim(-1, 1).contiguous()
  return out


def _require(model: Any, field: str, allowed: tuple) -> None:
  value = model.get(field, allowed[0])
  if value not in allowed:
    raise ValueError(f"model.{field}={value!r}: the PyTorch twin implements only {list(allowed)}")


def _lr_lambda(o: Any, steps: int) -> Callable[[int], float]:
  """strata's schedule (train.optim) as a multiplier of the base rate: linear warm-up, then
  constant or cosine down to end_lr_factor."""
  def f(step: int) -> float:
    if o.warmup_steps and step < o.warmup_steps:
      return step / o.warmup_steps
    if o.schedule in ("cosine", "warmup_cosine"):
      span = max(steps - o.warmup_steps, 1)
      frac = min(max(step - o.warmup_steps, 0) / span, 1.0)
      return o.end_lr_factor + (1 - o.end_lr_factor) * 0.5 * (1 + math.cos(math.pi * frac))
    return 1.0
  return f


def _optimizer(params: list[nn.Parameter], o: Any, steps: int, lr: float | None = None):
  """`config.optim` as a torch optimizer and scheduler: Adam, or AdamW decaying only the
  parameters of two or more dimensions (strata's decay mask)."""
  if o.name not in ("adam", "adamw"):
    raise ValueError(f"optim.name={o.name!r}: the PyTorch twins implement 'adam' and 'adamw'")
  kw = dict(lr=lr or o.learning_rate, betas=(o.b1, o.b2), eps=o.eps, foreach=True)
  if o.name == "adamw" and o.weight_decay > 0:
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": o.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, **kw)
  elif o.name == "adamw":
    opt = torch.optim.AdamW(params, weight_decay=0.0, **kw)
  else:
    opt = torch.optim.Adam(params, **kw)
  return opt, torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(o, steps))


def _update(loss: torch.Tensor, params: list[nn.Parameter], opt: Any, sched: Any,
            clip: float = 0.0) -> torch.Tensor:
  """Backward pass, optional global-norm clipping, optimizer and schedule step."""
  opt.zero_grad(set_to_none=True)
  loss.backward()
  if clip > 0:
    nn.utils.clip_grad_norm_(params, clip, foreach=True)
  opt.step()
  sched.step()
  return loss.detach()


def _supervised_step(model: nn.Module, config: Any, loss_fn: Callable) -> Callable:
  params = list(model.parameters())
  opt, sched = _optimizer(params, config.optim, config.train.steps)

  def step(batch):
    return _update(loss_fn(model(batch["inputs"]), batch), params, opt, sched,
                   config.optim.clip_norm)
  return step


def _ema(average: list[torch.Tensor], params: list[nn.Parameter], decay: float,
         step: int) -> None:
  """strata's `state.update_average`: weight min(decay, (1 + step) / (10 + step)) on the old."""
  w = min(decay, (1.0 + step) / (10.0 + step))
  with torch.no_grad():
    torch._foreach_lerp_(average, [p.detach() for p in params], 1.0 - w)


# ----------------------------------------------------------------------------------- CNN

class CNN1d(nn.Module):
  """The MNIST-1D paper's CNN: strided 1-D convolutions with ReLU, flatten, linear head."""

  def __init__(self, m: Any, length: int):
    super().__init__()
    n = len(m.features)
    per = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v,) * n  # noqa: E731
    layers, c = [], 1
    for f, k, s, p in zip(m.features, per(m.kernel_sizes), per(m.strides), per(m.padding)):
      layers.append(nn.Conv1d(c, f, k, stride=s, padding=p))
      length = (length + 2 * p - k) // s + 1
      c = f
    self.convs = nn.ModuleList(layers)
    self.head = nn.Linear(c * length, m.num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = x.unsqueeze(1)                               # (B, L) -> (B, 1, L)
    for conv in self.convs:
      x = F.relu(conv(x))
    return self.head(x.transpose(1, 2).flatten(1))   # strata flattens (B, L, C)


def cnn(config: Any, example: dict[str, Any]) -> Twin:
  m = config.model
  if m.get("ndim", 1) != 1:
    raise ValueError(f"model.ndim={m.ndim}: the PyTorch CNN twin is 1-D")
  _require(m, "pool", ("none",))
  _require(m, "head", ("flatten",))
  if tuple(m.get("dense", ())) or isinstance(m.padding, str):
    raise ValueError("the PyTorch CNN twin takes int padding and no dense layers")
  model = CNN1d(m, example["inputs"].shape[1])
  return Twin(model, _supervised_step(model, config,
                                      lambda logits, b: F.cross_entropy(logits, b["label"])),
              _tensors)


# --------------------------------------------------------------------------- Transformer

class Block(nn.Module):
  """Pre-LayerNorm block: x + Attention(LN(x)), x + MLP(LN(x)), GELU (tanh form, as flax's)."""

  def __init__(self, width: int, heads: int, mlp_dim: int):
    super().__init__()
    self.heads = heads
    self.ln_attn, self.ln_mlp = nn.LayerNorm(width, eps=1e-6), nn.LayerNorm(width, eps=1e-6)
    self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
    self.mlp_in, self.mlp_out = nn.Linear(width, mlp_dim), nn.Linear(mlp_dim, width)

  def attention(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
    b, t, d = x.shape
    q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)    # (B, N, T, H)
    return self.proj(out.transpose(1, 2).reshape(b, t, d))

  def forward(self, x: torch.Tensor, causal: bool = True) -> torch.Tensor:
    x = x + self.attention(self.ln_attn(x), causal)
    return x + self.mlp_out(F.gelu(self.mlp_in(self.ln_mlp(x)), approximate="tanh"))


class TransformerLM(nn.Module):
  """Decoder-only LM with learned positions: tokens (B, T) -> logits (B, T, V)."""

  def __init__(self, m: Any):
    super().__init__()
    self.embed = nn.Embedding(m.vocab_size, m.width)
    self.position = nn.Parameter(torch.randn(m.max_len, m.width) * 0.02)
    nn.init.normal_(self.embed.weight, std=0.02)
    self.blocks = nn.ModuleList(Block(m.width, m.num_heads, m.mlp_dim) for _ in range(m.depth))
    self.ln_final = nn.LayerNorm(m.width, eps=1e-6)
    self.head = nn.Linear(m.width, m.vocab_size)

  def forward(self, tokens: torch.Tensor) -> torch.Tensor:
    x = self.embed(tokens) + self.position[:tokens.shape[1]]
    for block in self.blocks:
      x = block(x)
    return self.head(self.ln_final(x))


def transformer_lm(config: Any, example: dict[str, Any]) -> Twin:
  m = config.model
  _require(m, "positions", ("learned",))
  if m.get("dropout", 0.0):
    raise ValueError("model.dropout: the PyTorch LM twin has no dropout")
  model = TransformerLM(m)

  def loss(logits, b):
    per = F.cross_entropy(logits.flatten(0, 1), b["label"].flatten(), reduction="none")
    mask = b["mask"].flatten()
    return (per * mask).sum() / mask.sum().clamp(min=1)

  def convert(batch):
    t = _tensors(batch)
    t["inputs"] = t["inputs"].long()
    return t
  return Twin(model, _supervised_step(model, config, loss), convert)


# ----------------------------------------------------------------------------------- VAE

class ConvVAE(nn.Module):
  """Stride-2 3x3 conv encoder to (mean, logvar), dense + transposed-conv decoder (logits)."""

  def __init__(self, m: Any):
    super().__init__()
    h, w = m.input_shape[:2]
    c = m.input_shape[2] if len(m.input_shape) > 2 else 1
    k = m.get("kernel_size", 3)
    chans = [c] + list(m.features)
    self.enc = nn.ModuleList(nn.Conv2d(a, b, k, stride=2, padding=k // 2)
                             for a, b in zip(chans[:-1], chans[1:]))
    f = 2 ** len(m.features)
    self.bottom = (m.features[-1], h // f, w // f)
    self.code = nn.Linear(math.prod(self.bottom), 2 * m.latent_dim)
    self.project = nn.Linear(m.latent_dim, math.prod(self.bottom))
    back = list(reversed(chans))
    self.dec = nn.ModuleList(nn.ConvTranspose2d(a, b, k, stride=2, padding=k // 2,
                                                output_padding=1)
                             for a, b in zip(back[:-1], back[1:]))
    self.latent_dim = m.latent_dim

  def forward(self, x: torch.Tensor):
    h = x
    for conv in self.enc:
      h = F.relu(conv(h))
    mean, logvar = self.code(h.flatten(1)).chunk(2, dim=-1)
    z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
    h = F.relu(self.project(z)).view(-1, *self.bottom)
    for i, deconv in enumerate(self.dec):
      h = deconv(h)
      if i < len(self.dec) - 1:
        h = F.relu(h)
    return h, mean, logvar


def vae(config: Any, example: dict[str, Any]) -> Twin:
  m, r = config.model, config.reconstruction
  _require(m, "encoder", ("conv",))
  _require(m, "likelihood", ("bernoulli",))
  if m.get("ndim", 2) != 2:
    raise ValueError(f"model.ndim={m.ndim}: the PyTorch VAE twin is 2-D")
  model = ConvVAE(m)
  params = list(model.parameters())
  opt, sched = _optimizer(params, config.optim, config.train.steps)
  count = [0]

  def step(batch):
    x = batch["inputs"]
    logits, mean, logvar = model(x)
    nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum(1)
    weight = r.beta * (min(1.0, (count[0] + 1) / r.kl_warmup_steps) if r.kl_warmup_steps > 0
                       else 1.0)
    loss = ((nll + weight * kl) * batch["mask"]).sum() / x.shape[0]
    count[0] += 1
    return _update(loss, params, opt, sched)
  return Twin(model, step, lambda b: _tensors(b, channels_first=2))


# ----------------------------------------------------------------------------------- GAN

class Generator(nn.Module):
  """z -> dense to a (C0, H/2^L, W/2^L) map -> BN, ReLU -> stride-2 4x4 transposed convs."""

  def __init__(self, m: Any):
    super().__init__()
    h, w = m.data_shape[:2]
    c = m.data_shape[2] if len(m.data_shape) > 2 else 1
    f = 2 ** len(m.g_features)
    self.bottom = (m.g_features[0], h // f, w // f)
    self.project = nn.Linear(m.latent_dim, math.prod(self.bottom))
    widths = list(m.g_features) + [c]
    self.norms = nn.ModuleList(nn.BatchNorm2d(wd, momentum=0.1) for wd in widths[:-1])
    self.deconvs = nn.ModuleList(nn.ConvTranspose2d(a, b, m.kernel_size, stride=2, padding=1)
                                 for a, b in zip(widths[:-1], widths[1:]))

  def forward(self, z: torch.Tensor) -> torch.Tensor:
    x = F.relu(self.norms[0](self.project(z).view(-1, *self.bottom)))
    for i, deconv in enumerate(self.deconvs):
      x = deconv(x)
      if i < len(self.deconvs) - 1:
        x = F.relu(self.norms[i + 1](x))
    return torch.sigmoid(x)


class Discriminator(nn.Module):
  """Stride-2 4x4 convolutions with leaky ReLU (0.2), flatten, linear: logits (B,)."""

  def __init__(self, m: Any):
    super().__init__()
    h, w = m.data_shape[:2]
    c = m.data_shape[2] if len(m.data_shape) > 2 else 1
    chans = [c] + list(m.d_features)
    self.convs = nn.ModuleList(nn.Conv2d(a, b, m.kernel_size, stride=2, padding=1)
                               for a, b in zip(chans[:-1], chans[1:]))
    f = 2 ** len(m.d_features)
    self.out = nn.Linear(chans[-1] * (h // f) * (w // f), 1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    for conv in self.convs:
      x = F.leaky_relu(conv(x), 0.2)
    return self.out(x.flatten(1))[:, 0]


class GAN(nn.Module):
  def __init__(self, m: Any):
    super().__init__()
    self.generator, self.discriminator = Generator(m), Discriminator(m)


def dcgan(config: Any, example: dict[str, Any]) -> Twin:
  m, a = config.model, config.adversarial
  _require(m, "g_norm", ("batch",))
  _require(m, "output", ("sigmoid",))
  _require(m, "spectral_norm", ("none",))
  _require(a, "loss", ("non_saturating",))
  if m.num_classes or m.ndim != 2 or a.n_critic != 1 or m.kernel_size != 4:
    raise ValueError("the PyTorch GAN twin is unconditional, 2-D, kernel 4, with n_critic=1")
  model = GAN(m)
  G, D = model.generator, model.discriminator
  g_params, d_params = list(G.parameters()), list(D.parameters())
  opt_g, sched_g = _optimizer(g_params, config.optim, config.train.steps)
  opt_d, sched_d = _optimizer(d_params, config.optim, config.train.steps,
                              lr=a.d_learning_rate or None)
  ema = [p.detach().clone() for p in g_params]
  count = [0]

  def step(batch):
    x, weight = batch["inputs"], batch["mask"]
    b = x.shape[0]
    with torch.no_grad():
      fake = G(torch.randn(b, m.latent_dim))                 # train mode: BN statistics move
    logits = D(torch.cat([x, fake]))
    real, fk = logits[:b], logits[b:]
    d_loss = (weight * F.softplus(-real)).sum() / b + F.softplus(fk).mean()
    if a.r1_gamma > 0:
      xr = x.detach().requires_grad_(True)
      (g,) = torch.autograd.grad(D(xr).sum(), xr, create_graph=True)
      d_loss = d_loss + 0.5 * a.r1_gamma * g.square().flatten(1).sum(1).mean()
    _update(d_loss, d_params, opt_d, sched_d)

    g_loss = F.softplus(-D(G(torch.randn(b, m.latent_dim)))).mean()
    grads = torch.autograd.grad(g_loss, g_params)            # no gradient for D's weights
    for p, gr in zip(g_params, grads):
      p.grad = gr
    opt_g.step()
    sched_g.step()
    if a.ema_decay > 0:
      _ema(ema, g_params, a.ema_decay, count[0])
    count[0] += 1
    return (d_loss + g_loss).detach()
  return Twin(model, step, lambda b: _tensors(b, channels_first=2))


# ---------------------------------------------------------------------------------- UNet

def sinusoidal(t: torch.Tensor, dim: int) -> torch.Tensor:
  """strata's `arch.attention.sinusoidal`: sin at even, cos at odd features."""
  inv = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)
  angles = t.float()[:, None] * inv
  return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)


class ResBlock(nn.Module):
  def __init__(self, cin: int, cout: int, emb: int, groups: int):
    super().__init__()
    self.norm0 = nn.GroupNorm(groups, cin, eps=1e-6)
    self.norm1 = nn.GroupNorm(groups, cout, eps=1e-6)
    self.conv0, self.conv1 = nn.Conv2d(cin, cout, 3, padding=1), nn.Conv2d(cout, cout, 3, padding=1)
    nn.init.zeros_(self.conv1.weight)
    self.emb = nn.Linear(emb, cout)
    self.shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

  def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    h = self.conv0(F.silu(self.norm0(x))) + self.emb(F.silu(emb))[:, :, None, None]
    h = self.conv1(F.silu(self.norm1(h)))
    return self.shortcut(x) + h


class AttentionBlock(nn.Module):
  """GroupNorm, multi-head self-attention over the H*W positions, a zero-initialised output
  layer, added back (strata's attention has its own output projection before that layer)."""

  def __init__(self, c: int, heads: int, groups: int):
    super().__init__()
    self.norm, self.heads = nn.GroupNorm(groups, c, eps=1e-6), heads
    self.qkv, self.proj, self.out = nn.Linear(c, 3 * c), nn.Linear(c, c), nn.Linear(c, c)
    nn.init.zeros_(self.out.weight)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    b, c, hh, ww = x.shape
    h = self.norm(x).flatten(2).transpose(1, 2)                       # (B, HW, C)
    q, k, v = self.qkv(h).view(b, -1, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
    h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, c)
    h = self.out(self.proj(h))
    return x + h.transpose(1, 2).reshape(b, c, hh, ww)


class UNet(nn.Module):
  """strata's `arch.unet.UNet` (2-D, unconditional) in PyTorch, level by level."""

  def __init__(self, m: Any):
    super().__init__()
    ch, mults, heads, groups = m.channels, tuple(m.channel_mults), m.num_heads, m.groups
    c = m.data_shape[2] if len(m.data_shape) > 2 else 1
    self.channels, self.dim = ch, 4 * ch
    self.time0, self.time1 = nn.Linear(ch, self.dim), nn.Linear(self.dim, self.dim)
    self.stem = nn.Conv2d(c, ch, 3, padding=1)
    # The down path as a flat list; a skip is kept after each block (with its attention) and
    # after each downsampling, as strata's UNet keeps them.
    self.down, self.skip_after, widths, w = nn.ModuleList(), [], [ch], ch
    for i, mult in enumerate(mults):
      for _ in range(m.num_res_blocks):
        self.down.append(ResBlock(w, ch * mult, self.dim, groups))
        w = ch * mult
        if i in m.attention_levels:
          self.skip_after.append(False)
          self.down.append(AttentionBlock(w, heads, groups))
        self.skip_after.append(True)
        widths.append(w)
      if i < len(mults) - 1:
        self.down.append(nn.Conv2d(w, w, 3, stride=2, padding=1))
        self.skip_after.append(True)
        widths.append(w)
    self.mid = nn.ModuleList([ResBlock(w, w, self.dim, groups), AttentionBlock(w, heads, groups),
                              ResBlock(w, w, self.dim, groups)])
    self.up = nn.ModuleList()
    for i in reversed(range(len(mults))):
      for _ in range(m.num_res_blocks + 1):
        self.up.append(ResBlock(w + widths.pop(), ch * mults[i], self.dim, groups))
        w = ch * mults[i]
        if i in m.attention_levels:
          self.up.append(AttentionBlock(w, heads, groups))
      if i > 0:
        self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                     nn.Conv2d(w, w, 3, padding=1)))
    self.out_norm, self.out = nn.GroupNorm(groups, w, eps=1e-6), nn.Conv2d(w, c, 3, padding=1)
    nn.init.zeros_(self.out.weight)

  def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    emb = self.time1(F.silu(self.time0(sinusoidal(t, self.channels))))
    h = self.stem(x)
    skips = [h]
    for layer, keep in zip(self.down, self.skip_after):
      h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
      if keep:
        skips.append(h)
    h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
    for layer in self.up:
      if isinstance(layer, ResBlock):
        h = layer(torch.cat([h, skips.pop()], dim=1), emb)
      else:
        h = layer(h)
    return self.out(F.silu(self.out_norm(h)))


def unet(config: Any, example: dict[str, Any]) -> Twin:
  m, f = config.model, config.diffusion
  if m.num_classes or m.ndim != 2 or m.dropout:
    raise ValueError("the PyTorch UNet twin is unconditional, 2-D, without dropout")
  _require(f, "prediction", ("v", "eps"))
  model = UNet(m)
  params = list(model.parameters())
  opt, sched = _optimizer(params, config.optim, config.train.steps)
  ema = [p.detach().clone() for p in params]
  from train.paradigms import diffusion_math as diffusion

  schedule = diffusion.make_schedule(f.schedule, f.steps)  # data, not timed work: strata's own
  alpha_bars = torch.from_numpy(np.array(schedule.alpha_bars))
  snr = alpha_bars / (1 - alpha_bars)
  clip = config.optim.clip_norm
  count = [0]

  def step(batch):
    x = batch["inputs"]
    b, dev = x.shape[0], x.device
    t = torch.randint(0, f.steps, (b,), device=dev)
    noise = torch.randn_like(x)
    ab = alpha_bars.to(dev)[t].view(b, 1, 1, 1)
    xt = ab.sqrt() * x + (1 - ab).sqrt() * noise
    want = noise if f.prediction == "eps" else ab.sqrt() * noise - (1 - ab).sqrt() * x
    err = (model(xt, t).float() - want).square().flatten(1).mean(1)
    weight = torch.ones(b, device=dev)
    if f.weighting == "min_snr":
      r = snr.to(dev)[t]
      weight = r.clamp(max=f.snr_gamma) / (r if f.prediction == "eps" else r + 1)
    loss = _update((err * weight * batch["mask"]).sum() / b, params, opt, sched, clip)
    if f.ema_decay > 0:
      if ema[0].device != params[0].device:  # the model moved to an accelerator after build
        ema[:] = [e.to(params[0].device) for e in ema]
      _ema(ema, params, f.ema_decay, count[0])
    count[0] += 1
    return loss
  return Twin(model, step, lambda b: _tensors(b, channels_first=2))


def load_flax(twin: Twin, params: Any) -> None:
  """Copies strata's parameters (a flax tree, for the CNN or the language model) into the twin,
  so that the two forward passes can be compared."""
  t = lambda a: torch.from_numpy(np.array(a, np.float32))  # noqa: E731
  model, state = twin.model, {}
  if isinstance(model, CNN1d):
    for i in range(len(model.convs)):
      state[f"convs.{i}.weight"] = t(params[f"conv{i}"]["kernel"]).permute(2, 1, 0)  # WIO->OIW
      state[f"convs.{i}.bias"] = t(params[f"conv{i}"]["bias"])
    state["head.weight"], state["head.bias"] = t(params["head"]["kernel"]).T, t(
        params["head"]["bias"])
  elif isinstance(model, TransformerLM):
    d = params["decoder"]
    state["embed.weight"], state["position"] = t(params["embed"]["embedding"]), t(
        d["position_embedding"])
    for i in range(len(model.blocks)):
      p, key = d[f"block{i}"], f"blocks.{i}."
      attn = p["attn"]
      width = attn["out"]["bias"].shape[0]
      qkv = [t(attn[n]["kernel"]).reshape(width, width) for n in ("query", "key", "value")]
      state[key + "qkv.weight"] = torch.cat(qkv, 1).T
      state[key + "qkv.bias"] = torch.cat([t(attn[n]["bias"]).reshape(-1)
                                           for n in ("query", "key", "value")])
      state[key + "proj.weight"] = t(attn["out"]["kernel"]).reshape(width, width).T
      state[key + "proj.bias"] = t(attn["out"]["bias"])
      for n in ("ln_attn", "ln_mlp"):
        state[key + n + ".weight"], state[key + n + ".bias"] = t(p[n]["scale"]), t(p[n]["bias"])
      for n in ("mlp_in", "mlp_out"):
        state[key + n + ".weight"], state[key + n + ".bias"] = t(p[n]["kernel"]).T, t(
            p[n]["bias"])
    state["ln_final.weight"], state["ln_final.bias"] = t(d["ln_final"]["scale"]), t(
        d["ln_final"]["bias"])
    state["head.weight"], state["head.bias"] = t(params["head"]["kernel"]).T, t(
        params["head"]["bias"])
  else:
    raise ValueError(f"load_flax: no parameter mapping for {type(model).__name__}")
  model.load_state_dict(state, strict=True)


BUILDERS: dict[str, Callable[[Any, dict[str, Any]], Twin]] = {
    "cnn.CNN": cnn, "transformer.TransformerLM": transformer_lm, "autoencoder.VAE": vae,
    "gan.GAN": dcgan, "unet.UNet": unet,
}


def build(config: Any, example: dict[str, Any], seed: int = 0, device: str = "cpu",
          bf16: bool = False) -> Twin:
  """The PyTorch twin of `config`'s model and step; `example` is a strata batch (for shapes).
  On `device` (e.g. "cuda"), with the forward pass under bfloat16 autocast when `bf16` (the
  usual PyTorch mixed precision: float32 parameters and optimizer state)."""
  if config.model.name not in BUILDERS:
    raise ValueError(f"model.name={config.model.name!r}: no PyTorch twin; expected one of "
                     f"{sorted(BUILDERS)}")
  torch.manual_seed(seed)
  twin = BUILDERS[config.model.name](config, example)
  twin.model.train()
  if device == "cpu" and not bf16:
    return twin
  twin.model.to(device)  # before the first step, so the optimizers' state is made there
  kind = "cuda" if device.startswith("cuda") else "cpu"

  def step(batch):
    with torch.autocast(kind, dtype=torch.bfloat16, enabled=bf16):
      return twin.step(batch)

  def convert(batch):
    return {k: v.to(device) for k, v in twin.convert(batch).items()}
  return Twin(twin.model, step, convert)
