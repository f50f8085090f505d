"""`data.source = "folder:PATH"`: your own images, one subfolder per class, without writing a
TFDS builder (TFDS's `ImageFolder`, Keras' `image_dataset_from_directory`).

    PATH/cat/001.jpg, PATH/cat/002.png, ..., PATH/dog/...   -> classes ["cat", "dog"]

Files ending in .jpg, .jpeg, .png, .bmp, .gif or .webp are images (other files are left out).
A stratified held-out split: `data.builder_config.test_fraction` of each class (default 0.2,
at least one image of a class with two or more) goes to "test", drawn with
`data.builder_config.split_seed` (default 0); the rest is "train". The images are checked
(every one decoded), stored as they are when JPEG or PNG in RGB and as PNG otherwise, in an
offline TFDS build under data_dir (`strata_folder/<hash>/`), which later runs reuse: the hash
is of the folder's path, its files' names, sizes and modification times and the split
arguments, so a changed folder is prepared again (a later run reads only the listing: the
images' size is kept beside the build). The image feature has the images' size when
they share one, else no fixed size: then `data.image` ops (`decode`, a resize) bring them to
one. Fingerprinted in lineage like every source (the prepared files' bytes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import sys
from typing import Any, Callable, Iterator

import numpy as np
import tensorflow_datasets as tfds

from data.offline import OfflineBuilder

PREFIX = "folder:"
SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
DEFAULTS = {"test_fraction": 0.2, "split_seed": 0}


class FolderError(ValueError):
  """A folder that cannot be a dataset (`data.sources` raises it as a DataError)."""


@dataclasses.dataclass
class FolderConfig(tfds.core.BuilderConfig):
  """The folder, its class names, its images (path, class index) and the split arguments."""

  path: str = ""
  classes: tuple[str, ...] = ()
  files: tuple[tuple[str, int], ...] = ()
  args: dict[str, Any] = dataclasses.field(default_factory=dict)
  cache: str = ""  # a JSON file for what `_info` needs, so later runs read no image (`cached`)


def cached(path: str, compute: Callable[[], Any]) -> Any:
  """`compute()`, kept in the JSON file `path` ("" = not kept) for later runs. The file is named
  after the build's config hash, so it describes the same files."""
  if path and os.path.exists(path):
    try:
      with open(path) as f:
        return json.load(f)
    except ValueError:  # torn by a killed run: computed again
      pass
  value = compute()
  if path:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
      json.dump(value, f)
    os.replace(path + ".tmp", path)
  return value


def _source(path: str) -> str:
  return f"data.source={PREFIX + path!r}"


def check_split_args(overrides: dict[str, Any] | None) -> dict[str, Any]:
  """`DEFAULTS` with `data.builder_config`'s `overrides`, checked.

  Raises:
    FolderError: an unknown argument or a bad value, naming the field.
  """
  args = {**DEFAULTS, **dict(overrides or {})}
  unknown = sorted(set(args) - set(DEFAULTS))
  if unknown:
    raise FolderError(f"data.builder_config: unknown argument(s) {unknown} of a folder or table "
                      f"source; expected some of {sorted(DEFAULTS)}")
  if not isinstance(args["test_fraction"], float) or not 0 < args["test_fraction"] < 1:
    raise FolderError(f"data.builder_config.test_fraction={args['test_fraction']!r}; expected a "
                      "fraction in (0, 1)")
  if not isinstance(args["split_seed"], int) or isinstance(args["split_seed"], bool):
    raise FolderError(f"data.builder_config.split_seed={args['split_seed']!r}; expected an "
                      "integer")
  return args


