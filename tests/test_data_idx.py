"""IDX files: parsing (gzipped or not, every type code), the problems that name the file, and the
in-memory image pipeline they feed (splits, transforms, Normalize: dataset, the preprocessor)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import trainlab
from trainlab.data import build_data
from trainlab.data.idx import read_idx, write_idx
from trainlab.recipe import RecipeError, TrainlabError, recipe_from_data

FASHION = Path("/usr/share/datasets/fashion-mnist")


def write_set(folder, count=40, classes=4, size=10, seed=0, prefix="train", compress=True):
    """``<prefix>-images`` (N, size, size) uint8 and ``<prefix>-labels`` (N,) uint8 IDX files."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    images = rng.integers(0, 256, (count, size, size), dtype=np.uint8)
    labels = (np.arange(count) % classes).astype(np.uint8)
    write_idx(folder / f"{prefix}-images{suffix}", images)
    write_idx(folder / f"{prefix}-labels{suffix}", labels)
    return images, labels


def idx_data(folder, **data):
    return {"source": "idx", "path": str(folder), "train_images": "train-images.gz", "train_labels": "train-labels.gz",
            "batch_size": 8, **data}


def idx_config(folder, **data):
    return recipe_from_data({"name": "d", "data": idx_data(folder, **data), "model": {"name": "MLP"}}).recipe.data


def idx_recipe(folder, **data):
    return {"name": "idx", "data": idx_data(folder, **data), "model": {"name": "MLP", "hidden": [8]},
            "train": {"epochs": 1, "device": "cpu", "precision": "32"},
            "log": {"tensorboard": False, "plots": False, "progress": "none"}}


@pytest.mark.parametrize("dtype", ["uint8", "int8", ">i2", ">i4", ">f4", ">f8"])
@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip_of_every_type_gzipped_or_not(tmp_path, dtype, compress):
    values = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    if dtype == "uint8":
        values = values + 7
    path = write_idx(tmp_path / "values.idx", values, compress=compress)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress  # no .gz suffix: found by the magic bytes
    read = read_idx(path)
    assert read.shape == (2, 3, 5) and read.dtype == torch.from_numpy(values.astype(values.dtype.newbyteorder("="))).dtype
    assert np.array_equal(read.numpy(), values)


def test_the_header_is_big_endian_as_published(tmp_path):
    raw = bytes([0, 0, 0x08, 1]) + (3).to_bytes(4, "big") + bytes([5, 6, 7])
    (tmp_path / "plain").write_bytes(raw)
    (tmp_path / "zipped.gz").write_bytes(gzip.compress(raw))
    assert read_idx(tmp_path / "plain").tolist() == [5, 6, 7] == read_idx(tmp_path / "zipped.gz").tolist()


def test_file_problems_name_the_file_and_the_recipe_key(tmp_path):
    write_set(tmp_path)
    found = _problems(idx_recipe(tmp_path, train_labels="nope.gz"))
    assert f"the file {tmp_path / 'nope.gz'} does not exist" in found["data.train_labels"]

    (tmp_path / "bad-magic").write_bytes(b"\x01\x02\x08\x01" + bytes(8))
    with pytest.raises(TrainlabError, match="bad-magic: not an IDX file: it starts with 01 02 08 01"):
        build_data(idx_config(tmp_path, train_images="bad-magic"), seed=0)

    whole = gzip.decompress((tmp_path / "train-images.gz").read_bytes())
    (tmp_path / "short").write_bytes(whole[:-5])
    with pytest.raises(TrainlabError) as caught:
        build_data(idx_config(tmp_path, train_images="short"), seed=0)
    assert caught.value.problems[0].path == "data.train_images"
    assert "short: truncated: a 40x10x10 array of uint8 needs 4,000 bytes of data, the file has 3,995" in str(caught.value)

    write_set(tmp_path / "other", count=30)
    with pytest.raises(TrainlabError, match="holds 30 labels but data.train_images holds 40 images"):
        build_data(idx_config(tmp_path, train_labels=str(tmp_path / "other" / "train-labels.gz")), seed=0)

    with pytest.raises(TrainlabError) as caught:
        build_data(idx_config(tmp_path, class_names=["a", "b", "c"]), seed=0)
    assert "holds label 3, outside the classes" in str(caught.value) and "add the missing names" in str(caught.value)

    with pytest.raises(TrainlabError, match="expected images \\(N, H, W\\) of unsigned bytes, found a 40 array"):
        build_data(idx_config(tmp_path, train_images="train-labels.gz"), seed=0)


