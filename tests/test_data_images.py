"""Image folders: layouts, modes, bad files, transforms, caches, reproducible augmentation, TTA and the
preprocessor. Every folder is a few tiny PNGs written with PIL."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

import trainlab
from trainlab.data import build_data, load_preprocessor
from trainlab.data.images import ImagePreprocessor, show_batch, tta_loader
from trainlab.data.transforms import (
    BatchPipeline,
    Step,
    apply_steps,
    inverse_normalize,
    parse_transforms,
)
from trainlab.recipe import RecipeError, TrainlabError, recipe_from_data
from trainlab.recipe.schema import Transforms

AUGMENT = [{"RandomCrop": {"size": 12, "padding": 2}}, "RandomHorizontalFlip", "ToTensor", {"Normalize": [[0.5], [0.5]]}]


def write_image(path, mode="L", size=(12, 12), seed=0):
    """A PIL image of random pixels in ``mode``, saved as PNG at ``path``."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode in ("L", "P"):
        image = Image.fromarray(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8), "L")
    else:
        image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], len(mode)), dtype=np.uint8), mode)
    image.save(path)
    return path


def make_folder(root, classes=("cat", "dog"), count=6, mode="L", size=(12, 12), seed=0):
    """``root/<class>/<i>.png`` with distinct random pixels."""
    for position, name in enumerate(classes):
        for index in range(count):
            write_image(root / name / f"{index:02d}.png", mode, size, seed=seed + 100 * position + index)
    return root


def data_config(tmp_path, **data):
    data = {"source": "images", "batch_size": 4, "cache_dir": str(tmp_path / "cache"), **data}
    return recipe_from_data({"name": "d", "data": data, "model": {"name": "MLP"}}).recipe.data


def image_recipe(path, **data):
    return {"name": "images", "seed": 0, "data": {"source": "images", "path": str(path), "batch_size": 4, **data},
            "model": {"name": "MLP", "hidden": [8]}, "train": {"epochs": 1, "device": "cpu", "precision": "32"},
            "log": {"tensorboard": False, "plots": False, "progress": "none"}}


def problems(recipe) -> dict[str, str]:
    with pytest.raises(RecipeError) as caught:
        trainlab.check(recipe)
    return {problem.path: problem.render() for problem in caught.value.problems}


def batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def same_batches(left, right):
    return len(left) == len(right) and all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(left, right))


# ----------------------------------------------------------------------------------- layouts


def test_class_folders_are_sorted_split_stratified_and_seeded(tmp_path):
    root = make_folder(tmp_path / "pets", classes=("zebra", "ant", "cat"), count=10)
    config = data_config(tmp_path, path=str(root), split={"valid": 0.2, "test": 0.2})
    bundle = build_data(config, seed=1)
    assert bundle.spec.class_names == ["ant", "cat", "zebra"] == bundle.preprocessor.class_names
    assert bundle.spec.num_samples == {"train": 18, "valid": 6, "test": 6}
    assert bundle.spec.input_shape == (1, 12, 12) and bundle.preprocessor.mode == "L"
    assert torch.bincount(bundle.valid.targets, minlength=3).tolist() == [2, 2, 2]
    assert torch.equal(bundle.valid.inputs, build_data(config, seed=1).valid.inputs)
    assert not torch.equal(bundle.valid.inputs, build_data(config, seed=2).valid.inputs)
    assert bundle.config.path == str(root.resolve())


def test_split_folders_and_a_valid_split_held_out_of_train(tmp_path):
    root = tmp_path / "data"
    make_folder(root / "train", count=8)
    make_folder(root / "test", count=3, seed=50)
    bundle = build_data(data_config(tmp_path, path=str(root), split={"valid": 0.25}), seed=0)
    assert bundle.spec.num_samples == {"train": 12, "valid": 4, "test": 6}
    make_folder(root / "valid", count=2, seed=70)
    bundle = build_data(data_config(tmp_path, path=str(root), split={"valid": 0.25}), seed=0)
    assert bundle.spec.num_samples == {"train": 16, "valid": 4, "test": 6}
    assert bundle.valid.targets.tolist() == [0, 0, 1, 1]


