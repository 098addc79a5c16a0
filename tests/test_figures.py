"""Evaluation figures: valid, non-blank PNGs, the right set per task, readable with many classes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from matplotlib import image as mpimg

from trainlab.evaluate.figures import (
    MAX_TICKS,
    mistake_title,
    most_confident_mistakes,
    plot_confusion,
    plot_f1,
    plot_wrong,
    tick_positions,
    write_figures,
)
from trainlab.evaluate.metrics import compute_metrics
from trainlab.evaluate.predictions import Predictions

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def classified(num_samples: int, num_classes: int, images: bool = False, seed: int = 0) -> Predictions:
    """Seeded predictions better than chance, with some mistakes; (N, 3, 8, 8) images when asked."""
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, num_classes, (num_samples,), generator=generator)  # (N,)
    logits = torch.randn(num_samples, num_classes, generator=generator)  # (N, C)
    logits[torch.arange(num_samples), targets] += 1.0
    probabilities = logits.softmax(dim=1)
    pictures = torch.rand(num_samples, 3, 8, 8, generator=generator) if images else None
    names = [f"class {i}" for i in range(num_classes)]
    return Predictions("classification", targets, probabilities.argmax(dim=1), probabilities, names, images=pictures)


def assert_picture(path: Path) -> None:
    """A PNG file holding a drawing, not a blank canvas."""
    assert path.read_bytes()[:8] == PNG_MAGIC
    pixels = mpimg.imread(path)[..., :3]  # (H, W, 3) floats in [0, 1]
    assert pixels.std() > 0.02 and pixels.min() < 0.5


def test_classification_writes_every_figure(tmp_path):
    pred = classified(60, 3, images=True)
    written = write_figures(pred, compute_metrics(pred), tmp_path, "valid")
    assert set(written) == {"confusion", "confusion_normalized", "roc", "pr", "f1", "wrong"}
    for kind, path in written.items():
        assert path == tmp_path / f"valid_{kind}.png"
        assert_picture(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"valid_{kind}.png" for kind in written)


def test_binary_without_images_has_no_mistake_grid(tmp_path):
    pred = classified(40, 2, seed=1)
    written = write_figures(pred, compute_metrics(pred), tmp_path, "test")
    assert set(written) == {"confusion", "confusion_normalized", "roc", "pr", "f1"}
    assert_picture(written["roc"])


def test_only_figures_of_computed_metrics_are_written(tmp_path):
    pred = classified(40, 3, seed=2)
    written = write_figures(pred, compute_metrics(pred, ["accuracy", "f1"]), tmp_path, "valid")
    assert set(written) == {"f1"}


@pytest.mark.parametrize("outputs", [1, 6])
def test_regression_writes_residuals_only(tmp_path, outputs):
    generator = torch.Generator().manual_seed(3)
    targets = torch.randn(50, outputs, generator=generator)  # (N, k)
    pred = Predictions("regression", targets, targets + 0.2 * torch.randn(50, outputs, generator=generator))
    written = write_figures(pred, compute_metrics(pred), tmp_path, "test")
    assert set(written) == {"residuals"}
    assert written["residuals"].name == "test_residuals.png"
    assert_picture(written["residuals"])


def test_most_confident_mistakes_come_first():
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    predicted = torch.tensor([1, 1, 0, 2, 0, 2])  # wrong at 0, 2, 3, 4
    probabilities = torch.tensor([
        [0.30, 0.60, 0.10],  # wrong, p=0.60
        [0.00, 1.00, 0.00],  # right: never chosen, however confident
        [0.90, 0.05, 0.05],  # wrong, p=0.90
        [0.20, 0.10, 0.70],  # wrong, p=0.70
        [0.50, 0.40, 0.10],  # wrong, p=0.50
        [0.10, 0.10, 0.80],  # right
    ])
    pred = Predictions("classification", targets, predicted, probabilities, ["a", "b", "c"])
    assert most_confident_mistakes(pred, count=16) == [2, 3, 0, 4]
    assert most_confident_mistakes(pred, count=2) == [2, 3]
    assert mistake_title(pred, 2) == "c → a (p=0.90)"
    pred.probabilities = None
    assert most_confident_mistakes(pred, count=3) == [0, 2, 3]  # data order without probabilities
    assert mistake_title(pred, 0) == "a → b"
    right = Predictions("classification", targets, targets, probabilities, ["a", "b", "c"])
    assert most_confident_mistakes(right) == []


def test_mistake_grid_is_skipped_without_images_or_mistakes(tmp_path):
    pred = classified(30, 3, images=False)
    assert plot_wrong(pred, tmp_path / "wrong.png") is None
    pictured = classified(30, 3, images=True)
    pictured.predicted = pictured.targets.clone()
    assert plot_wrong(pictured, tmp_path / "wrong.png") is None
    assert list(tmp_path.iterdir()) == []


def test_many_classes_stay_readable(tmp_path):
    pred = classified(2000, 100, seed=4)
    result = compute_metrics(pred, ["f1", "confusion_matrix"])
    assert len(tick_positions(100)) <= MAX_TICKS and tick_positions(100)[0] == 0
    assert tick_positions(12) == list(range(12))
    confusion = plot_confusion(result, tmp_path / "confusion.png")
    f1 = plot_f1(result, tmp_path / "f1.png")
    for path in (confusion, f1):
        assert_picture(path)
        height, width = mpimg.imread(path).shape[:2]
        assert height <= 2000 and width <= 2000  # bounded, not growing with the class count