def _problems(recipe):
    with pytest.raises(RecipeError) as caught:
        trainlab.check(recipe)
    return {problem.path: problem.render() for problem in caught.value.problems}


def test_idx_bundle_splits_names_classes_and_uses_the_test_files(tmp_path):
    images, _ = write_set(tmp_path)
    bundle = build_data(idx_config(tmp_path, split={"valid": 0.25, "test": 0.25}), seed=3)
    assert bundle.spec.class_names == ["0", "1", "2", "3"] and bundle.spec.input_shape == (1, 10, 10)
    assert bundle.spec.num_samples == {"train": 20, "valid": 10, "test": 10}
    assert sorted(torch.bincount(bundle.valid.targets).tolist()) == [2, 2, 3, 3]  # stratified: 10 of 4 x 10
    assert bundle.train.inputs.dtype == torch.uint8 and bundle.preprocessor.mode == "L"
    rows = {bytes(row) for row in images.reshape(40, -1)}
    assert all(bytes(row.numpy()) in rows for row in bundle.valid.inputs.reshape(10, -1))

    write_set(tmp_path, count=12, seed=9, prefix="test", compress=False)
    config = idx_config(tmp_path, test_images="test-images", test_labels="test-labels", split={"valid": 0.25},
                        class_names=["t", "u", "v", "w"])
    bundle = build_data(config, seed=3)
    assert bundle.spec.num_samples == {"train": 30, "valid": 10, "test": 12}
    assert bundle.spec.class_names == ["t", "u", "v", "w"]
    assert bundle.config.test_images == str(tmp_path / "test-images")
    x, y = next(iter(bundle.test))
    assert torch.equal(y, torch.arange(12) % 4) and x.shape == (12, 1, 10, 10)  # eval batches: 4 x batch_size


def test_transforms_normalize_dataset_augmentation_and_the_preprocessor(tmp_path):
    images, _ = write_set(tmp_path, count=24, classes=3, size=12)
    config = idx_config(tmp_path, split={"valid": 0.25}, transforms={
        "train": [{"Resize": [8, 8]}, {"RandomCrop": {"size": 8, "padding": 1}}, "RandomHorizontalFlip", "ToTensor",
                  {"Normalize": "dataset"}],
        "eval": [{"Resize": [8, 8]}, "ToTensor", {"Normalize": "dataset"}]})
    bundle = build_data(config, seed=0)
    assert bundle.train.inputs.shape == (18, 1, 8, 8) and bundle.train.transform.vectorised
    pixels = bundle.train.inputs.double() / 255
    mean, std = bundle.spec.normalization["mean"][0], bundle.spec.normalization["std"][0]
    assert mean == pytest.approx(pixels.mean().item(), abs=1e-6) and std == pytest.approx(pixels.std(unbiased=False).item(), abs=1e-6)
    assert bundle.config.transforms.eval[-1] == {"Normalize": {"mean": [mean], "std": [std]}}
    epoch0 = [x for x, _ in bundle.train]
    bundle.train.set_epoch(0)
    assert all(torch.equal(a, b) for a, b in zip(epoch0, (x for x, _ in bundle.train)))
    bundle.preprocessor.save(tmp_path / "pre")
    loaded = type(bundle.preprocessor).load(tmp_path / "pre")
    split_images = [Image.fromarray(images[i]) for i in _valid_rows(bundle, images)]  # the valid split, in order
    assert len(split_images) == len(bundle.valid.targets) == 6
    served = torch.cat([x for x, _ in bundle.valid])
    assert torch.equal(loaded.encode(split_images), served)


def _valid_rows(bundle, images):
    """Positions in the file of the valid split's images (found by the Resize they went through)."""
    from trainlab.data.transforms import Step, apply_steps

    resized = apply_steps([Step("Resize", {"size": [8, 8]})], torch.from_numpy(images).unsqueeze(1))
    return [int(next(i for i in range(len(resized)) if torch.equal(resized[i], row))) for row in bundle.valid.inputs]


@pytest.mark.skipif(not FASHION.is_dir(), reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
def test_the_real_fashion_mnist_files_parse():
    train = read_idx(FASHION / "train-images-idx3-ubyte.gz")
    test_labels = read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")
    assert train.shape == (60000, 28, 28) and train.dtype == torch.uint8
    assert test_labels.shape == (10000,) and test_labels.max() == 9
    assert read_idx(FASHION / "train-labels-idx1-ubyte.gz").shape == (60000,)
    assert read_idx(FASHION / "t10k-images-idx3-ubyte.gz").shape == (10000, 28, 28)
