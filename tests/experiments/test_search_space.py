"""The search space grammar (`experiments.search_space`): what each item suggests through a real
Optuna trial, conditional and per-layer items, the grid, decoding stored parameters, and the
errors of a malformed space."""

import optuna
import pytest

from experiments import search_space
from tests.conftest import load_experiment
from train.config import ConfigError

SPACE = ("$depth=[2,3]; model.features=each($depth,[8,16]); optim.learning_rate="
         "loguniform(1e-4,1e-1); optim.name=[adam,adamw]; "
         "optim.weight_decay=uniform(0.0,0.1) if optim.name==adamw; model.dense=[(),(32,)]")


def test_each_and_conditions_follow_earlier_items():
  items = search_space.parse(SPACE)
  trial = optuna.trial.FixedTrial({"$depth": 3, "model.features[0]": 8, "model.features[1]": 16,
                                   "model.features[2]": 16, "optim.learning_rate": 3e-3,
                                   "optim.name": "adamw", "optim.weight_decay": 0.05,
                                   "model.dense": "(32,)"})
  point = search_space.suggest(items, trial)
  assert point == {"model.features": (8, 16, 16), "optim.learning_rate": 3e-3,
                   "optim.name": "adamw", "optim.weight_decay": 0.05, "model.dense": (32,)}
  # the condition fails: weight decay is not suggested, and the $variable never reaches a config
  trial = optuna.trial.FixedTrial({"$depth": 2, "model.features[0]": 16, "model.features[1]": 8,
                                   "optim.learning_rate": 1e-2, "optim.name": "adam",
                                   "model.dense": "()"})
  point = search_space.suggest(items, trial)
  assert point == {"model.features": (16, 8), "optim.learning_rate": 1e-2, "optim.name": "adam",
                   "model.dense": ()}


def test_a_study_draws_inside_the_space_and_decode_inverts_the_stored_parameters():
  items = search_space.parse(SPACE)
  study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
  points = []

  def objective(trial):
    points.append(search_space.suggest(items, trial))
    return 0.0

  study.optimize(objective, n_trials=30)
  depths = {len(p["model.features"]) for p in points}
  assert depths == {2, 3}
  assert all(set(p["model.features"]) <= {8, 16} for p in points)
  assert all(1e-4 <= p["optim.learning_rate"] <= 1e-1 for p in points)
  assert all(("optim.weight_decay" in p) == (p["optim.name"] == "adamw") for p in points)
  assert {p["model.dense"] for p in points} == {(), (32,)}  # tuples survive Optuna's storage
  for trial, point in zip(study.trials, points):
    assert search_space.decode(items, trial.params) == point


def test_grid_is_the_flat_product_and_refuses_conditional_spaces():
  items = search_space.parse("optim.learning_rate=[1e-3,1e-2]; model.features=[(8,8),(16,)]")
  assert search_space.grid(items) == {"optim.learning_rate": [1e-3, 1e-2],
                                      "model.features": ["(8, 8)", "(16,)"]}
  with pytest.raises(ConfigError, match=r"flat space of lists; \['model.features'\]"):
    search_space.grid(search_space.parse("$d=[1,2]; model.features=each($d,[8])"))
  with pytest.raises(ConfigError, match=r"\['optim.learning_rate'\] use each"):
    search_space.grid(search_space.parse("optim.learning_rate=loguniform(1e-3,1e-1)"))


def test_integer_ranges_draw_integers_between_both_ends():
  items = search_space.parse("train.steps=int(5,7); data.batch_size=logint(8,64)")
  study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
  seen = []
  study.optimize(lambda t: seen.append(search_space.suggest(items, t)) or 0.0, n_trials=40)
  assert {p["train.steps"] for p in seen} == {5, 6, 7}
  assert all(isinstance(p["data.batch_size"], int) and 8 <= p["data.batch_size"] <= 64
             for p in seen)


@pytest.mark.parametrize("spec, message", [
    ("optim.learning_rate", "expected NAME=VALUES"),
    ("optim.learning_rate=[]", "empty list"),
    ("optim.learning_rate=[1,1]", "repeats a value"),
    ("optim.learning_rate=[1];optim.learning_rate=[2]", "appears twice"),
    ("optim.learning_rate=loguniform(0,1)", "needs 0 < low"),
    ("optim.learning_rate=uniform(1,1)", "low < high"),
    ("train.steps=int(1,2.5)", "integer bounds"),
    ("optim.learning_rate=normal(0,1)", "expected a list"),
    ("model.features=each($depth,[8])", "which no earlier item defines"),
    ("$d=[2]; model.features=each(d,[8])", r"expected each\(\$variable, CHOICE\)"),
    ("$d=[2]; $e=each($d,[8])", "not a \\$variable"),
    ("$d=[-1,2]; model.features=each($d,[8])", "non-negative integers"),
    ("optim.weight_decay=[0.1] if optim.name==adamw", "no earlier item defines"),
    ("optim.name=[adam]; optim.weight_decay=[0.1] if optim.name~adam", "expected NAME==V"),
])
def test_a_malformed_space_names_the_item(spec, message):
  with pytest.raises(ConfigError, match=message):
    search_space.parse(spec)


def test_fields_are_checked_against_the_experiment():
  config = load_experiment("mnist1d_cnn", "tiny")
  search_space.check(search_space.parse("$d=[1]; optim.learning_rate=[1e-3]"), config)
  with pytest.raises(ConfigError, match="did you mean optim.learning_rate"):
    search_space.check(search_space.parse("optim.learning_rat=[1e-3]"), config)
  with pytest.raises(ConfigError, match="'seed' is the search's training seed"):
    search_space.check(search_space.parse("seed=[1,2]"), config)


@pytest.mark.parametrize("name", ["random", "tpe"])
def test_a_continued_search_proposes_what_an_uninterrupted_one_does(name, tmp_path):
  """Three continuations (a new process each: a new sampler loading the study from storage)
  propose the points of one uninterrupted search, none twice."""
  import warnings

  from experiments import search_study

  optuna.logging.set_verbosity(optuna.logging.ERROR)
  warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
  base = {"random": optuna.samplers.RandomSampler, "tpe": optuna.samplers.TPESampler}[name]
  kwargs = {} if name == "random" else {"multivariate": True, "group": True,
                                        "n_startup_trials": 3}

  def objective(trial):
    x = trial.suggest_float("optim.learning_rate", 1e-4, 1e-1, log=True)
    y = trial.suggest_float("optim.weight_decay", 0.0, 0.1)
    return (x - 3e-3) ** 2 + y

  def points(parts: list[int]) -> list[tuple[float, float]]:
    storage = f"sqlite:///{tmp_path}/{name}_{len(parts)}.db"
    for n in parts:
      study = optuna.create_study(study_name="s", storage=storage, load_if_exists=True,
                                  sampler=search_study.seeded_per_trial(base, 0, **kwargs))
      study.optimize(objective, n_trials=n)
    return [tuple(t.params.values()) for t in study.trials]

  straight, continued = points([8]), points([2, 2, 2, 2])
  assert continued == straight and len(set(continued)) == 8
  # the old behaviour, a sampler reseeded with the search's seed, repeats the first trials
  storage = f"sqlite:///{tmp_path}/old.db"
  for _ in range(2):
    study = optuna.create_study(study_name="s", storage=storage, load_if_exists=True,
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=2)
  assert len({tuple(t.params.values()) for t in study.trials}) == 2
