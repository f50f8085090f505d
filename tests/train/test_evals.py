"""Named evaluations (`config.evals`): each at its own period, written under its name, a drifted
source normalised with the training data's statistics."""

import numpy as np
import pytest

from tests.train.test_loop import _metrics, _tiny
from train import config as config_lib
from train import loop


@pytest.mark.slow  # 18 s: three pipelines and a drifted build
def test_three_evaluations_each_at_its_own_period(data_dir, tmp_path):
  c = _tiny("mnist1d_mlp", data_dir, **{"train.steps": 12, "train.eval_every": 4,
                                        "train.log_every": 4, "train.checkpoint_every": 0})
  with c.unlocked():
    c.evals.test_again = dict(split="test", every=6, batch_size=250)
    c.evals.drifted = dict(split="test", source="mnist1d_drift")  # every=0: at the end only
  loop.train_and_evaluate(c, str(tmp_path))
  records = _metrics(str(tmp_path))
  steps = {name: [m["step"] for m in records if m["split"] == name]
           for name in ("eval", "test_again", "drifted")}
  assert steps == {"eval": [4, 8, 12], "test_again": [6, 12], "drifted": [12]}
  at = {m["split"]: m for m in records if m["step"] == 12 and m["split"] != "train"}
  # The same split with batches of 250 instead of the default: the same metrics.
  for k in ("loss", "accuracy", "count"):
    np.testing.assert_allclose(at["test_again"][k], at["eval"][k], rtol=1e-6)
  assert at["drifted"]["count"] == at["eval"]["count"]
  assert at["drifted"]["loss"] != at["eval"]["loss"]  # another source


@pytest.mark.parametrize("evals,message", [
    ({"eval": {"split": "test"}}, "evals.eval: the name 'eval' is taken"),
    ({"x": {"split": "test", "period": 3}}, r"evals.x has field\(s\) \['period'\]; expected some of"),
    ({"x": {"every": 3}}, "evals.x.split=None; expected a split name"),
    ({"x": {"split": "test", "every": -1}}, r"evals.x.every=-1; expected an integer >= 0"),
])
def test_bad_evaluations_name_the_field(evals, message):
  c = config_lib.base()
  with c.unlocked():
    for name, e in evals.items():
      c.evals[name] = e
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(c)
