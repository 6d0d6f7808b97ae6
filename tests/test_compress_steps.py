"""The one table of recipe step kinds (compress/steps.py): every kind it lists loads from a recipe's YAML
and is run by the pipeline through the table; a kind it does not list is refused by name. Fast: no
step does real work here."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
from conftest import tiny_model

from compress import pipeline
from compress.recipe import load_recipe
from compress.steps import STEP_KINDS, StepKind
from lite.errors import ConfigError


def test_every_kind_has_options_a_function_and_a_description():
    assert list(STEP_KINDS) == ["structured", "magnitude", "quant_report", "finetune"]
    for kind, entry in STEP_KINDS.items():
        assert isinstance(entry, StepKind), kind
        assert dataclasses.is_dataclass(entry.options), kind
        entry.options()  # the defaults are a valid step
        assert list(inspect.signature(entry.run).parameters) == ["ctx", "model", "step"], kind
        assert entry.description and "\n" not in entry.description, kind
        assert all(ok for ok, _, _ in entry.checks(entry.options())), kind


def test_every_kind_loads_from_yaml(tmp_path: Path):
    recipe_path = tmp_path / "all.yaml"
    recipe_path.write_text("steps:\n" + "".join(f"  - {kind}: {{}}\n" for kind in STEP_KINDS))
    recipe = load_recipe(recipe_path)
    assert [kind for kind, _ in recipe.steps] == list(STEP_KINDS)
    for kind, options in recipe.steps:
        assert type(options) is STEP_KINDS[kind].options
        assert options == STEP_KINDS[kind].options()
    assert all(kind in recipe.spec() for kind in STEP_KINDS)


def test_an_unknown_kind_is_refused_with_the_known_ones(tmp_path: Path):
    recipe_path = tmp_path / "bad.yaml"
    recipe_path.write_text("steps:\n  - prune: {}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.steps\[0\]: expected one of (.*) as the only key") as err:
        load_recipe(recipe_path)
    assert all(kind in str(err.value) for kind in STEP_KINDS)


def test_a_kinds_checks_name_the_step_and_field(tmp_path: Path):
    recipe_path = tmp_path / "bad.yaml"
    recipe_path.write_text("steps:\n  - finetune: {}\n  - structured: {importance: random}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: steps\[1\].structured.importance must be magnitude or taylor"):
        load_recipe(recipe_path)


def test_a_dataclass_check_names_the_step(tmp_path: Path):
    recipe_path = tmp_path / "bad.yaml"
    recipe_path.write_text("steps:\n  - quant_report: {threshold: -1}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.steps\[0\].quant_report: threshold: expected a non-negative"):
        load_recipe(recipe_path)


@pytest.mark.parametrize("kind", list(STEP_KINDS))
def test_the_pipeline_runs_every_kind_through_the_table(kind: str, monkeypatch):
    calls = []

    def fake_run(ctx, model, step):
        calls.append((ctx, step))
        return model, {"ran": kind}

    monkeypatch.setitem(STEP_KINDS, kind, dataclasses.replace(STEP_KINDS[kind], run=fake_run))
    ctx, step, model = object(), STEP_KINDS[kind].options(), tiny_model()
    model.train()
    after, info = pipeline._run_step(ctx, kind, step, model)
    assert calls == [(ctx, step)] and after is model and not model.training
    assert info["ran"] == kind and info["kind"] == kind
    assert set(info) == {"ran", "kind", "seconds", "params", "params_no_embed"}
