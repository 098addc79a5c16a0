"""Documentation generated from code stays in step with it."""

from __future__ import annotations

from pathlib import Path

from trainlab.recipe.reference import SECTIONS, render_reference
from trainlab.recipe.schema import Recipe

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_recipe_reference_is_current():
    """Regenerate with: trainlab schema --markdown > docs/recipe.md"""
    assert (DOCS / "recipe.md").read_text() == render_reference()


def test_reference_covers_every_recipe_section():
    rendered = render_reference()
    for key in Recipe.model_fields:
        assert f"| `{key}` |" in rendered
    assert len(SECTIONS) >= 15 and "## optimizer.lr_find" in rendered and "## schedule.warmup" in rendered