def test_layout_problems_name_the_folder_and_say_how_to_fix_them(tmp_path):
    missing = problems(image_recipe(tmp_path / "nowhere"))
    assert "nowhere does not exist" in missing["data.path"] and "Check the path" in missing["data.path"]

    (tmp_path / "flat").mkdir()
    write_image(tmp_path / "flat" / "a.png")
    assert "has no class folders" in problems(image_recipe(tmp_path / "flat"))["data.path"]

    root = make_folder(tmp_path / "empty")
    (root / "emu").mkdir()
    (root / "emu" / "notes.txt").write_text("no images here")
    message = problems(image_recipe(root))["data.path"]
    assert f"class folder {root / 'emu'} holds no images" in message and "data.extensions" in message

    root = tmp_path / "split"
    make_folder(root / "train")
    make_folder(root / "valid", classes=("cat", "cow"), count=2)
    message = problems(image_recipe(root))["data.path"]
    assert f"{root / 'valid' / 'cow'} is a class that {root / 'train'} does not have" in message


def test_bad_files_fail_naming_the_file_or_are_skipped_with_a_note(tmp_path):
    root = make_folder(tmp_path / "pets", count=5)
    whole = write_image(tmp_path / "whole.png").read_bytes()
    (root / "cat" / "broken.png").write_bytes(whole[:60])  # a truncated PNG: the header reads, the pixels do not
    (root / "dog" / "text.png").write_text("not an image at all")
    (root / "dog" / "labels.csv").write_text("a,b\n")
    with pytest.raises(TrainlabError) as caught:
        build_data(data_config(tmp_path, path=str(root)), seed=0)
    text = str(caught.value)
    assert "text.png as an image" in text and "on_bad_file: skip" in text
    (root / "dog" / "text.png").unlink()
    with pytest.raises(TrainlabError, match="broken.png as an image: image file is truncated"):
        build_data(data_config(tmp_path, path=str(root)), seed=0)
    (root / "dog" / "text.png").write_text("not an image at all")
    bundle = build_data(data_config(tmp_path, path=str(root), on_bad_file="skip"), seed=0)
    assert sum(bundle.spec.num_samples.values()) == 10
    assert "skipped 2 unreadable files: cat/broken.png, dog/text.png" in bundle.notes
    assert any(note.startswith("ignored files: 1 with other suffixes (.csv: 1)") for note in bundle.notes)


def test_mixed_modes_become_one_mode_with_transparency_on_white(tmp_path):
    root = tmp_path / "mixed"
    write_image(root / "a" / "grey.png", "L")
    write_image(root / "a" / "colour.png", "RGB")
    (root / "b").mkdir()
    transparent = Image.new("RGBA", (12, 12), (255, 0, 0, 0))  # fully transparent red ...
    transparent.putpixel((0, 0), (0, 0, 255, 255))  # ... but one opaque blue pixel
    transparent.save(root / "b" / "clear.png")
    Image.new("L", (12, 12), 40).convert("RGB").quantize(colors=4).save(root / "b" / "palette.png")
    bundle = build_data(data_config(tmp_path, path=str(root), split={"valid": 0.0}), seed=0)
    assert bundle.spec.input_shape == (3, 12, 12) and bundle.preprocessor.mode == "RGB"
    assert "mode: auto -> RGB (2 of 4 images have colour)" in bundle.notes  # RGB and RGBA; the palette is grey
    clear = bundle.train.inputs[bundle.spec.class_names.index("b") * 2]  # b/clear.png, the first b file
    assert clear[:, 0, 0].tolist() == [0, 0, 255] and clear[:, 5, 5].tolist() == [255, 255, 255]

    grey = tmp_path / "grey"
    write_image(grey / "a" / "one.png", "L")
    Image.new("LA", (12, 12), (90, 255)).save(grey / "a" / "two.png")
    (grey / "b").mkdir()
    Image.new("L", (12, 12), 7).convert("P").save(grey / "b" / "three.png")
    bundle = build_data(data_config(tmp_path, path=str(grey), split={"valid": 0.0}), seed=0)
    assert bundle.spec.input_shape == (1, 12, 12) and bundle.train.inputs[2].unique().tolist() == [7]
    forced = build_data(data_config(tmp_path, path=str(grey), mode="RGBA", split={"valid": 0.0}), seed=0)
    assert forced.spec.input_shape == (4, 12, 12)
    Image.new("RGB", (12, 12), (200, 30, 30)).quantize(colors=2).save(grey / "b" / "red.png")  # a colour palette
    bundle = build_data(data_config(tmp_path, path=str(grey), split={"valid": 0.0}), seed=0)
    assert bundle.spec.input_shape == (3, 12, 12) and bundle.train.inputs[2][:, 0, 0].tolist() == [200, 30, 30]


