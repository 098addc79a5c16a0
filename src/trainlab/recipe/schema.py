"""The recipe: one pydantic model per section, unknown keys forbidden.

This module is the single source of truth for the recipe format (``trainlab schema`` prints it
as JSON Schema). It imports no torch: names of torch objects and their arguments are checked by
the stage that owns them (``trainlab.pipeline.check``), against the real torch signatures.

Sections whose arguments go straight to a torch constructor (``loss``, ``optimizer``,
``schedule``, a built-in model) accept extra keys: those are the torch arguments, validated with
``inspect.signature(...).bind_partial`` before anything runs.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class Section(BaseModel):
    """A recipe section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TorchArguments(BaseModel):
    """A section whose extra keys are keyword arguments of the named torch object."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def arguments(self) -> dict[str, Any]:
        """The torch keyword arguments (the extra keys), in recipe order."""
        return dict(self.__pydantic_extra__ or {})


# ----------------------------------------------------------------------------------- data


class Split(Section):
    """Fractions of the data held out, stratified by class and seeded by the recipe's seed."""

    valid: float = Field(0.2, ge=0.0, lt=1.0, description="Fraction held out for validation.")
    test: float = Field(0.0, ge=0.0, lt=1.0, description="Fraction held out for the test split.")

    @model_validator(mode="after")
    def _fits(self) -> Split:
        if self.valid + self.test >= 1.0:
            raise ValueError(f"valid + test must leave training data (valid={self.valid}, test={self.test})")
        return self


class DataCommon(Section):
    batch_size: int = Field(64, gt=0, description="Samples per training batch (per process).")
    eval_batch_size: int | None = Field(
        None, gt=0, description="Samples per validation/test batch; default: 4x batch_size."
    )
    shuffle: bool = Field(True, description="Shuffle the training split every epoch (seeded).")
    drop_last: bool = Field(False, description="Drop a last training batch smaller than batch_size.")
    split: Split = Field(default_factory=Split, description="Held-out fractions (stratified, seeded).")
    loader: Literal["auto", "memory", "dataloader"] = Field(
        "auto",
        description="memory: index-slice tensors held in memory; dataloader: torch DataLoader; auto picks.",
    )
    merge_valid: bool = Field(
        False, description="Train on train + valid (what `trainlab refit` sets): no validation split; the test split "
        "stays exactly as it was."
    )
    num_workers: int | Literal["auto"] = Field(
        "auto", description="DataLoader worker processes (dataloader loader only); auto: suits the machine (printed)."
    )
    pin_memory: bool | Literal["auto"] = Field(
        "auto", description="DataLoader pinned host memory; auto: on when training on a GPU."
    )
    persistent_workers: bool = Field(True, description="Keep DataLoader workers alive between epochs.")
    prefetch_factor: int | None = Field(
        None, ge=1, description="Batches each DataLoader worker loads ahead; default: torch's (2)."
    )

    @field_validator("num_workers")
    @classmethod
    def _workers(cls, value: Any) -> Any:
        if isinstance(value, int) and value < 0:
            raise ValueError("expected 0 or more worker processes, or auto")
        return value


