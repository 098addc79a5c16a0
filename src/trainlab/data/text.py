"""Text classification data (``source: text``): a text column and a label column of a CSV/TSV file.

Every text becomes a row of token ids, right-padded with the padding id 0, so a split is one
``(N, L)`` int64 tensor served from memory. Two reserved ids come first in every vocabulary:
0 pads a row and 1 stands for a token the vocabulary does not hold (``[PAD]`` and ``[UNK]``).

- ``tokenizer: ids``: each text already is token ids (``"[0 43 2 66]"``, ``"0 43 2 66"`` or
  ``"0,43,2,66"``). A given id ``t`` is stored as ``t + 2``; the ids vocabulary is ``vocab_size``
  when given (ids at or above it are errors), else the largest training id + 1, and ids of the
  valid/test splits or of predicted texts beyond it become unknown (1).
- ``tokenizer: whitespace | bpe | wordpiece | char``: a tokenizer of the ``tokenizers`` library
  trained on the training split only (valid/test texts never shape the vocabulary). ``whitespace``
  keeps whole words (runs of letters/digits, and runs of punctuation) as tokens; ``bpe`` and
  ``wordpiece`` learn sub-word units inside those words; ``char`` makes every character a token,
  including one space for each run of whitespace (word boundaries stay visible). ``lowercase``
  lowercases and strips accents (``Café`` -> ``cafe``) before anything else.

Texts are cut to ``max_length`` tokens. The stored width ``L`` is the longest training text when
that is shorter than ``max_length`` (no column is padding in every training row), and the
valid/test splits and predicted texts are cut to the same ``L``: ``DataSpec.input_shape`` is
``(L,)``. With ``bucket: true`` each batch is further trimmed to its longest text (see
:class:`BucketLoader`). Missing or empty texts are kept as rows of padding only (a note counts
them); a missing label is an error.

The fitted :class:`TextPreprocessor` is saved with a run (``preprocessing.json``, and the trained
tokenizer as the ``tokenizers`` library's own ``tokenizer.json``), and ``encode`` turns new texts
into exactly the ids training used.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainlab.data.files import PACKAGE_PREFIX, resolve_path
from trainlab.data.loaders import TensorLoader, bundle_from_tensors, epoch_seed, split_batch_size
from trainlab.data.spec import DataBundle, DataSpec
from trainlab.data.tables import Tables, encode_labels, load_tables
from trainlab.recipe.errors import Problem, TrainlabError
from trainlab.recipe.schema import TextData

PAD_ID = 0  # pads a row; never a real token
UNK_ID = 1  # a token the vocabulary does not hold
SPECIAL_TOKENS = ["[PAD]", "[UNK]"]  # at ids PAD_ID and UNK_ID of a trained tokenizer
ID_OFFSET = 2  # tokenizer ids: a given id t is stored as t + ID_OFFSET
DEFAULT_VOCAB_SIZE = 20_000  # trained tokenizers without data.vocab_size
BUCKET_CHUNK_BATCHES = 50  # bucketing sorts texts by length within chunks of this many batches
PREPROCESSING_FILE = "preprocessing.json"
TOKENIZER_FILE = "tokenizer.json"
MAX_LISTED = 5  # bad rows named in one error

_ID_SEPARATORS = re.compile(r"[\s,]+")


# ----------------------------------------------------------------------------------- token ids


def cell_text(value: Any) -> str:
    """A table cell as text: a missing value is ``""``; a whole float (pandas reads a column of
    single ids as numbers) loses its ``.0``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def split_ids(text: str) -> list[str]:
    """The tokens of a token-id text: ``"[0 43 2 66]"``, ``"0 43 2 66"`` and ``"0,43,2,66"`` all give
    ``["0", "43", "2", "66"]``; an empty text gives none."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return [token for token in _ID_SEPARATORS.split(text) if token]


def parse_ids(texts: Sequence[str], where: Callable[[int], str], limit: int | None = None,
              key: str = "data.text") -> list[list[int]]:
    """Each text's token ids as given (not yet shifted by :data:`ID_OFFSET`). A token that is not an
    integer, a negative id, or (with ``limit``) an id at or above ``limit`` is a
    :class:`TrainlabError` at ``key`` naming each bad text by ``where(position)``."""
    problems: list[Problem] = []
    rows: list[list[int]] = []
    for position, text in enumerate(texts):
        ids: list[int] = []
        for token in split_ids(text):
            try:
                ids.append(int(token))
            except ValueError:
                problems.append(Problem(key, f"{where(position)}: '{token}' is not an integer token id", text,
                                        hint="Write token ids as integers separated by spaces or commas, e.g. "
                                        "'[0 43 2 66]'; for plain text use a trained tokenizer "
                                        "(data.tokenizer: whitespace, bpe, wordpiece or char)."))
                break
        else:
            low = min(ids, default=0)
            high = max(ids, default=0)
            if low < 0:
                problems.append(Problem(key, f"{where(position)}: token id {low} is negative", text,
                                        hint="Token ids start at 0."))
            elif limit is not None and high >= limit:
                problems.append(Problem(key, f"{where(position)}: token id {high} is not below "
                                        f"data.vocab_size {limit}", text,
                                        hint="Raise data.vocab_size above the largest id, or leave it out to "
                                        "infer it from the training split."))
        if len(problems) >= MAX_LISTED:
            break
        rows.append(ids)
    if problems:
        raise TrainlabError(problems=problems)
    return rows


def pack(rows: Sequence[Sequence[int]], width: int) -> torch.Tensor:
    """Rows of ids as an ``(N, width)`` int64 tensor: each row cut to ``width`` and right-padded
    with :data:`PAD_ID`."""
    padded = [list(row[:width]) + [PAD_ID] * (width - len(row[:width])) for row in rows]
    return torch.tensor(padded, dtype=torch.int64).reshape(len(rows), width)  # (N, width)


def text_lengths(inputs: torch.Tensor) -> torch.Tensor:
    """Tokens of each row of an ``(N, L)`` id tensor: the position after its last non-padding id."""
    positions = torch.arange(1, inputs.shape[1] + 1, device=inputs.device)  # (L,) 1..L
    return (positions * (inputs != PAD_ID)).amax(dim=1) if inputs.shape[1] else inputs.new_zeros(len(inputs))


# ----------------------------------------------------------------------------------- trained tokenizers


def train_tokenizer(kind: str, texts: Sequence[str], vocab_size: int, min_frequency: int, lowercase: bool) -> Any:
    """A ``tokenizers.Tokenizer`` of ``kind`` (whitespace, bpe, wordpiece, char) trained on ``texts``,
    with ``[PAD]`` at id 0 and ``[UNK]`` at id 1. The same texts always give the same tokenizer."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    options = {"vocab_size": vocab_size, "min_frequency": min_frequency, "special_tokens": list(SPECIAL_TOKENS),
               "show_progress": False}
    if kind == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
        trainer = trainers.BpeTrainer(**options)
    elif kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        trainer = trainers.WordPieceTrainer(**options)
    elif kind in ("whitespace", "char"):
        tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
        trainer = trainers.WordLevelTrainer(**options)
    else:
        raise ValueError(f"unknown tokenizer kind '{kind}'")
    steps = []
    if kind == "char":  # one space per run of whitespace, none at the ends
        steps += [normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()]
    if lowercase:
        steps += [normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()]
    if steps:
        tokenizer.normalizer = normalizers.Sequence(steps)
    if kind == "char":
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(texts, trainer, length=len(texts))
    if kind == "wordpiece":
        # The trainer numbers the '##' continuation pieces in hash order, which changes from one
        # process to the next; renumber by spelling so a seed gives the same ids everywhere.
        # WordPiece encodes by longest match, so the ids carry no meaning of their own.
        trained = tokenizer.model
        vocabulary = tokenizer.get_vocab()
        order = SPECIAL_TOKENS + sorted(token for token in vocabulary if token not in SPECIAL_TOKENS)
        tokenizer.model = models.WordPiece({token: index for index, token in enumerate(order)}, unk_token="[UNK]",
                                           continuing_subword_prefix=trained.continuing_subword_prefix,
                                           max_input_chars_per_word=trained.max_input_chars_per_word)
    for index, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.token_to_id(token) == index, f"{token} must have id {index}"
    return tokenizer