# ----------------------------------------------------------------------------------- transforms


def test_transform_problems_are_all_located_with_did_you_mean(tmp_path):
    root = make_folder(tmp_path / "pets")
    found = problems(image_recipe(root, transforms={
        "train": ["ToTensor", {"RandomHorizontalFlp": None}, {"RandomCrop": {"size": 8, "paddin": 2}}],
        "eval": [{"Normalize": "imagenet"}, "ToTensor", {"RandomRotation": "ten"}],
    }))
    assert "Did you mean 'RandomHorizontalFlip'?" in found["data.transforms.train[1]"]
    assert "Did you mean 'padding'?" in found["data.transforms.train[2].RandomCrop.paddin"]
    assert "RandomRotation refuses these arguments" in found["data.transforms.eval[2].RandomRotation"]
    found = problems(image_recipe(root, transforms={"eval": [{"Normalize": "imagenet"}, "ToTensor"],
                                                    "train": [{"resize": [12, 12]}]}))
    assert "Put ToTensor before it" in found["data.transforms.eval[0]"]
    assert "never turns the uint8 images into floats" in found["data.transforms.train"]
    found = problems(image_recipe(root, transforms={"eval": ["RandomVerticalFlip", "ToTensor"]}))
    assert "Move it to data.transforms.train" in found["data.transforms.eval[0]"]


def test_items_take_keywords_positionals_or_one_value_and_resolve_to_canonical_names():
    train, evaluation = parse_transforms(Transforms(
        train=[{"resize": [16, 16]}, {"Pad": [2]}, {"colorjitter": [0.4, 0.3]}, {"RandomRotation": 10},
               {"RandomCrop": {"size": 16, "padding": 2, "padding_mode": "reflect"}}, "totensor"],
        eval=[{"Resize": [16, 16]}, "ToTensor", {"Normalize": [[0.5], [0.25]]}]))
    assert train.items() == [{"Resize": {"size": [16, 16]}}, {"Pad": {"padding": [2]}},
                             {"ColorJitter": {"brightness": 0.4, "contrast": 0.3}}, {"RandomRotation": {"degrees": 10}},
                             {"RandomCrop": {"size": 16, "padding": 2, "padding_mode": "reflect"}}, "ToTensor"]
    assert evaluation.normalization == {"mean": [0.5], "std": [0.25]}
    assert train.prefix_length() == 2 and evaluation.prefix_length() == 1


def test_to_tensor_is_to_image_then_to_dtype_scaled():
    image = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    ours = apply_steps([Step("ToTensor")], image)
    theirs = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])(image)
    assert ours.dtype == torch.float32 and torch.equal(ours, theirs) and ours.max() <= 1.0


def test_normalize_dataset_is_the_training_mean_and_std_written_into_the_config(tmp_path):
    root = make_folder(tmp_path / "pets", mode="RGB", size=(14, 10), count=5)
    transforms = {"train": [{"Resize": [8, 8]}, "RandomHorizontalFlip", "ToTensor", {"Normalize": "dataset"}],
                  "eval": [{"Resize": [8, 8]}, "ToTensor", {"Normalize": "dataset"}]}
    bundle = build_data(data_config(tmp_path, path=str(root), transforms=transforms, split={"valid": 0.2}), seed=0)
    pixels = apply_steps([Step("ToTensor")], bundle.train.inputs)  # the cache holds the resized uint8 images
    mean, std = pixels.double().mean(dim=(0, 2, 3)), pixels.double().std(dim=(0, 2, 3), unbiased=False)
    assert bundle.spec.normalization["mean"] == pytest.approx(mean.tolist(), abs=1e-6)
    assert bundle.spec.normalization["std"] == pytest.approx(std.tolist(), abs=1e-6)
    assert bundle.spec.normalization["preset"] == "dataset"  # recorded in data.json
    written = {"Normalize": {key: bundle.spec.normalization[key] for key in ("mean", "std")}}
    assert bundle.config.transforms.train[-1] == written and bundle.config.transforms.eval[-1] == written
    assert bundle.config.transforms.eval[0] == {"Resize": {"size": [8, 8]}}
    served = torch.cat([x for x, _ in bundle.train]).double()
    assert served.mean(dim=(0, 2, 3)).abs().max() < 1e-4  # flips do not change the statistics