def folder_config(path: str, overrides: dict[str, Any] | None = None) -> FolderConfig:
  """The config of folder `path` (listed, not read) with `data.builder_config` `overrides`.

  Raises:
    FolderError: no such folder, fewer than two class folders, a class folder without images,
      a bad split argument; naming the folder or the field.
  """
  args = check_split_args(overrides)
  root = os.path.abspath(os.path.expanduser(path))
  if not os.path.isdir(root):
    raise FolderError(f"{_source(path)}: {root} is not a folder; expected a folder with one "
                      "subfolder of images per class")
  classes = sorted(d for d in os.listdir(root)
                   if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
  if len(classes) < 2:
    raise FolderError(f"{_source(path)}: {root} has {len(classes)} class folder(s) {classes}; "
                      "expected one subfolder of images per class, at least two")
  files, listing = [], hashlib.sha256()
  for label, name in enumerate(classes):
    folder = os.path.join(root, name)
    images = sorted(f for f in os.listdir(folder) if f.lower().endswith(SUFFIXES)
                    and os.path.isfile(os.path.join(folder, f)))
    if not images:
      raise FolderError(f"{_source(path)}: class folder {folder} holds no images; expected "
                        f"files ending in {', '.join(SUFFIXES)}")
    for f in images:
      stat = os.stat(os.path.join(folder, f))
      listing.update(f"{name}/{f}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
      files.append((os.path.join(name, f), label))
  key = json.dumps({"path": root, "listing": listing.hexdigest(), "args": args}, sort_keys=True)
  return FolderConfig(name=hashlib.sha256(key.encode()).hexdigest()[:16],
                      description=f"The images of {root}.", path=root, classes=tuple(classes),
                      files=tuple(files), args=args)


def _image(path: str) -> bytes:
  """The image file's bytes as stored (JPEG or PNG in RGB; anything else converted to RGB and
  PNG), every pixel decoded once to check it."""
  from PIL import Image

  with open(path, "rb") as f:
    data = f.read()
  try:
    with Image.open(io.BytesIO(data)) as im:
      im.load()
      if im.format in ("JPEG", "PNG") and im.mode == "RGB":
        return data
      out = io.BytesIO()
      im.convert("RGB").save(out, "PNG")
      return out.getvalue()
  except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
    raise FolderError(f"image {path} cannot be read: {type(e).__name__}: "
                      f"{str(e).splitlines()[0][:160] if str(e) else 'no detail'}; expected an "
                      "image file (remove or replace it)") from None


def held_out(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
  """A bool mask of the held-out examples: `fraction` of each class (rounded, at least one of a
  class with two or more, never all of one), drawn with `seed`."""
  rng = np.random.default_rng(seed)
  mask = np.zeros(len(labels), bool)
  for c in np.unique(labels):
    index = np.flatnonzero(labels == c)
    n = min(max(int(round(fraction * len(index))), 1 if len(index) > 1 else 0), len(index) - 1)
    mask[rng.permutation(index)[:n]] = True
  return mask


class StrataFolder(OfflineBuilder):
  """The images of one folder (module docstring); built with a `folder_config`."""

  BUILDER_CONFIGS: list[FolderConfig] = []

  def _shape(self) -> tuple[int | None, int | None, int]:
    """(height, width, 3) when every image has that size, else (None, None, 3)."""
    def scan() -> list[int | None]:  # the headers only: PIL opens lazily
      from PIL import Image

      sizes = set()
      for rel, _ in self.builder_config.files:
        try:
          with Image.open(os.path.join(self.builder_config.path, rel)) as im:
            sizes.add((im.height, im.width))
        except Exception:
          sizes.add(None)  # unreadable: preparing names it
      return ([*next(iter(sizes)), 3] if len(sizes) == 1 and None not in sizes
              else [None, None, 3])
    return tuple(cached(self.builder_config.cache, lambda: {"shape": scan()})["shape"])

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.builder_config.description,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=self._shape()),
            "label": tfds.features.ClassLabel(names=list(self.builder_config.classes)),
            "file": tfds.features.Text(),
        }),
        disable_shuffling=True,  # split index i is example i; the pipeline shuffles
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    c = self.builder_config
    labels = np.asarray([label for _, label in c.files])
    test = held_out(labels, c.args["test_fraction"], c.args["split_seed"])
    print(f"preparing {len(labels)} images of {len(c.classes)} classes from {c.path}",
          file=sys.stderr, flush=True)
    return {"train": self._generate_examples(np.flatnonzero(~test)),
            "test": self._generate_examples(np.flatnonzero(test))}

  def _generate_examples(self, index: np.ndarray) -> Iterator[tuple[int, dict[str, Any]]]:
    c = self.builder_config
    for i, k in enumerate(index):
      rel, label = c.files[k]
      yield i, {"image": io.BytesIO(_image(os.path.join(c.path, rel))), "label": label,
                "file": rel}

  def builder_arguments(self) -> dict[str, Any]:
    """What determines this build (part of the dataset fingerprint)."""
    c = self.builder_config
    return {"name": self.name, "version": str(self.version), "folder": c.path,
            "config": c.name, "classes": list(c.classes), **c.args}