# ----------------------------------------------------------------------------------- preprocessor


@dataclass
class TextPreprocessor:
    """Turns texts into the ``(N, width)`` int64 ids a model of this run was trained on.

    ``tokenizer_kind`` is ``ids`` or a trained kind; ``tokenizer`` is the trained
    ``tokenizers.Tokenizer`` (None for ids), set to cut texts to ``width`` and pad them with 0, so
    its ``tokenizer.json`` alone reproduces the ids. ``vocab_size`` counts every model input id
    (the two reserved ones included); ``id_limit`` (ids only) is the size of the given ids'
    vocabulary: ids at or above it encode as unknown (1).
    """

    tokenizer_kind: str
    width: int
    max_length: int
    vocab_size: int
    lowercase: bool
    class_names: list[str]
    text_column: str
    target_column: str
    id_column: str | None = None
    id_limit: int | None = None
    tokenizer: Any = field(default=None, repr=False)

    kind = "text"

    def encode(self, texts: Sequence[Any]) -> torch.Tensor:
        """``(N, width)`` int64 token ids of ``texts`` (missing texts give padding only)."""
        texts = [cell_text(text) for text in texts]
        if self.tokenizer is None:
            rows = parse_ids(texts, lambda position: f"text {position + 1}", key="texts")
            limit = self.id_limit or 0
            rows = [[value + ID_OFFSET if value < limit else UNK_ID for value in row] for row in rows]
        else:
            rows = [encoding.ids for encoding in self.tokenizer.encode_batch(texts)]
        return pack(rows, self.width)

    def save(self, folder: str | Path) -> None:
        """Write ``preprocessing.json`` (and ``tokenizer.json`` for a trained tokenizer) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        settings = {
            "kind": self.kind,
            "tokenizer": self.tokenizer_kind,
            "width": self.width,
            "max_length": self.max_length,
            "vocab_size": self.vocab_size,
            "id_limit": self.id_limit,
            "lowercase": self.lowercase,
            "class_names": list(self.class_names),
            "text": self.text_column,
            "target": self.target_column,
            "id": self.id_column,
            "padding_id": PAD_ID,
            "unknown_id": UNK_ID,
        }
        if self.tokenizer is not None:
            self.tokenizer.save(str(folder / TOKENIZER_FILE))
            settings["tokenizer_file"] = TOKENIZER_FILE
        (folder / PREPROCESSING_FILE).write_text(json.dumps(settings, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> TextPreprocessor:
        """The preprocessor :meth:`save` wrote into ``folder``."""
        folder = Path(folder)
        try:
            settings = json.loads((folder / PREPROCESSING_FILE).read_text())
        except (OSError, ValueError) as error:
            raise TrainlabError(f"cannot read {folder / PREPROCESSING_FILE}: {error}") from None
        if settings.get("kind") != cls.kind:
            raise TrainlabError(f"{folder / PREPROCESSING_FILE} describes '{settings.get('kind')}' preprocessing, "
                                "not text")
        tokenizer = None
        if settings.get("tokenizer_file"):
            from tokenizers import Tokenizer

            path = folder / settings["tokenizer_file"]
            try:
                tokenizer = Tokenizer.from_file(str(path))
            except Exception as error:  # noqa: BLE001 - the library raises plain Exceptions for bad files
                raise TrainlabError(f"cannot read the tokenizer {path}: {error}") from None
        return cls(
            tokenizer_kind=settings["tokenizer"], width=int(settings["width"]), max_length=int(settings["max_length"]),
            vocab_size=int(settings["vocab_size"]), lowercase=bool(settings["lowercase"]),
            class_names=list(settings["class_names"]), text_column=settings["text"],
            target_column=settings["target"], id_column=settings.get("id"), id_limit=settings.get("id_limit"),
            tokenizer=tokenizer,
        )


# ----------------------------------------------------------------------------------- bucketing


class BucketLoader(TensorLoader):
    """Batches of texts of similar length, each trimmed to its longest text.

    Training (``shuffle``): an epoch's samples are drawn in the seeded order of
    :class:`TensorLoader`; the samples that make the short last batch (``num_samples % batch_size``)
    are set aside, the rest is cut into chunks of ``chunk_batches`` batches, each chunk is sorted by
    length and cut into batches, and the batches are served in a seeded random order, the short batch
    last. The order depends only on (seed, epoch), so a loader restored with ``load_state_dict``
    serves exactly the remaining batches. Without ``shuffle`` (validation, test) the order is the
    rows' order. Every batch is trimmed to its longest text (at least one column); this relies on
    padding (id 0) sitting at the end of every row, as every text source here writes it.

    Sharded over ``world`` processes (:meth:`shard`), the batches above are global batches of
    ``batch_size x world`` samples, and process ``rank`` serves ``batch[rank::world]`` of each, so the
    processes together train on exactly the batches one process with the global batch size would
    (training draws pad the epoch with its first samples to a multiple of ``world``, as every
    loader here does); each process trims its part to its own longest text.
    """

    stages_batches = False  # serves its own trimmed batches
    variable_shapes = True  # each batch is trimmed to its longest text

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int, shuffle: bool = False,
                 seed: int = 0, drop_last: bool = False, chunk_batches: int = BUCKET_CHUNK_BATCHES):
        super().__init__(inputs, targets, batch_size, shuffle, seed, drop_last)
        self.lengths = text_lengths(inputs).cpu()  # (N,) tokens per row
        self.chunk_batches = chunk_batches

    def epoch_batches(self) -> list[torch.Tensor]:
        """This process's sample indices of each batch of the current epoch, in serving order (CPU tensors)."""
        batches = self._global_batches()
        if self.world == 1:
            return batches
        parts = [batch[self.rank::self.world] for batch in batches]
        return [part for part in parts if len(part)]  # an evaluation split's last batch may leave a process out

    def _global_batches(self) -> list[torch.Tensor]:
        """The batches of every process together (``batch_size x world`` samples each)."""
        size, count = self.batch_size * self.world, self.dataset_samples
        if not self.shuffle:
            return list(torch.arange(count).split(size))
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = self.padded(torch.randperm(count, generator=generator))  # the same first draw as TensorLoader's order
        full = len(order) - len(order) % size
        body, tail = order[:full], order[full:]
        chunks = []
        for chunk in body.split(size * self.chunk_batches):
            chunks.append(chunk[torch.sort(self.lengths[chunk], stable=True).indices])
        batches = list(torch.cat(chunks).view(-1, size)) if chunks else []  # each (batch_size x world,)
        batches = [batches[index] for index in torch.randperm(len(batches), generator=generator).tolist()]
        return batches + ([tail] if len(tail) else [])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = self.epoch_batches()[: len(self)]
        while self.position < len(batches):
            index = batches[self.position]
            self.position += 1
            width = max(1, int(self.lengths[index].max()))
            index = index.to(self.inputs.device)
            yield self.inputs[index, :width], self.targets[index]  # (B, width), (B,)