def test_normalize_imagenet_on_grey_images_is_the_mean_of_the_three_channels(tmp_path):
    root = make_folder(tmp_path / "pets")
    bundle = build_data(data_config(tmp_path, path=str(root), transforms={
        "eval": ["ToTensor", {"Normalize": "imagenet"}]}), seed=0)
    assert bundle.spec.normalization == {"mean": [pytest.approx((0.485 + 0.456 + 0.406) / 3)],
                                         "std": [pytest.approx((0.229 + 0.224 + 0.225) / 3)]}


def test_train_and_eval_must_make_the_same_shape(tmp_path):
    root = make_folder(tmp_path / "pets")
    found = problems(image_recipe(root, transforms={"train": [{"RandomCrop": 8}, "ToTensor"], "eval": ["ToTensor"]}))
    assert "makes (1, 8, 8) images" in found["data.transforms.train"] and "(1, 12, 12)" in found["data.transforms.train"]


# ----------------------------------------------------------------------------------- caches


def test_cache_auto_falls_back_to_decoding_when_sizes_differ_and_memory_asks_for_a_resize(tmp_path):
    root = tmp_path / "sizes"
    for index, size in enumerate([(12, 12), (14, 11), (10, 13), (12, 12)]):
        write_image(root / ("a" if index % 2 else "b") / f"{index}.png", size=size, seed=index)
    bundle = build_data(data_config(tmp_path, path=str(root), batch_size=1, num_workers=0, split={"valid": 0.0}), seed=0)
    assert any("differ in size" in note for note in bundle.notes) and not hasattr(bundle.train, "inputs")
    with pytest.raises(TrainlabError, match="Resize to a fixed size"):
        build_data(data_config(tmp_path, path=str(root), cache="memory"), seed=0)
    resized = build_data(data_config(tmp_path, path=str(root), cache="memory", split={"valid": 0.0},
                                     transforms={"eval": [{"Resize": [9, 9]}, "ToTensor"]}), seed=0)
    assert resized.train.inputs.shape == (4, 1, 9, 9) and resized.train.inputs.dtype == torch.uint8

    large = tmp_path / "large"
    for index in range(4):  # 4 x 600 x 600 grey pixels: 1.4 MB decoded, above a 1 MB limit
        (large / "ab"[index % 2]).mkdir(parents=True, exist_ok=True)
        Image.new("L", (600, 600), 10 * index).save(large / "ab"[index % 2] / f"{index}.png")
    bundle = build_data(data_config(tmp_path, path=str(large), cache_limit_mb=1, num_workers=0,
                                    split={"valid": 0.0}), seed=0)
    assert any("need 1.4 MB, above cache_limit_mb (1 MB)" in note for note in bundle.notes)
    assert not hasattr(bundle.train, "inputs")


def test_disk_cache_is_written_once_reused_and_keyed_by_the_transforms(tmp_path):
    root = make_folder(tmp_path / "pets")
    config = data_config(tmp_path, path=str(root), cache="disk", transforms={"eval": [{"Resize": [8, 8]}, "ToTensor"]})
    first = build_data(config, seed=0)
    files = list((tmp_path / "cache").glob("*.safetensors"))
    assert len(files) == 1 and any(note.endswith(f"(disk: {files[0]})") for note in first.notes)
    stamp = files[0].stat().st_mtime_ns
    second = build_data(config, seed=0)
    assert any(note.startswith(f"reused the disk cache {files[0]}") for note in second.notes)
    assert files[0].stat().st_mtime_ns == stamp and torch.equal(first.train.inputs, second.train.inputs)
    other = data_config(tmp_path, path=str(root), cache="disk", transforms={"eval": [{"Resize": [6, 6]}, "ToTensor"]})
    assert build_data(other, seed=0).train.inputs.shape[-2:] == (6, 6)
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2
    assert not list((tmp_path / "cache").glob(".*tmp"))  # written atomically: no temporary file left


