"""The runtime lists: one definition in services/choices.py, held equal to the agent's recipes
(the agent, standard library only, keeps its own table: images/conpaas_agent/runtimes)."""

from conpaas_agent.runtimes import PARTS, RECIPES
from services.choices import DATA_RUNTIMES, Runtime


def test_it_knows_the_runtimes_the_agent_has_recipes_for():
    assert set(Runtime.values) == set(RECIPES) - PARTS


def test_it_calls_data_runtimes_those_whose_recipe_takes_no_archive():
    assert set(DATA_RUNTIMES) == {name for name, recipe in RECIPES.items() if not recipe.archive} - PARTS