# ----------------------------------------------------------------------------------- the source


def _texts(tables: Tables, column: str) -> tuple[dict[str, list[str]], int]:
    """Each split's texts and how many were missing or blank (kept as empty texts)."""
    texts = {split: [cell_text(value) for value in frame[column].tolist()] for split, frame in tables.frames.items()}
    empty = sum(1 for rows in texts.values() for text in rows if not text.strip())
    return texts, empty


def _resolved_paths(config: TextData) -> dict[str, str]:
    """Plain file paths made absolute (``package:`` references are already independent of the
    working directory and stay as written)."""
    paths = {}
    for key in ("path", "train", "valid", "test"):
        value = getattr(config, key)
        if value is not None and not value.startswith(PACKAGE_PREFIX):
            paths[key] = str(resolve_path(value, f"data.{key}"))
    return paths


def _percent(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "0.0%"


def _encode_ids(config: TextData, tables: Tables, texts: dict[str, list[str]],
                notes: list[str]) -> tuple[dict[str, list[list[int]]], int]:
    """Token-id texts: every split's rows shifted by :data:`ID_OFFSET` (unseen valid/test ids as
    unknown), and the ids vocabulary size."""
    def where(split: str) -> Callable[[int], str]:
        return lambda position: f"{tables.where(split, position)}, column '{config.text}'"

    given = {split: parse_ids(rows, where(split), config.vocab_size) for split, rows in texts.items()}
    limit = config.vocab_size or max((max(row, default=-1) for row in given["train"]), default=-1) + 1
    limit = max(limit, 1)
    unseen = sum(1 for split, rows in given.items() if split != "train" for row in rows for value in row
                 if value >= limit)
    if unseen:
        notes.append(f"{unseen:,} token ids of the valid/test splits are above the largest training id "
                     f"({limit - 1}): they are read as unknown (id 1)")
    rows = {split: [[value + ID_OFFSET if value < limit else UNK_ID for value in row] for row in split_rows]
            for split, split_rows in given.items()}
    return rows, limit


def load_text(config: TextData, seed: int) -> DataBundle:
    """The text splits of a ``source: text`` recipe as token-id tensors, with their loaders,
    spec, notes, resolved config and the fitted :class:`TextPreprocessor`."""
    if config.bucket and config.loader == "dataloader":
        raise TrainlabError(problems=[Problem("data.bucket", "bucketing serves batches from memory and cannot be "
                                              "used with loader: dataloader", True,
                                              hint="Set data.loader: auto (or memory), or bucket: false.")])
    tables = load_tables(config, seed, stratify=True, columns={"text": config.text})
    notes = list(getattr(tables, "notes", []))
    class_names, labels = encode_labels(tables, config.target)
    texts, empty = _texts(tables, config.text)
    train_count = len(texts["train"])

    tokenizer = None
    if config.tokenizer == "ids":
        rows, id_limit = _encode_ids(config, tables, texts, notes)
        train_lengths = [len(row) for row in rows["train"]]
        # an inferred limit stays inferred: written into the recipe it would turn valid/test ids above the
        # training split's largest id (unknown, id 1) into errors when the run is loaded again
        vocab_size, resolved_vocab = id_limit + ID_OFFSET, config.vocab_size
        summary = (f"token ids: vocabulary {vocab_size:,} (ids 0..{id_limit - 1:,} stored as id + 2; "
                   f"0 pads, 1 is unknown)")
    else:
        rows, id_limit = {}, None
        resolved_vocab = config.vocab_size or DEFAULT_VOCAB_SIZE
        tokenizer = train_tokenizer(config.tokenizer, texts["train"], resolved_vocab, config.min_frequency,
                                    config.lowercase)
        train_lengths = [len(encoding.ids) for encoding in tokenizer.encode_batch(texts["train"])]
        vocab_size = tokenizer.get_vocab_size()
        summary = f"{config.tokenizer} tokenizer trained on {train_count:,} texts: vocabulary {vocab_size:,}"
    truncated = sum(1 for length in train_lengths if length > config.max_length)
    notes.append(f"{summary}; {_percent(truncated, train_count)} of texts truncated at max_length "
                 f"{config.max_length}")
    width = max(1, min(config.max_length, max(train_lengths, default=1)))
    if width < config.max_length:
        notes.append(f"texts padded with 0 to {width} tokens, the longest training text (max_length "
                     f"{config.max_length}); valid, test and predicted texts are cut to {width}")
    if tokenizer is not None:
        tokenizer.enable_truncation(width)
        tokenizer.enable_padding(pad_id=PAD_ID, pad_token=SPECIAL_TOKENS[PAD_ID], length=width)
    if empty:
        notes.append(f"{empty:,} text{' is' if empty == 1 else 's are'} missing or empty: rows of padding only")

    preprocessor = TextPreprocessor(
        tokenizer_kind=config.tokenizer, width=width, max_length=config.max_length, vocab_size=vocab_size,
        lowercase=config.lowercase, class_names=class_names, text_column=config.text, target_column=config.target,
        id_column=config.id, id_limit=id_limit, tokenizer=tokenizer,
    )
    splits = {}
    for split in ("train", "valid", "test"):  # the loaders' order
        if split in texts:
            inputs = pack(rows[split], width) if tokenizer is None else preprocessor.encode(texts[split])
            splits[split] = (inputs, labels[split])  # (N, width) int64, (N,) int64
    spec = DataSpec(task="classification", input_shape=(width,), num_classes=len(class_names),
                    class_names=class_names, input_dtype=torch.int64, vocab_size=vocab_size, padding_idx=PAD_ID)
    resolved = config.model_copy(update={"vocab_size": resolved_vocab, **_resolved_paths(config)})
    if not config.bucket:
        return bundle_from_tensors(config, spec, splits, seed, config=resolved, notes=notes, preprocessor=preprocessor)

    loaders = {
        split: BucketLoader(inputs, targets, split_batch_size(config, split == "train"),
                            shuffle=config.shuffle and split == "train", seed=seed,
                            drop_last=config.drop_last and split == "train")
        for split, (inputs, targets) in splits.items()
    }
    spec.num_samples = {split: len(inputs) for split, (inputs, _) in splits.items()}
    notes.append(f"length bucketing: batches of similar length within chunks of {BUCKET_CHUNK_BATCHES} batches, "
                 "each trimmed to its longest text")
    return DataBundle(spec, loaders["train"], loaders.get("valid"), loaders.get("test"), config=resolved,
                      notes=notes, preprocessor=preprocessor)