def test_memory_and_streamed_images_are_served_identically(tmp_path):
    root = make_folder(tmp_path / "pets", mode="RGB", count=5)
    transforms = {"train": [{"RandomRotation": 20}, "ToTensor", {"Normalize": "imagenet"}],
                  "eval": ["ToTensor", {"Normalize": "imagenet"}]}
    memory = build_data(data_config(tmp_path, path=str(root), cache="memory", transforms=transforms), seed=4)
    streamed = build_data(data_config(tmp_path, path=str(root), cache="none", num_workers=0, transforms=transforms),
                          seed=4)
    assert hasattr(memory.train, "inputs") and not hasattr(streamed.train, "inputs")
    assert same_batches(batches(memory.valid), batches(streamed.valid))
    for loader in (memory.train, streamed.train):
        loader.set_epoch(1)
    assert same_batches(batches(memory.train), batches(streamed.train))  # per-sample seeds: the same rotations


# ----------------------------------------------------------------------------------- reproducible augmentation


def test_vectorised_augmentation_is_seeded_per_epoch_and_leaves_the_global_rng_alone(tmp_path):
    root = make_folder(tmp_path / "pets", count=8)
    bundle = build_data(data_config(tmp_path, path=str(root), transforms={"train": AUGMENT, "eval": ["ToTensor"]}), 0)
    assert bundle.train.transform.vectorised
    torch.manual_seed(11)
    before = torch.get_rng_state()
    epoch1 = batches(bundle.train)
    assert torch.equal(torch.get_rng_state(), before)
    bundle.train.set_epoch(0)
    assert same_batches(epoch1, batches(bundle.train))
    bundle.train.set_epoch(1)
    epoch2 = batches(bundle.train)
    assert not same_batches(epoch1, epoch2)
    assert sorted(torch.cat([y for _, y in epoch1]).tolist()) == sorted(bundle.train.targets.tolist())


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "symmetric"])
def test_vectorised_random_crop_takes_crops_of_the_padded_image(mode):
    images = torch.randint(0, 256, (6, 2, 7, 9), dtype=torch.uint8)
    step = Step("RandomCrop", {"size": [7, 9], "padding": [3, 2], "padding_mode": mode, "fill": 5})
    crops = BatchPipeline([step])(images, torch.arange(6), 0, 0, 0)
    padded = F.pad(images, [3, 2], fill=5, padding_mode=mode)  # (6, 2, 11, 15)
    offsets = set()
    for image, crop in zip(padded, crops):
        found = [(y, x) for y in range(5) for x in range(7) if torch.equal(image[:, y:y + 7, x:x + 9], crop)]
        assert found, "every crop is a window of the padded image"
        offsets.add(found[0])
    assert len(offsets) > 1


def test_a_resumed_epoch_serves_the_same_remaining_batches(tmp_path):
    root = make_folder(tmp_path / "pets", count=7)
    for train in (AUGMENT, [{"RandomRotation": 30}, "ToTensor"]):  # vectorised, then per-sample
        bundle = build_data(data_config(tmp_path, path=str(root), transforms={"train": train, "eval": ["ToTensor"]}),
                            seed=2)
        bundle.train.set_epoch(3)
        whole = batches(bundle.train)
        bundle.train.load_state_dict({"epoch": 3, "position": 2, "seed": 2})
        assert same_batches(whole[2:], batches(bundle.train))


def test_streamed_batches_do_not_depend_on_the_worker_count(tmp_path):
    root = make_folder(tmp_path / "pets", count=4)
    transforms = {"train": AUGMENT, "eval": ["ToTensor"]}
    served = []
    for workers in (0, 2):
        bundle = build_data(data_config(tmp_path, path=str(root), cache="none", num_workers=workers,
                                        persistent_workers=False, transforms=transforms, split={"valid": 0.25}), seed=5)
        bundle.train.set_epoch(1)
        served.append(batches(bundle.train))
        assert f"num_workers={workers}" in " ".join(bundle.notes)
    assert same_batches(*served)


