"""Built-in sources that need no files: scikit-learn's digits and seeded synthetic tensors."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trainlab.data.loaders import bundle_from_tensors
from trainlab.data.spec import DataBundle, DataSpec
from trainlab.data.splits import held_valid, split_tensors
from trainlab.recipe.schema import DigitsData, SyntheticData

DIGIT_NAMES = [str(digit) for digit in range(10)]


def digits_spec(config: DigitsData, seed: int) -> DataSpec:
    """The digits' shape without loading them: 10 classes of 1xHxW images."""
    height, width = config.resize or (8, 8)
    return DataSpec(
        task="classification",
        input_shape=(1, height, width),
        num_classes=10,
        class_names=list(DIGIT_NAMES),
    )


def load_digits(config: DigitsData, seed: int) -> DataBundle:
    """scikit-learn's 1,797 8x8 digits as float images in [0, 1], split, optionally resized
    once (bilinear) and standardised with the training split's mean and std."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    images = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0  # (N, 1, 8, 8), values 0..16 -> [0, 1]
    labels = torch.from_numpy(digits.target).long()  # (N,)
    if config.resize:
        images = F.interpolate(images, size=tuple(config.resize), mode="bilinear", align_corners=False)
    notes: list[str] = []
    splits = split_tensors(images, labels, held_valid(config, notes, 'images'), config.split.test, seed,
                           stratify=True)
    spec = digits_spec(config, seed)
    if config.normalize:
        train_images = splits["train"][0]
        mean, std = train_images.mean().item(), train_images.std().item()
        splits = {name: ((x - mean) / std, y) for name, (x, y) in splits.items()}
        spec.normalization = {"mean": [mean], "std": [std]}
    return bundle_from_tensors(config, spec, splits, seed, notes=notes)


def synthetic_spec(config: SyntheticData, seed: int) -> DataSpec:
    shape = tuple(config.shape)
    if config.task == "regression":
        return DataSpec("regression", shape, target_shape=(config.num_targets,), vocab_size=config.vocab_size,
                        input_dtype=torch.int64 if config.vocab_size else torch.float32)
    return DataSpec(
        task=config.task,
        input_shape=shape,
        num_classes=config.num_classes,
        class_names=[f"class_{index}" for index in range(config.num_classes)],
        target_shape=(config.target_length,) if config.task == "sequence" else (),
        input_dtype=torch.int64 if config.vocab_size else torch.float32,
        vocab_size=config.vocab_size,
    )


def load_synthetic(config: SyntheticData, seed: int) -> DataBundle:
    """Inputs ~ N(0, 1) (or uniform token ids), labelled by a fixed random linear teacher plus
    noise, so a model can learn them; everything drawn from one generator seeded by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    count, shape = config.num_samples, tuple(config.shape)
    if config.vocab_size:
        inputs = torch.randint(0, config.vocab_size, (count, *shape), generator=generator)
        # features of the teacher: a random embedding of each token, summed over positions
        table = torch.randn(config.vocab_size, 8, generator=generator)
        features = table[inputs].reshape(count, -1, 8).sum(dim=1)  # (N, 8)
    else:
        inputs = torch.randn(count, *shape, generator=generator)
        features = inputs.reshape(count, -1)  # (N, F)
    width = features.shape[1]
    if config.task == "classification":
        teacher = torch.randn(width, config.num_classes, generator=generator) / math.sqrt(width)
        scores = features @ teacher + config.noise * torch.randn(count, config.num_classes, generator=generator)
        targets = scores.argmax(dim=1)  # (N,)
    elif config.task == "regression":
        teacher = torch.randn(width, config.num_targets, generator=generator) / math.sqrt(width)
        targets = features @ teacher + config.noise * torch.randn(count, config.num_targets, generator=generator)
    else:  # sequence: label ids 1..C-1 (0 is the CTC blank), a function of the inputs
        teacher = torch.randn(width, config.target_length, generator=generator)
        raw = (features @ teacher).abs() * 3
        targets = 1 + raw.long() % (config.num_classes - 1)  # (N, S)
    spec = synthetic_spec(config, seed)
    stratify = config.task == "classification"
    notes: list[str] = []
    splits = split_tensors(inputs, targets, held_valid(config, notes), config.split.test, seed, stratify=stratify)
    return bundle_from_tensors(config, spec, splits, seed, notes=notes)
