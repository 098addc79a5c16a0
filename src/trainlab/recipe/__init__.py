"""The recipe: schema, YAML loading with line numbers, overrides and error reporting.

Imports no torch, so `trainlab validate` and `trainlab schema` start quickly.
"""

from trainlab.recipe.errors import Problem, RecipeError, TrainlabError
from trainlab.recipe.loader import LoadedRecipe, load_recipe, recipe_from_data
from trainlab.recipe.schema import Recipe

__all__ = ["LoadedRecipe", "Problem", "Recipe", "RecipeError", "TrainlabError", "load_recipe", "recipe_from_data"]
