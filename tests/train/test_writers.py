"""`logging.*` (train/writers.py, train/histograms.py): histograms in TensorBoard's event file,
checked against NumPy on the checkpoint's parameters; the records unchanged by them; a W&B
offline run with the scalars of metrics.jsonl that a resumed run continues; bad fields."""

import glob
import json
import os
import shutil
import struct

import jax
import numpy as np
import pytest

from tests.conftest import load_experiment
from train import config as config_lib
from train import histograms, loop, optim, restored, writers
from train.errors import ConfigError


def _config(data_dir, steps=40, **logging):
  c = load_experiment("mnist1d_cnn", "tiny", data_dir)
  c.train.steps, c.train.log_every = steps, 10
  c.train.eval_every, c.train.checkpoint_every = 20, 20
  for k, v in logging.items():
    config_lib.set_field(c, f"logging.{k}", v)
  return c


def _records(workdir):
  return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


def _events(workdir):
  from tensorboardX.proto.event_pb2 import Event

  (path,) = glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
  data, out = open(path, "rb").read(), []
  while data:
    n = struct.unpack("<Q", data[:8])[0]
    out.append(Event.FromString(data[12:12 + n]))
    data = data[16 + n:]
  return out


def test_histograms_reach_tensorboard_and_match_numpy_on_the_parameters(data_dir, tmp_path):
  pytest.importorskip("tensorboardX")
  plain, watched = str(tmp_path / "plain"), str(tmp_path / "watched")
  loop.train_and_evaluate(_config(data_dir), plain)
  loop.train_and_evaluate(_config(data_dir, histograms_every=20), watched)

  # The records are the same but for the gradient norm's last digits: the histograms read the
  # gradients too, and XLA then sums them for the norm in another order.
  for a, b in zip(_records(plain), _records(watched), strict=True):
    assert a.keys() == b.keys()
    assert {k: v for k, v in a.items() if k != "grad_norm"} == {
        k: v for k, v in b.items() if k != "grad_norm"}
    if "grad_norm" in a:
      assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-6)

  histos = {(e.step, v.tag): v.histo for e in _events(watched) for v in e.summary.value
            if v.HasField("histo")}
  assert {s for s, _ in histos} == {20, 40}
  kinds = {tag.split("/")[0] for _, tag in histos}
  assert kinds == {"grad", "update", "param"}
  state = restored.restore(watched).state
  flat = {optim.path_name(p): np.asarray(x)
          for p, x in jax.tree_util.tree_flatten_with_path(state.params)[0]}
  assert {tag for s, tag in histos if s == 40 and tag.startswith("param/")} == {
      f"param/{k}" for k in flat}
  for name, x in flat.items():
    h = histos[(40, f"param/{name}")]
    x = x.astype(np.float64).ravel()
    assert (h.num, h.min, h.max) == (x.size, pytest.approx(x.min()), pytest.approx(x.max()))
    assert h.sum == pytest.approx(x.sum(), rel=1e-5, abs=1e-5)
    assert h.sum_squares == pytest.approx((x * x).sum(), rel=1e-5)
    assert len(h.bucket) == len(h.bucket_limit) == histograms.BINS
    assert h.bucket_limit[-1] == pytest.approx(x.max())
    edges = np.concatenate([[h.min], h.bucket_limit])
    expected, _ = np.histogram(x, edges)
    # float32 bin arithmetic on the device against float64 edges here: a value on an edge may
    # land in the bin beside
    assert sum(h.bucket) == x.size
    assert np.abs(np.asarray(h.bucket) - expected).sum() <= 2


def test_wandb_offline_run_holds_the_records_and_a_resumed_run_continues_it(data_dir, tmp_path):
  pytest.importorskip("wandb")
  from tests.train import wandb_records

  workdir = str(tmp_path / "run")
  writers_ = ("jsonl", "tensorboard", "wandb")
  loop.train_and_evaluate(_config(data_dir, writers=writers_, histograms_every=20,
                                  **{"wandb.tags": ("smoke",)}), workdir)
  # An interrupted run: its records reach step 40, its last checkpoint is step 20.
  shutil.rmtree(os.path.join(workdir, "checkpoints", "40"))
  loop.train_and_evaluate(_config(data_dir, steps=60, writers=writers_), workdir)

  first, second = wandb_records.segments(workdir)
  assert first["id"] == second["id"] == json.load(open(os.path.join(workdir, "wandb_run.json")))[
      "id"]
  assert (first["name"], first["project"], first["tags"]) == ("run", "strata", ["smoke"])
  assert second["config"]["config"] == json.load(open(os.path.join(workdir, "config.json")))
  assert first["config"]["config"]["train"]["steps"] == 40
  assert first["config"]["lineage"]["dataset"]["fingerprint"] == json.load(open(os.path.join(
      workdir, "lineage.json")))["dataset"]["fingerprint"]
  steps = [row["_step"] for s in (first, second) for row in s["history"]]
  assert steps == sorted(set(steps)) and steps[-1] == 60
  assert [row["_step"] for row in second["history"]] == [50, 60]  # 30 and 40 were sent before
  logged = {row["_step"]: row for s in (first, second) for row in s["history"]}
  records = _records(workdir)
  assert [r["step"] for r in records if r["split"] == "train"] == [10, 20, 30, 40, 50, 60]
  for r in records:
    for k, v in r.items():
      if k not in ("step", "split"):
        assert logged[r["step"]][f"{r['split']}/{k}"] == v, (r["step"], k)
  assert logged[20]["grad/conv0/kernel/_type"] == "histogram"
  assert sum(logged[20]["param/conv0/kernel/values"]) == 4 * 1 * 5  # the tiny conv0 kernel