class DigitsData(DataCommon):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes); no download."""

    source: Literal["sklearn-digits"] = Field(description="The data source.")
    resize: list[int] | None = Field(
        None, min_length=2, max_length=2, description="[height, width] to resize the 8x8 images to."
    )
    normalize: bool = Field(True, description="Scale to [0, 1] and standardize with the training mean/std.")


class SyntheticData(DataCommon):
    """Seeded random tensors for tests and benchmarks: a fixed random teacher labels the inputs."""

    source: Literal["synthetic"] = Field(description="The data source.")
    task: Literal["classification", "regression", "sequence"] = "classification"
    shape: list[int] = Field(default_factory=lambda: [16], min_length=1, description="Shape of one input sample.")
    num_samples: int = Field(512, gt=1)
    num_classes: int = Field(
        2, ge=2, description="Classes (classification) or label alphabet incl. the blank 0 (sequence)."
    )
    num_targets: int = Field(1, gt=0, description="Target values per sample (regression).")
    target_length: int = Field(4, gt=0, description="Label sequence length (sequence task).")
    vocab_size: int | None = Field(
        None, gt=1, description="Inputs are integer token ids in [0, vocab_size) instead of floats."
    )
    noise: float = Field(0.1, ge=0.0, description="Label noise: std of noise added to the teacher's output.")


class Transforms(Section):
    """``torchvision.transforms.v2`` pipelines by name, one for training and one for evaluation.

    Each item is a name (``ToTensor``), or a one-key mapping from the name to its arguments: keyword
    arguments (``{RandomCrop: {size: 32, padding: 4}}``), one value (``{RandomRotation: 10}``), or a
    list, which is the first argument when that is ``size``, ``padding``, ``degrees`` or
    ``kernel_size`` (``{Resize: [32, 32]}``) and the positional arguments otherwise
    (``{ColorJitter: [0.4, 0.4, 0.4]}``). ``ToTensor`` means ``ToImage`` + ``ToDtype(float32,
    scale=True)``. ``{Normalize: imagenet}`` is ImageNet's mean/std (on 1-channel images: mean 0.449,
    std 0.226); ``{Normalize: dataset}`` is the training split's per-channel mean/std, computed once
    and written into the resolved recipe. Leading deterministic steps that both pipelines share
    (Resize, CenterCrop, Pad, Grayscale) run once when the images are decoded into the cache."""

    train: list[Any] | None = Field(None, description="Training pipeline (augmentation); default: the eval pipeline.")
    eval: list[Any] = Field(default_factory=lambda: ["ToTensor"], description="Validation/test/predict pipeline.")


IMAGE_EXTENSIONS = [".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"]


class ImageOptions(DataCommon):
    transforms: Transforms = Field(default_factory=Transforms, description="torchvision.transforms.v2 pipelines.")
    cache: Literal["auto", "memory", "disk", "none"] = Field(
        "auto",
        description="Decode once into a uint8 tensor cache: memory, disk (memory plus a file under cache_dir, "
        "keyed by the file list and the deterministic transforms), none (decode every epoch in DataLoader "
        "workers); auto: memory when the decoded set fits in cache_limit_mb.",
    )
    cache_dir: str | None = Field(None, description="Folder of the disk cache; default: ~/.cache/trainlab/images.")
    cache_limit_mb: int = Field(2048, gt=0, description="Largest decoded set that cache: auto keeps in memory.")


class ImagesData(ImageOptions):
    """An image folder: ``path/train/<class>/*``, ``path/valid/<class>/*`` and optionally
    ``path/test/<class>/*``, or one ``path/<class>/*`` split by ``split:``. Classes are the sorted
    folder names."""

    source: Literal["images"] = Field(description="The data source.")
    path: str = Field(description="The image folder: a path, or package:NAME/sub/folder inside an installed Python package.")
    mode: Literal["auto", "L", "RGB", "RGBA"] = Field(
        "auto", description="Convert every image to this PIL mode; auto: RGB when any image has colour, else L."
    )
    on_bad_file: Literal["fail", "skip"] = Field(
        "fail", description="A corrupt or non-image file: fail naming it, or skip it and report the count."
    )
    extensions: list[str] = Field(default_factory=lambda: list(IMAGE_EXTENSIONS),
                                  description="File suffixes that count as images (case-insensitive).")


class IdxData(ImageOptions):
    """MNIST / Fashion-MNIST style IDX files (gzipped or not). Validation is split from the training
    files by ``split.valid``; the test split comes from the test files when given."""

    source: Literal["idx"] = Field(description="The data source.")
    path: str | None = Field(None, description="Folder the file names below are relative to.")
    train_images: str = Field(description="IDX file of training images, e.g. train-images-idx3-ubyte.gz.")
    train_labels: str = Field(description="IDX file of training labels.")
    test_images: str | None = Field(None, description="IDX file of test images.")
    test_labels: str | None = Field(None, description="IDX file of test labels.")
    class_names: list[str] | None = Field(None, description="Names of the classes 0..C-1; default: the numbers.")

    @model_validator(mode="after")
    def _test_pair(self) -> IdxData:
        if (self.test_images is None) != (self.test_labels is None):
            raise ValueError("give both test_images and test_labels, or neither")
        return self


class TableFiles(DataCommon):
    path: str | None = Field(None, description="One file (or package:NAME/file.csv), split by split:; or give train / valid / test.")
    train: str | None = Field(None, description="The training file (instead of path).")
    valid: str | None = Field(None, description="A validation file (with train); else split from train.")
    test: str | None = Field(None, description="A test file (with train); else split from train by split.test.")
    target: str = Field(description="The target column.")
    id: str | None = Field(None, description="An id column, carried into predictions and never a feature.")
    sep: str | None = Field(None, description="Column separator; default: tab for .tsv/.tab files, else comma.")
    classes: list[str] | None = Field(
        None, min_length=2, description="Keep only rows whose target is one of these (compared as text); "
        "the other rows are dropped and counted."
    )

    @model_validator(mode="after")
    def _one_layout(self) -> TableFiles:
        if (self.path is None) == (self.train is None):
            raise ValueError("give exactly one of 'path' (one file, split by split:) or 'train' (separate files)")
        if self.path is not None and (self.valid or self.test):
            raise ValueError("'valid' and 'test' files go with 'train', not with 'path'")
        return self


class Impute(Section):
    """How missing values are filled (scikit-learn SimpleImputer), fitted on the training split."""

    numeric: Literal["mean", "median", "most_frequent", "constant"] = "mean"
    categorical: Literal["most_frequent", "constant"] = "most_frequent"
    fill_value: float | str | None = Field(None, description="The constant for strategy constant (0 / 'missing').")
    indicator: bool = Field(False, description="Add a 0/1 missing-indicator column for columns with missing values.")


class CsvData(TableFiles):
    """A CSV table: one row per sample. Preprocessing (scikit-learn ColumnTransformer) is fitted on the
    training split only and saved with the run as JSON, so prediction reuses it exactly."""

    source: Literal["csv"] = Field(description="The data source.")
    features: list[str] | None = Field(None, description="Feature columns; default: all but target and id.")
    categorical: list[str] | None = Field(
        None, description="Categorical columns; default: the text, boolean and category columns among the features."
    )
    task: Literal["classification", "regression"] | None = Field(
        None, description="Default: inferred from the target (text or few integer values: classification; printed)."
    )
    impute: Impute = Field(default_factory=Impute, description="Missing values.")
    scale: Literal["standard", "minmax", "none"] = Field("standard", description="Numeric scaling.")
    log1p: list[str] = Field(default_factory=list, description="Long-tailed numeric columns to log1p before scaling.")
    encode: Literal["onehot", "ordinal"] = Field(
        "onehot", description="Categorical encoding; categories unseen in training become all-zero / -1 at predict time."
    )
    target_transform: Literal["standard", "log", "none"] = Field(
        "none", description="Regression: transform the target for training; metrics and predictions are inverted."
    )


class TextData(TableFiles):
    """Text in a CSV/TSV file: a text column and a label column. Tokenized (a tokenizer trained on
    the training split, or ids already), truncated/padded to max_length; padding id 0."""

    source: Literal["text"] = Field(description="The data source.")
    text: str = Field("text", description="The text column.")
    tokenizer: Literal["ids", "bpe", "wordpiece", "char", "whitespace"] = Field(
        "whitespace",
        description="ids: the text already is token ids ('[0 43 2 66]' or '0 43 2 66'); others are trained with "
        "the tokenizers library on the training split and saved with the run.",
    )
    vocab_size: int | None = Field(
        None, gt=2, description="Trained tokenizers: the vocabulary size (default 20000). ids: ids must be below it "
        "(default: inferred from the training split)."
    )
    min_frequency: int = Field(2, ge=1, description="Trained tokenizers: fewest occurrences of a kept token.")
    lowercase: bool = Field(True, description="Trained tokenizers: lowercase the text first.")
    max_length: int = Field(256, gt=0, description="Truncate longer texts to this many tokens.")
    bucket: bool = Field(
        False, description="Length bucketing: batch texts of similar length and trim padding per batch."
    )


DataConfig = Annotated[
    DigitsData | SyntheticData | ImagesData | IdxData | CsvData | TextData, Field(discriminator="source")
]
DATA_SOURCES = ("sklearn-digits", "synthetic", "images", "idx", "csv", "text")


# ----------------------------------------------------------------------------------- model


class InitConfig(TorchArguments):
    """A ``torch.nn.init`` scheme applied by module type: weights of Linear/Conv layers get it,
    biases are zeroed, normalization weights set to 1. Extra keys are the scheme's arguments."""

    name: str


class ModelConfig(TorchArguments):
    """A built-in or torchvision model by ``name`` (extra keys are its arguments), or a stack of
    ``layers`` with named ``blocks``."""

    name: str | None = Field(None, description="LeNet, LeNetBN, MLP or a torchvision model such as resnet18.")
    layers: list[Any] | None = Field(None, description="torch.nn layers in order; see the layer grammar.")
    blocks: dict[str, list[Any]] = Field(default_factory=dict, description="Named layer lists used by {block: name}.")
    init: InitConfig | None = Field(None, description="A torch.nn.init scheme, e.g. xavier_normal_.")
    output_activation: str | None = Field(
        None, description="A layer appended to the model's output: LogSoftmax, Softmax or Sigmoid."
    )

    @field_validator("init", mode="before")
    @classmethod
    def _init_by_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_kind(self) -> ModelConfig:
        if (self.name is None) == (self.layers is None):
            raise ValueError("give exactly one of 'name' (a built-in model) or 'layers' (a layer stack)")
        if self.layers is not None and self.arguments():
            raise ValueError(f"unknown keys beside 'layers': {', '.join(self.arguments())}")
        return self


# ----------------------------------------------------------------------------------- loss / optimizer / schedule


class LossConfig(TorchArguments):
    """A ``torch.nn`` loss by name; extra keys are its arguments (tensors as lists)."""

    name: str = Field(description="CrossEntropyLoss, MSELoss, BCEWithLogitsLoss, ...")


class ParamGroup(TorchArguments):
    """Optimizer settings for the parameters of some modules; extra keys override the optimizer's."""

    params: list[str] = Field(description="Module names (prefixes such as 'classifier' or 'layers.3').")

    @field_validator("params", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class LRFind(Section):
    """The LR range test (Leslie Smith): raise the lr every optimizer step from start_lr to end_lr."""

    start_lr: float = Field(1e-7, gt=0.0)
    end_lr: float = Field(10.0, gt=0.0)
    num_iter: int = Field(100, ge=10, description="Optimizer steps of the test.")
    mode: Literal["exp", "linear"] = "exp"
    divergence: float = Field(4.0, gt=1.0, description="Stop when the smoothed loss exceeds this many times the best.")
    accuracy_every: int | None = Field(
        None, ge=1, description="Also measure validation accuracy every this many steps (plotted against lr)."
    )
    suggestion: Literal["valley", "steep", "minimum", "slide", "cyclic_max_lr", "cyclic_base_lr", "one_cycle_max_lr"] = Field(
        "valley", description="Which suggestion lr: auto uses."
    )

    @model_validator(mode="after")
    def _rising(self) -> LRFind:
        if self.end_lr <= self.start_lr:
            raise ValueError(f"end_lr ({self.end_lr}) must be above start_lr ({self.start_lr})")
        return self


class OptimizerConfig(TorchArguments):
    """A ``torch.optim`` optimizer by name; extra keys are its arguments (``momentum``, ``betas``).
    Adam, AdamW, SGD and Adagrad run torch's fused step on the CPU and CUDA (the same update, one
    kernel for all parameters) unless ``foreach``, ``fused``, ``capturable`` or ``differentiable``
    is given."""

    name: str = Field("AdamW", description="A torch.optim optimizer: SGD, AdamW, RMSprop, LBFGS, ...")
    lr: float | Literal["auto"] | None = Field(
        None, description="Learning rate; 'auto' runs the LR range test first and uses its suggestion; "
        "default: the torch optimizer's own default."
    )
    lr_find: LRFind | None = Field(None, description="Settings of the range test behind lr: auto.")
    no_decay: list[str] = Field(
        default_factory=list,
        description="Parameters that get weight_decay 0: 'bias', 'norm' (normalization layers, by type), "
        "'embedding', or a glob on parameter names. `true` means [bias, norm].",
    )
    groups: list[ParamGroup] = Field(default_factory=list, description="Per-module optimizer settings.")

    @field_validator("lr", mode="before")
    @classmethod
    def _number_or_auto(cls, value: Any) -> Any:
        """One clear message instead of one per member of the union."""
        if value is None or value == "auto":
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value <= 0:
                raise ValueError("expected a learning rate above 0, or auto")
            return float(value)
        raise ValueError("expected a learning rate (a number above 0) or auto")

    @field_validator("no_decay", mode="before")
    @classmethod
    def _no_decay_flag(cls, value: Any) -> Any:
        if value is True:
            return ["bias", "norm"]
        if value is False or value is None:
            return []
        return [value] if isinstance(value, str) else value


class Warmup(Section):
    """A linear warmup from ``start_factor * lr`` to the schedule's lr, stepped per optimizer step."""

    steps: int | None = Field(None, ge=1, description="Warmup length in optimizer steps.")
    epochs: float | None = Field(None, gt=0, description="Warmup length in epochs (converted to steps).")
    start_factor: float = Field(0.01, gt=0.0, le=1.0, description="Fraction of the lr the warmup starts from.")

    @model_validator(mode="after")
    def _one_length(self) -> Warmup:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of 'steps' or 'epochs'")
        return self


class ScheduleConfig(TorchArguments):
    """A ``torch.optim.lr_scheduler`` scheduler by name; extra keys are its arguments.

    Arguments counted in the scheduler's unit may be given in epochs with an ``_epochs`` suffix
    (``step_size_up_epochs: 2``) and are converted to optimizer steps when the scheduler steps per
    optimizer step."""

    name: str = Field(description="StepLR, CosineAnnealingLR, CosineAnnealingWarmRestarts, CyclicLR, OneCycleLR, "
                      "ReduceLROnPlateau, SequentialLR, ...")
    interval: Literal["step", "epoch"] | None = Field(
        None, description="Step the scheduler per optimizer step or per epoch; default: the scheduler's own unit."
    )
    warmup: Warmup | None = Field(None, description="A linear warmup in front of the schedule.")
    monitor: str | None = Field(None, description="ReduceLROnPlateau: the metric it watches (default valid/loss).")
    schedules: list[ScheduleConfig] | None = Field(
        None, description="SequentialLR / ChainedScheduler: the schedules they combine, in order."
    )


# ----------------------------------------------------------------------------------- training


class EarlyStopping(Section):
    patience: int = Field(5, ge=1, description="Validations without improvement of train.monitor before stopping.")
    min_delta: float = Field(0.0, ge=0.0, description="Smallest change of the monitor that counts as improvement.")


class TrainConfig(Section):
    epochs: int = Field(10, ge=1)
    accumulate: int = Field(1, ge=1, description="Micro-batches per optimizer step (gradient accumulation).")
    clip_grad_norm: float | None = Field(None, gt=0.0, description="Clip the global gradient 2-norm to this value.")
    clip_grad_value: float | None = Field(None, gt=0.0, description="Clip every gradient element to [-v, v].")
    precision: Literal["32", "16-mixed", "bf16-mixed", "auto"] = Field(
        "auto", description="auto: bf16-mixed on a GPU that supports it, else 32."
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps.")
    log_every: int = Field(
        50, ge=1, description="Optimizer steps between training log records (and at every epoch end). A record "
        "reads the loss and metrics off the device and writes metrics.jsonl and TensorBoard: a few percent of a "
        "tiny model's step time at 10."
    )
    validate_every: int = Field(1, ge=1, description="Epochs between validations.")
    checkpoint_every: int | None = Field(
        None, ge=1, description="Optimizer steps between mid-epoch checkpoints (checkpoints/last)."
    )
    checkpoint_seconds: float = Field(
        30.0, ge=0.0, description="Least seconds of training between two epoch-end checkpoints. An epoch that ends "
        "sooner after the last write keeps its checkpoints (last, best) in memory; they are written when the next "
        "one is due, when training ends or stops (Ctrl-C, SIGTERM, an error) and at every checkpoint_every step. "
        "A kill -9 or a power cut loses at most this much training plus one epoch, which resume replays exactly. "
        "0: write at every epoch end."
    )
    train_metrics: bool = Field(
        True, description="Also compute the loss's metrics (accuracy, mse) on training batches; false: train "
        "records carry the loss only (a few percent faster when the model is tiny)."
    )
    channels_last: bool = Field(
        False, description="Image models: weights and (B, C, H, W) batches in channels-last memory order, which "
        "tensor-core convolutions read directly (faster under mixed precision on a GPU)."
    )
    compile: bool | Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        False, description="torch.compile the model (true: mode default). The first steps compile; that warm-up "
        "is reported apart from the throughput (status.json warmup_seconds). On the CPU it needs a C++ compiler."
    )
    deterministic: bool = Field(
        False, description="GPU: deterministic algorithms only and no cuDNN autotuning, so a rerun is bitwise "
        "identical (slower). Off: cuDNN picks the fastest convolution per input shape. CPU runs are deterministic "
        "either way."
    )
    tf32: bool | Literal["auto"] = Field(
        "auto", description="GPU: float32 matrix products and convolutions on TF32 tensor cores (Ampere or newer); "
        "false: full float32. auto: on under mixed precision; under precision 32 PyTorch's defaults (TF32 "
        "convolutions, full-precision matrix products)."
    )
    monitor: str = Field("valid/loss", description="Metric that selects checkpoints/best and drives early stopping.")
    mode: Literal["min", "max", "auto"] = Field("auto", description="auto: max for accuracy-like metrics, min otherwise.")
    early_stopping: EarlyStopping | None = Field(None, description="Stop when train.monitor stops improving.")

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("device")
    @classmethod
    def _device_name(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise ValueError("expected auto, cpu, cuda, cuda:N or mps")
        return value


class LogConfig(Section):
    tensorboard: bool = Field(True, description="Write TensorBoard scalars under tensorboard/.")
    plots: bool = Field(True, description="Write plots/curves.png at the end of training.")
    progress: Literal["auto", "bar", "plain", "none"] = Field(
        "auto", description="auto: a rich progress bar on a terminal, plain lines otherwise."
    )
    histograms: int | None = Field(
        None, ge=1, description="TensorBoard: weight and gradient histograms every this many epochs."
    )
    graph: bool = Field(True, description="TensorBoard: the model graph (add_graph; a failure is logged, not fatal).")
    images: bool = Field(True, description="TensorBoard: a grid of the first training batch (image data).")
    embeddings: bool = Field(
        False, description="TensorBoard: the embedding projector for penultimate-layer features of the "
        "validation set, with labels (and thumbnails for images), at the end of training."
    )
    hparams: bool = Field(True, description="TensorBoard: the recipe's hyperparameters with the final metrics.")
    report: bool = Field(True, description="Write report.html at the end of training and of evaluate.")


class EvaluateConfig(Section):
    """What ``trainlab evaluate`` (and validation during training) measures."""

    metrics: list[str] | None = Field(
        None, description="Metric names; default per task: classification accuracy, top_k_accuracy, precision, "
        "recall, f1 (macro and weighted, and per class), confusion_matrix, roc_auc, average_precision; regression "
        "mse, rmse, mae, r2 (and rmsle when every target and prediction is above -1)."
    )
    top_k: int = Field(5, ge=1, description="k of top_k_accuracy.")


class Recipe(Section):
    """A complete training recipe."""

    name: str = Field(pattern=NAME_PATTERN, description="Run name: the folder under runs/.")
    seed: int = Field(0, description="Seeds data splits, shuffling, initialisation and dropout.")
    data: DataConfig = Field(description="Where the data comes from and how it is split and batched; keys by source.")
    model: ModelConfig = Field(description="A built-in or torchvision model, or a stack of torch.nn layers.")
    loss: LossConfig | None = Field(None, description="Default: CrossEntropyLoss (classification), MSELoss (regression).")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig, description="A torch.optim optimizer.")
    schedule: ScheduleConfig | None = Field(None, description="A torch.optim.lr_scheduler schedule; none: a constant lr.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Epochs, accumulation, precision, checkpoints.")
    log: LogConfig = Field(default_factory=LogConfig, description="TensorBoard, plots and the progress display.")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="Evaluation metrics.")