def test_show_batch_gives_augmented_images_in_0_1_and_keeps_the_position(tmp_path):
    root = make_folder(tmp_path / "pets", count=8)
    bundle = build_data(data_config(tmp_path, path=str(root), transforms={"train": AUGMENT, "eval": ["ToTensor"]}), 0)
    bundle.train.load_state_dict({"epoch": 2, "position": 1, "seed": 0})
    images, labels = show_batch(bundle, count=6)
    assert images.shape == (6, 1, 12, 12) and labels.shape == (6,)
    assert images.min() >= 0 and images.max() <= 1
    bundle.train.set_epoch(0)
    first = torch.cat([x for x, _ in bundle.train])[:6]
    assert torch.allclose(images, inverse_normalize(first, {"mean": [0.5], "std": [0.5]}))
    assert bundle.train.state_dict()["position"] == len(bundle.train)


# ----------------------------------------------------------------------------------- TTA and prediction


@pytest.mark.parametrize("mode", ["fivecrop", "tencrop", "hflip"])
def test_tta_views_equal_torchvision_crops_resized_back(tmp_path, mode):
    root = make_folder(tmp_path / "pets", mode="RGB", size=(16, 16), count=3)
    bundle = build_data(data_config(tmp_path, path=str(root), split={"valid": 0.0, "test": 0.5}), seed=0)
    loader = tta_loader(bundle, "test", mode)
    plain = batches(bundle.test)
    served = batches(loader)
    views = {"fivecrop": 5, "tencrop": 10, "hflip": 2}[mode]
    assert len(served) == len(plain) and served[0][0].shape == (len(plain[0][0]), views, 3, 16, 16)
    for (x, y), (views_x, views_y) in zip(plain, served):
        assert torch.equal(y, views_y)
        if mode == "hflip":
            expected = [x, F.horizontal_flip(x)]
        else:
            crops = F.five_crop(x, [14, 14]) if mode == "fivecrop" else F.ten_crop(x, [14, 14])  # 7/8 of 16
            expected = [F.resize(crop, [16, 16], antialias=True) for crop in crops]
        assert torch.equal(views_x, torch.stack(expected, dim=1))


def test_the_preprocessor_round_trip_encodes_like_the_eval_loader(tmp_path):
    root = make_folder(tmp_path / "pets", mode="RGB", size=(20, 14), count=3)
    transforms = {"eval": [{"Resize": [10, 10]}, "ToTensor", {"Normalize": "imagenet"}]}
    bundle = build_data(data_config(tmp_path, path=str(root), transforms=transforms, split={"valid": 0.0}), seed=0)
    bundle.preprocessor.save(tmp_path / "saved")
    assert [p.name for p in (tmp_path / "saved").iterdir()] == ["preprocessing.json"]
    loaded = load_preprocessor(tmp_path / "saved")
    assert isinstance(loaded, ImagePreprocessor) and loaded == bundle.preprocessor
    files = sorted(root.glob("*/*.png"))  # the training split in order (no shuffle of files)
    encoded = loaded.encode(files[:3] + [Image.open(path) for path in files[3:]])
    bundle.train.shuffle = False
    served = torch.cat([x for x, _ in bundle.train])
    assert encoded.shape == (6, 3, 10, 10) and torch.equal(encoded, served)


def test_train_end_to_end_on_an_image_folder_with_lenet(tmp_path):
    root = make_folder(tmp_path / "pets", size=(16, 16), count=6)
    recipe = image_recipe(root, cache_dir=str(tmp_path / "cache"), split={"valid": 0.25},
                          transforms={"train": [{"RandomCrop": {"size": 16, "padding": 2}}, "ToTensor",
                                                {"Normalize": "dataset"}],
                                      "eval": ["ToTensor", {"Normalize": "dataset"}]})
    recipe["model"] = {"name": "LeNet"}
    recipe["train"]["epochs"] = 2
    run = trainlab.train(recipe, out=tmp_path / "run")
    assert run.status == "finished" and len(run.records("valid")) == 2
    assert (tmp_path / "run" / "preprocessing" / "preprocessing.json").is_file()
    assert "mean:" in (tmp_path / "run" / "recipe.yaml").read_text()  # Normalize: dataset resolved into the run
