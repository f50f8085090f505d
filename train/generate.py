"""Sample text from a trained byte-level language model, decoding with its cache.

  python -m train.generate --workdir runs/charlm_transformer --prompt "The with statement" \\
      --length 200 --temperature 0.8 --top_k 20

Restores the workdir's config and newest checkpoint, encodes the prompt as bytes (token id =
byte value), runs the prompt through the model once to fill the key/value cache (or the recurrent
carries), then draws `length` tokens one at a time, each step feeding only the newest token. The
whole sampling loop is one `lax.scan` under `jax.jit`. `--temperature 0` takes the most likely
token at every step (greedy decoding).
"""

from __future__ import annotations

import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

import arch
from train import checkpoint, cli


class GenerationError(ValueError):
  """A prompt or setting the model cannot generate from."""


def encode(prompt: str, vocab_size: int) -> np.ndarray:
  """The prompt's UTF-8 bytes as token ids (P,) int32.

  Raises:
    GenerationError: an empty prompt, or a byte the model's vocabulary does not have.
  """
  data = prompt.encode("utf-8")
  if not data:
    raise GenerationError("--prompt is empty; generation needs at least one token to condition on")
  ids = np.frombuffer(data, np.uint8).astype(np.int32)
  bad = np.flatnonzero(ids >= vocab_size)
  if bad.size:
    at = int(bad[0])
    char_index = len(data[:at].decode("utf-8", errors="ignore"))
    raise GenerationError(
        f"--prompt byte 0x{ids[at]:02x} (in {prompt[char_index]!r}, character {char_index}) is "
        f"outside the model's vocabulary of {vocab_size} byte values (0..{vocab_size - 1})")
  return ids


def decode(tokens: np.ndarray) -> str:
  return bytes(np.asarray(tokens, np.uint8).tolist()).decode("utf-8", errors="replace")


def sample_logits(rng: jax.Array, logits: jnp.ndarray, temperature: float,
                  top_k: int) -> jnp.ndarray:
  """Token ids (B,) from logits (B, V): greedy at temperature 0, else softmax(logits / T)
  restricted to the `top_k` most likely tokens (0: all)."""
  logits = logits.astype(jnp.float32)
  if temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  if 0 < top_k < logits.shape[-1]:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  return jax.random.categorical(rng, logits / temperature, axis=-1).astype(jnp.int32)


def generate(model: Any, params: Any, prompt: jnp.ndarray, length: int, *, temperature: float = 1.0,
             top_k: int = 0, rng: jax.Array | None = None) -> jnp.ndarray:
  """`length` new tokens (B, length) after `prompt` (B, P) int32, decoding with the cache.

  Raises:
    GenerationError: prompt plus length longer than the model's `max_len`, or bad settings.
  """
  if length < 1:
    raise GenerationError(f"--length={length}; expected a positive number of tokens")
  if temperature < 0:
    raise GenerationError(f"--temperature={temperature}; expected a value >= 0")
  if top_k < 0:
    raise GenerationError(f"--top_k={top_k}; expected >= 0 (0 keeps every token)")
  batch, steps = prompt.shape
  max_len = getattr(model, "max_len", None)
  if max_len is not None and steps + length > max_len:
    raise GenerationError(
        f"prompt of {steps} tokens plus --length={length} is {steps + length} tokens, longer than "
        f"the model's max_len={max_len}; shorten the prompt or the length")
  rng = jax.random.key(0) if rng is None else rng
  cache = arch.init_cache(model, batch, steps + length)
  return _generate(model, length, float(temperature), int(top_k))(params, cache, prompt, rng)


def _generate(model, length, temperature, top_k):
  @jax.jit
  def run(params, cache, prompt, rng):
    def call(cache, tokens):
      logits, state = model.apply({"params": params, "cache": cache}, tokens, decode=True,
                                  mutable=["cache"])
      return logits[:, -1], state["cache"]

    logits, cache = call(cache, prompt)

    def step(carry, key):
      cache, logits = carry
      token = sample_logits(key, logits, temperature, top_k)
      logits, cache = call(cache, token[:, None])
      return (cache, logits), token

    _, tokens = jax.lax.scan(step, (cache, logits), jax.random.split(rng, length))
    return tokens.T                                                   # (B, length)
  return run


def load(workdir: str) -> tuple[Any, dict[str, Any], dict[str, Any], int]:
  """(model, state tree with `params`, config dict, checkpoint step) of a trained language
  model's workdir (`checkpoint.load_workdir`)."""
  model, state, config, step = checkpoint.load_workdir(workdir)
  if not getattr(model, "vocab_size", 0):
    raise GenerationError(f"--workdir={workdir} holds a {config['model']['name']} without a "
                          "token vocabulary (model.vocab_size); it is not a language model")
  return model, state, config, step


FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
  model, state, _, step = load(FLAGS.workdir)
  prompt = encode(FLAGS.prompt, model.vocab_size)
  prompts = jnp.asarray(np.tile(prompt, (FLAGS.num_samples, 1)))
  tokens = generate(model, state["params"], prompts, FLAGS.length, temperature=FLAGS.temperature,
                    top_k=FLAGS.top_k, rng=jax.random.key(FLAGS.seed))
  print(f"# {FLAGS.workdir}, checkpoint step {step}, temperature {FLAGS.temperature}, "
        f"top_k {FLAGS.top_k}, seed {FLAGS.seed}", file=sys.stderr)
  for row in np.asarray(tokens):
    print(FLAGS.prompt + decode(row))
    if FLAGS.num_samples > 1:
      print("-" * 40)


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so modules import together)."""
  flags.DEFINE_string("workdir", None, "A trained language model's run directory.")
  flags.DEFINE_string("prompt", None, "Text to continue (its bytes are the tokens).")
  flags.DEFINE_integer("length", 200, "Tokens (bytes) to generate.")
  flags.DEFINE_float("temperature", 1.0, "Softmax temperature; 0 is greedy.")
  flags.DEFINE_integer("top_k", 0, "Sample among the k most likely tokens (0: all).")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")
  flags.DEFINE_integer("num_samples", 1, "Independent continuations.")


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["workdir", "prompt"])
  cli.run(main)
