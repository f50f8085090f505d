"""PyTorch twins of the generative workloads (`benchmarks.torch_workloads`, which builds them):
digits_vae's convolutional VAE, digits_dcgan's GAN and digits_unet's UNet, each with its step as
strata's paradigm takes it (the module docstring of `torch_workloads` lists what each does)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.torch_common import Twin, _ema, _optimizer, _require, _tensors, _update

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