@pytest.mark.parametrize("field, value, message", [
    ("writers", ("tensorboard",), "leaves out 'jsonl'"),
    ("writers", ("jsonl", "mlflow"), "expected distinct names of ['jsonl', 'tensorboard', "
     "'wandb']"),
    ("histograms_every", -1, "logging.histograms_every=-1; expected 0 (off)"),
    ("wandb.mode", "cloud", "logging.wandb.mode='cloud'; expected one of ['offline', 'online']"),
    ("wandb.project", "my project", "logging.wandb.project='my project'"),
    ("wandb.tags", ("a",), "logging.wandb.tags=('a',) is set but logging.writers=('jsonl', "
     "'tensorboard') has no 'wandb'"),
])
def test_bad_logging_fields_are_one_line(field, value, message):
  c = config_lib.base()
  config_lib.set_field(c, f"logging.{field}", value)
  with pytest.raises(ConfigError) as e:
    config_lib.validate(c)
  assert message in str(e.value) and "\n" not in str(e.value)


def test_histograms_with_nowhere_to_go_are_refused():
  c = config_lib.base()
  c.logging.writers, c.logging.histograms_every = ("jsonl",), 10
  with pytest.raises(ConfigError, match="metrics.jsonl holds no histograms"):
    config_lib.validate(c)


def test_without_wandb_installed_the_writer_is_refused_in_one_line(monkeypatch):
  import builtins

  real = builtins.__import__

  def no_wandb(name, *args, **kwargs):
    if name == "wandb":
      raise ImportError("No module named 'wandb'")
    return real(name, *args, **kwargs)
  monkeypatch.setattr(builtins, "__import__", no_wandb)
  c = config_lib.base()
  c.logging.writers = ("jsonl", "wandb")
  with pytest.raises(ConfigError, match=r"pip install -e '\.\[wandb\]'"):
    writers.check(c.logging)


def test_a_generative_runs_sample_grids_reach_tensorboard_and_wandb(data_dir, tmp_path):
  pytest.importorskip("tensorboardX")
  pytest.importorskip("wandb")
  from tests.train import wandb_records

  c = load_experiment("digits_dcgan", "tiny", data_dir)
  c.logging.writers = ("jsonl", "tensorboard", "wandb")
  workdir = str(tmp_path / "gan")
  loop.train_and_evaluate(c, workdir)
  grids = sorted(glob.glob(os.path.join(workdir, "samples", "step_*.png")))
  images = [(e.step, v.image) for e in _events(workdir) for v in e.summary.value
            if v.HasField("image")]
  assert grids and [f"step_{s:08d}.png" for s, _ in images] == [os.path.basename(p)
                                                                 for p in grids]
  for (_, image), path in zip(images, grids):
    png = open(path, "rb").read()
    assert image.encoded_image_string == png
    from PIL import Image

    with Image.open(path) as im:
      assert (image.width, image.height, image.colorspace) == (*im.size, len(im.getbands()))
  (segment,) = wandb_records.segments(workdir)
  logged = [row for row in segment["history"] if "samples/_type" in row]
  assert [row["_step"] for row in logged] == [s for s, _ in images]
  assert logged[0]["samples/_type"] == "image-file"


def test_a_wandb_run_that_cannot_start_is_one_line(data_dir, tmp_path, monkeypatch):
  pytest.importorskip("wandb")
  monkeypatch.setenv("WANDB_API_KEY", "")
  monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))  # no saved login
  c = _config(data_dir, steps=10, writers=("jsonl", "wandb"), **{"wandb.mode": "online"})
  with pytest.raises(ConfigError) as e:
    loop.train_and_evaluate(c, str(tmp_path / "run"))
  assert "W&B could not start run" in str(e.value) and "mode 'offline'" in str(e.value)
  assert "\n" not in str(e.value)
