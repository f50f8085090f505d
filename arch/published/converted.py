"""What a converter gives: the model's config fields, its variables and the links between them."""

from __future__ import annotations

import dataclasses
from typing import Any

from arch.published.links import Link


@dataclasses.dataclass
class Converted:
  """`model`: `config.model` fields (`name` included) of the strata model the checkpoint fits;
  `variables`: {"params": tree, "batch_stats": tree (BatchNorm models)}, NumPy arrays;
  `links`: the name map, which also exports the variables back (`links.from_strata`);
  `input_shape`: one example's (H, W, C) the checkpoint was made for, where it says."""

  model: dict[str, Any]
  variables: dict[str, Any]
  links: list[Link]
  input_shape: tuple[int, ...] = ()
