"""Losses: every registry entry trains, each contract matches a direct torch computation, and
every problem check_loss or the criterion reports is readable (path, Received:, fix)."""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainlab.data.spec import DataSpec
from trainlab.recipe.errors import RecipeError, TrainlabError
from trainlab.recipe.schema import LossConfig
from trainlab.train.losses import (
    EXCLUDED,
    LOSSES,
    Criterion,
    ModelOutput,
    build_loss,
    check_loss,
    contract_table,
    default_loss,
    mine_triplets,
    resolve_loss,
)

CLASSES = 3
CLASSIFICATION = DataSpec("classification", (4,), num_classes=CLASSES)
REGRESSION = DataSpec("regression", (4,), target_shape=(2,))
SINGLE_REGRESSION = DataSpec("regression", (4,), target_shape=(1,))
SEQUENCE = DataSpec("sequence", (6, 4), num_classes=5, target_shape=(3,))
SPECS = {"classification": CLASSIFICATION, "regression": REGRESSION, "sequence": SEQUENCE}
FINAL = {"log_probabilities": nn.LogSoftmax(-1), "probabilities": nn.Sigmoid()}


def loss(name: str, spec: DataSpec, **arguments) -> Criterion:
    return build_loss(LossConfig(name=name, **arguments), spec)


def contract(name: str):
    return LOSSES.get(name).capabilities["contract"]


def tiny_batch(name: str, task: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A tiny model fitting the loss's contract and a batch of data of ``task``."""
    generator = torch.Generator().manual_seed(0)
    spec = SPECS[task]
    if name == "MarginRankingLoss" and task == "regression":
        spec = SINGLE_REGRESSION
    entry_contract = contract(name)
    width = entry_contract.expected_width(spec) or 5  # embeddings: any width
    if task == "sequence":
        inputs = torch.randn(6, 6, 4, generator=generator)  # (B, T, features)
        target = torch.tensor([[1, 2, 0], [3, 0, 0], [1, 1, 2], [4, 0, 0], [2, 3, 0], [1, 0, 0]])
    else:
        inputs = torch.randn(6, 4, generator=generator)
        if task == "classification":
            target = torch.tensor([0, 1, 2, 0, 1, 2])
        else:
            target = torch.rand(6, *spec.target_shape, generator=generator)  # in [0, 1]: fits every loss
    layers = [nn.Linear(4, width)]
    if entry_contract.activation in FINAL:
        layers.append(FINAL[entry_contract.activation])
    torch.manual_seed(0)
    return nn.Sequential(*layers), inputs, target


CASES = [(entry.name, task) for entry in LOSSES for task in entry.capabilities["tasks"]]


def test_every_public_torch_loss_is_registered_or_excluded():
    assert len(LOSSES) >= 21
    public = {name for name in torch.nn.modules.loss.__all__ if not name.startswith("_")}
    assert public - set(EXCLUDED) == set(LOSSES.names())
    assert "NLLLoss2d" not in LOSSES
    assert len(CASES) >= 30  # every loss on every task it supports


@pytest.mark.parametrize("name, task", CASES)
def test_every_loss_trains_on_its_tasks(name, task):
    model, inputs, target = tiny_batch(name, task)
    spec = SINGLE_REGRESSION if (name, task) == ("MarginRankingLoss", "regression") else SPECS[task]
    criterion = build_loss(LossConfig(name=name), spec)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # KLDivLoss's mean warning, broadcasting warnings...
        value = criterion(model(inputs), target)
    assert value.dim() == 0 and torch.isfinite(value)
    before = [p.detach().clone() for p in model.parameters()]
    value.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    metrics = criterion.batch_metrics(model(inputs), target)
    assert set(metrics) == set(criterion.metric_names)
    assert all(m.dim() == 0 and not m.requires_grad for m in metrics.values())


def test_descriptions_state_output_and_targets():
    for entry in LOSSES:
        assert "Model outputs" in entry.description and "Targets:" in entry.description
        assert entry.capabilities["tasks"] and entry.capabilities["output"]


def test_docs_table_matches_the_registry():
    docs = (Path(__file__).parents[1] / "docs" / "losses.md").read_text(encoding="utf-8")
    assert contract_table() in docs
    for name in EXCLUDED:
        assert name in docs


# ----------------------------------------------------------------------------------- contracts

OUTPUT = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.3, -0.2], [-1.0, 0.0, 1.5], [0.7, 0.7, -0.7]])
LABELS = torch.tensor([0, 2, 2, 1])
ONE_HOT = F.one_hot(LABELS, CLASSES).float()


@pytest.mark.parametrize(
    "name, expected",
    [
        ("BCEWithLogitsLoss", lambda: F.binary_cross_entropy_with_logits(OUTPUT, ONE_HOT)),
        ("MultiLabelSoftMarginLoss", lambda: F.multilabel_soft_margin_loss(OUTPUT, ONE_HOT)),
        ("MSELoss", lambda: F.mse_loss(OUTPUT, ONE_HOT)),
        ("L1Loss", lambda: F.l1_loss(OUTPUT, ONE_HOT)),
        ("HuberLoss", lambda: F.huber_loss(OUTPUT, ONE_HOT)),
        ("PoissonNLLLoss", lambda: F.poisson_nll_loss(OUTPUT, ONE_HOT)),
        ("SoftMarginLoss", lambda: F.soft_margin_loss(OUTPUT, 2 * ONE_HOT - 1)),
        ("HingeEmbeddingLoss", lambda: F.hinge_embedding_loss(OUTPUT, 2 * ONE_HOT - 1)),
        ("MultiLabelMarginLoss", lambda: F.multilabel_margin_loss(
            OUTPUT, torch.tensor([[0, -1, -1], [2, -1, -1], [2, -1, -1], [1, -1, -1]]))),
        ("CrossEntropyLoss", lambda: F.cross_entropy(OUTPUT, LABELS)),
        ("MultiMarginLoss", lambda: F.multi_margin_loss(OUTPUT, LABELS)),
    ],
)
def test_classification_targets_are_adapted_like_torch_would_need(name, expected):
    assert torch.allclose(loss(name, CLASSIFICATION)(OUTPUT, LABELS), expected())


def test_bce_on_probabilities_and_kl_divergence_on_log_probabilities():
    probabilities, log_probabilities = OUTPUT.sigmoid(), OUTPUT.log_softmax(1)
    assert torch.allclose(loss("BCELoss", CLASSIFICATION)(probabilities, LABELS),
                          F.binary_cross_entropy(probabilities, ONE_HOT))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batchmean = loss("KLDivLoss", CLASSIFICATION, reduction="batchmean")
        mean = loss("KLDivLoss", CLASSIFICATION)
        log_target = loss("KLDivLoss", CLASSIFICATION, reduction="batchmean", log_target=True)
        assert torch.allclose(batchmean(log_probabilities, LABELS),
                              F.kl_div(log_probabilities, ONE_HOT, reduction="sum") / 4)
        assert torch.allclose(mean(log_probabilities, LABELS),
                              F.kl_div(log_probabilities, ONE_HOT, reduction="none").mean())
        assert torch.allclose(log_target(log_probabilities, LABELS), batchmean(log_probabilities, LABELS))
    assert batchmean.reduction == "mean"


def test_regression_targets_are_used_as_they_are():
    output = torch.tensor([[0.2, 1.0], [-0.5, 0.3], [1.5, 0.0]])
    target = torch.tensor([[0.0, 1.0], [0.5, 0.5], [1.0, 0.25]])
    assert torch.allclose(loss("MSELoss", REGRESSION)(output, target), F.mse_loss(output, target))
    assert torch.allclose(loss("BCEWithLogitsLoss", REGRESSION)(output, target),
                          F.binary_cross_entropy_with_logits(output, target))
    # one target per sample: the model's (B, 1) output meets a (B,) target without broadcasting
    scalar = DataSpec("regression", (4,), target_shape=())
    assert torch.allclose(loss("L1Loss", scalar)(output[:, :1], target[:, 0]), F.l1_loss(output[:, 0], target[:, 0]))


def test_gaussian_nll_reads_means_then_softplus_variances():
    output = torch.tensor([[0.5, -1.0, 0.0, -3.0], [1.0, 2.0, 2.0, 0.5]])  # 2 means, 2 raw variances
    target = torch.tensor([[0.0, -1.0], [1.5, 1.0]])
    variance = F.softplus(output[:, 2:]) + 1e-6
    expected = F.gaussian_nll_loss(output[:, :2], target, variance)
    criterion = loss("GaussianNLLLoss", REGRESSION)
    assert torch.allclose(criterion(output, target), expected)
    metrics = criterion.batch_metrics(output, target)
    assert torch.allclose(metrics["mse"], ((output[:, :2] - target) ** 2).mean(1).sum())


def test_margin_ranking_pairs_each_sample_with_the_next_and_skips_ties():
    scores = torch.tensor([[0.5], [0.2], [0.9], [-0.1]], requires_grad=True)
    target = torch.tensor([[3.0], [1.0], [1.0], [2.0]])
    # pairs (0,1): +1, (1,2): tie, (2,3): -1, (3,0): -1
    x1, x2 = torch.tensor([0.5, 0.9, -0.1]), torch.tensor([0.2, -0.1, 0.5])
    y = torch.tensor([1.0, -1.0, -1.0])
    criterion = loss("MarginRankingLoss", SINGLE_REGRESSION, margin=0.5)
    assert torch.allclose(criterion(scores, target), F.margin_ranking_loss(x1, x2, y, margin=0.5))
    summed = loss("MarginRankingLoss", SINGLE_REGRESSION, margin=0.5, reduction="sum")
    assert torch.allclose(summed(scores, target), F.margin_ranking_loss(x1, x2, y, margin=0.5, reduction="sum"))
    # classification: sign of the class index difference
    labels = torch.tensor([2, 0, 0, 1])
    assert torch.allclose(loss("MarginRankingLoss", CLASSIFICATION, margin=0.5)(scores, labels),
                          F.margin_ranking_loss(x1, x2, y, margin=0.5))
    ties = loss("MarginRankingLoss", SINGLE_REGRESSION)(scores, torch.ones(4, 1))
    assert ties.item() == 0.0 and ties.requires_grad
    ties.backward()


def test_cosine_embedding_pairs_same_class_positive():
    embedding = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 0, 1, 1])
    expected = F.cosine_embedding_loss(embedding, embedding.roll(-1, 0), torch.tensor([1.0, -1.0, 1.0, -1.0]))
    assert torch.allclose(loss("CosineEmbeddingLoss", CLASSIFICATION)(embedding, labels), expected)


def test_triplet_mining_is_deterministic_in_batch():
    labels = torch.tensor([0, 1, 0, 2, 1])
    positive, negative, valid = mine_triplets(labels)
    assert valid.tolist() == [True, True, True, False, True]  # class 2 has no positive
    assert positive[valid].tolist() == [2, 4, 0, 1]
    assert negative[valid].tolist() == [1, 2, 3, 0]
    embedding = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
    anchors = torch.tensor([0, 1, 2, 4])
    expected = F.triplet_margin_loss(embedding[anchors], embedding[[2, 4, 0, 1]], embedding[[1, 2, 3, 0]])
    assert torch.allclose(loss("TripletMarginLoss", CLASSIFICATION)(embedding, labels), expected)
    with_distance = loss("TripletMarginWithDistanceLoss", CLASSIFICATION)(embedding, labels)
    assert torch.allclose(with_distance, F.triplet_margin_with_distance_loss(
        embedding[anchors], embedding[[2, 4, 0, 1]], embedding[[1, 2, 3, 0]]))


def test_triplet_batch_without_valid_anchor_gives_zero_with_grad():
    embedding = torch.randn(3, 4, requires_grad=True)
    value = loss("TripletMarginLoss", CLASSIFICATION)(embedding, torch.tensor([0, 1, 2]))
    assert value.item() == 0.0 and value.requires_grad
    value.backward()
    assert torch.equal(embedding.grad, torch.zeros_like(embedding))
    single = loss("TripletMarginLoss", CLASSIFICATION)(embedding[:1], torch.tensor([0]))
    assert single.item() == 0.0
    one_class = loss("TripletMarginLoss", CLASSIFICATION, margin=5.0)(embedding, torch.tensor([1, 1, 1]))
    assert one_class.item() == 0.0  # positives everywhere, but no negative for any anchor
    assert mine_triplets(torch.tensor([1, 1]))[2].tolist() == [False, False]


def test_ctc_transposes_and_counts_lengths():
    log_probs = torch.randn(2, 6, 5, generator=torch.Generator().manual_seed(3)).log_softmax(-1)  # (B, T, C)
    target = torch.tensor([[1, 2, 3], [4, 0, 0]])
    expected = F.ctc_loss(log_probs.transpose(0, 1), target, torch.tensor([6, 6]), torch.tensor([3, 1]))
    assert torch.allclose(loss("CTCLoss", SEQUENCE)(log_probs, target), expected)


def test_ignore_index_and_reductions():
    labels = torch.tensor([0, 2, -100, 1])
    criterion = loss("CrossEntropyLoss", CLASSIFICATION)  # ignore_index -100 by default
    assert torch.allclose(criterion(OUTPUT, labels), F.cross_entropy(OUTPUT, labels))
    none = loss("CrossEntropyLoss", CLASSIFICATION, reduction="none")
    assert none.reduction == "mean"
    assert torch.allclose(none(OUTPUT, labels), F.cross_entropy(OUTPUT, labels))  # ignored one left out
    summed = loss("CrossEntropyLoss", CLASSIFICATION, reduction="sum")
    assert summed.reduction == "sum"
    assert torch.allclose(summed(OUTPUT, LABELS), F.cross_entropy(OUTPUT, LABELS, reduction="sum"))


def test_tensor_arguments_become_float32_buffers():
    criterion = loss("CrossEntropyLoss", CLASSIFICATION, weight=[1, 2, 3])
    buffers = dict(criterion.named_buffers())
    assert buffers["loss.weight"].dtype == torch.float32
    assert buffers["loss.weight"].tolist() == [1.0, 2.0, 3.0]
    assert torch.allclose(criterion(OUTPUT, LABELS),
                          F.cross_entropy(OUTPUT, LABELS, weight=torch.tensor([1.0, 2.0, 3.0])))
    assert dict(criterion.to(torch.float64).named_buffers())["loss.weight"].dtype == torch.float64  # .to moves it
    positive = loss("BCEWithLogitsLoss", CLASSIFICATION, pos_weight=[1, 1, 4])
    assert dict(positive.named_buffers())["loss.pos_weight"].tolist() == [1.0, 1.0, 4.0]
    assert torch.allclose(positive(OUTPUT, LABELS), F.binary_cross_entropy_with_logits(
        OUTPUT, ONE_HOT, pos_weight=torch.tensor([1.0, 1.0, 4.0])))


def test_criterion_computes_with_its_own_current_buffers_after_to_and_copies():
    """The criterion calls its torch loss through a bound method kept beside the module: moving
    the buffers with ``.to`` and copying the criterion must still reach the buffers in use."""
    criterion = loss("CrossEntropyLoss", CLASSIFICATION, weight=[1, 2, 3])
    copied = copy.deepcopy(criterion)
    copied.loss.weight.copy_(torch.tensor([3.0, 2.0, 1.0]))  # the copy's own buffer, not the original's
    assert torch.allclose(copied(OUTPUT, LABELS),
                          F.cross_entropy(OUTPUT, LABELS, weight=torch.tensor([3.0, 2.0, 1.0])))
    assert torch.allclose(criterion(OUTPUT, LABELS),
                          F.cross_entropy(OUTPUT, LABELS, weight=torch.tensor([1.0, 2.0, 3.0])))
    criterion.to(torch.float64)
    value = criterion(OUTPUT.double(), LABELS)  # a float32 weight against float64 scores would raise
    assert value.dtype == torch.float64
    assert torch.allclose(value, F.cross_entropy(OUTPUT.double(), LABELS,
                                                 weight=torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)))


def test_bce_under_autocast_and_half_outputs():
    criterion = loss("BCELoss", CLASSIFICATION)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = criterion(OUTPUT.sigmoid().bfloat16(), LABELS)
    assert value.dtype == torch.float32
    assert torch.allclose(value, F.binary_cross_entropy(OUTPUT.sigmoid().bfloat16().float(), ONE_HOT))


# ----------------------------------------------------------------------------------- metrics


def test_accuracy_counts_correct_predictions():
    # argmax: 0, 1, 2, 0 vs labels 0, 2, 2, 1 -> 2 correct
    metrics = loss("CrossEntropyLoss", CLASSIFICATION).batch_metrics(OUTPUT, LABELS)
    assert metrics["accuracy"].dtype == torch.int64 and metrics["accuracy"].item() == 2  # a count, not cast
    # HingeEmbeddingLoss outputs distances: argmin 1, 2, 0, 2 -> 1 correct
    assert loss("HingeEmbeddingLoss", CLASSIFICATION).batch_metrics(OUTPUT, LABELS)["accuracy"].item() == 1.0


def test_mse_is_a_sum_of_per_sample_means():
    output = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    target = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    metrics = loss("MSELoss", REGRESSION).batch_metrics(output, target)
    assert metrics["mse"].item() == pytest.approx((1 + 4) / 2 + (1 + 1) / 2)
    poisson = loss("PoissonNLLLoss", REGRESSION).batch_metrics(output, target)  # prediction exp(log-rate)
    assert poisson["mse"].item() == pytest.approx(((output.exp() - target) ** 2).mean(1).sum().item())


def test_metric_names():
    assert loss("MSELoss", CLASSIFICATION).metric_names == ("accuracy",)
    assert loss("MSELoss", REGRESSION).metric_names == ("mse",)
    assert loss("TripletMarginLoss", CLASSIFICATION).metric_names == ()
    assert loss("CTCLoss", SEQUENCE).metric_names == ()
    assert loss("KLDivLoss", REGRESSION).metric_names == ()


# ----------------------------------------------------------------------------------- validation


def rendered(problems) -> list[str]:
    return [problem.render() for problem in problems]


@pytest.mark.parametrize(
    "config, spec, output, path, message, fix",
    [
        (dict(name="CrossEntropy"), CLASSIFICATION, None, "loss.name", "unknown loss", "Did you mean 'CrossEntropyLoss'?"),
        (dict(name="CrossEntropyLoss", ignore_indx=1), CLASSIFICATION, None, "loss.ignore_indx",
         "unknown argument", "Did you mean 'ignore_index'?"),
        (dict(name="CrossEntropyLoss", label_smoothing="lots"), CLASSIFICATION, None, "loss.label_smoothing",
         "expected a number", "Give label_smoothing as a number"),
        (dict(name="CrossEntropyLoss", label_smoothing=1.5), CLASSIFICATION, None, "loss.label_smoothing",
         "must lie in [0, 1]", "Choose label_smoothing within"),
        (dict(name="CrossEntropyLoss", reduction="avg"), CLASSIFICATION, None, "loss.reduction",
         "one of mean, sum, none", "Use reduction: mean"),
        (dict(name="CrossEntropyLoss", weight=[1, 2]), CLASSIFICATION, None, "loss.weight",
         "one number per class", "Give exactly 3 numbers"),
        (dict(name="CrossEntropyLoss", weight="balanced"), CLASSIFICATION, None, "loss.weight",
         "must be a list of numbers", "YAML list of 3 numbers"),
        (dict(name="BCEWithLogitsLoss", pos_weight=[1, 2, "x"]), CLASSIFICATION, None, "loss.pos_weight",
         "must be a list of numbers", "YAML list"),
        (dict(name="MSELoss", size_average=False), REGRESSION, None, "loss.size_average", "deprecated",
         "Remove size_average"),
        (dict(name="TripletMarginWithDistanceLoss", distance_function="cosine"), CLASSIFICATION, None,
         "loss.distance_function", "not supported", "Remove distance_function"),
        (dict(name="MultiMarginLoss", p=3), CLASSIFICATION, None, "loss", "torch rejected", "Fix the argument"),
        (dict(name="CTCLoss", blank=2), SEQUENCE, None, "loss.blank", "pads label sequences with 0", "blank: 0"),
        (dict(name="NLLLoss2d"), CLASSIFICATION, None, "loss.name", "deprecated", "docs/losses.md"),
        (dict(name="CrossEntropyLoss"), REGRESSION, None, "loss.name", "trains on classification data",
         "MSELoss"),
        (dict(name="CTCLoss"), CLASSIFICATION, None, "loss.name", "trains on sequence data", "CrossEntropyLoss"),
        (dict(name="GaussianNLLLoss"), CLASSIFICATION, None, "loss.name", "trains on regression data",
         "CrossEntropyLoss"),
        (dict(name="MSELoss"), SEQUENCE, None, "loss.name", "this data's task is sequence", "CTCLoss"),
        (dict(name="NLLLoss"), CLASSIFICATION, ModelOutput((3,), None), "loss.name", "expects log-probabilities",
         "set model.output_activation: LogSoftmax"),
        (dict(name="KLDivLoss"), CLASSIFICATION, ModelOutput((3,), "Softmax"), "loss.name",
         "must end in LogSoftmax", "Add LogSoftmax as the last layer"),
        (dict(name="CTCLoss"), SEQUENCE, ModelOutput((6, 5), None), "loss.name", "must end in LogSoftmax",
         "LogSoftmax"),
        (dict(name="BCELoss"), CLASSIFICATION, ModelOutput((3,), None), "loss.name", "Sigmoid or Softmax",
         "Add Sigmoid"),
        (dict(name="CrossEntropyLoss"), CLASSIFICATION, ModelOutput((3,), "Softmax"), "loss.name",
         "expects raw logits", "Remove the final Softmax"),
        (dict(name="BCEWithLogitsLoss"), CLASSIFICATION, ModelOutput((3,), "Sigmoid"), "loss.name",
         "expects raw logits", "Remove the final Sigmoid"),
        (dict(name="MultiMarginLoss"), CLASSIFICATION, ModelOutput((3,), "LogSoftmax"), "loss.name",
         "expects raw logits", "Remove the final LogSoftmax"),
        (dict(name="CrossEntropyLoss"), CLASSIFICATION, ModelOutput((10,), None), "model",
         "needs 3 output values per sample (one per class)", "Linear(out_features: 3)"),
        (dict(name="GaussianNLLLoss"), REGRESSION, ModelOutput((2,), None), "model",
         "needs 4 output values", "Linear(out_features: 4)"),
        (dict(name="MSELoss"), REGRESSION, ModelOutput((3,), None), "model", "one per regression target",
         "output 2 values"),
        (dict(name="MarginRankingLoss"), SINGLE_REGRESSION, ModelOutput((2,), None), "model", "needs 1 output value",
         "Linear(out_features: 1)"),
        (dict(name="CTCLoss"), SEQUENCE, ModelOutput((2, 5), "LogSoftmax"), "model", "at least as many output frames",
         "shorter label sequences"),
        (dict(name="CTCLoss"), SEQUENCE, ModelOutput((5,), "LogSoftmax"), "model", "(T, 5) output per sample",
         "LogSoftmax"),
    ],
)
def test_check_loss_problems_render_path_received_and_fix(config, spec, output, path, message, fix):
    problems = check_loss(LossConfig(**config), spec, output)
    matching = [p for p in problems if p.path == path and message in p.render()]
    assert matching, rendered(problems)
    text = matching[0].render()
    assert text.startswith(f"{path}: ")
    assert "Received: " in text
    assert fix in text.split("Received: ", 1)[1]


def test_check_loss_collects_every_problem_and_accepts_good_sections():
    problems = check_loss(LossConfig(name="CrossEntropyLoss", weight=[1], reduction="x", label_smoothing=3),
                          REGRESSION, ModelOutput((3,), "Softmax"))
    assert {p.path for p in problems} >= {"loss.weight", "loss.reduction", "loss.label_smoothing", "loss.name"}
    assert check_loss(None, CLASSIFICATION, ModelOutput((3,), None)) == []
    assert check_loss(LossConfig(name="nll_loss"), CLASSIFICATION, ModelOutput((3,), "LogSoftmax")) == []
    assert check_loss(LossConfig(name="KLDivLoss", reduction="batchmean"), CLASSIFICATION,
                      ModelOutput((3,), "LogSoftmax")) == []
    assert check_loss(LossConfig(name="BCELoss"), CLASSIFICATION, ModelOutput((3,), "Softmax")) == []
    assert check_loss(LossConfig(name="TripletMarginLoss"), CLASSIFICATION, ModelOutput((16,), None)) == []
    assert check_loss(None, SEQUENCE, ModelOutput((6, 5), "LogSoftmax")) == []


def test_build_loss_raises_recipe_error_with_every_problem():
    with pytest.raises(RecipeError) as caught:
        build_loss(LossConfig(name="CrossEntropyLoss", weight=[1], reduction="x"), CLASSIFICATION)
    assert "loss.weight" in str(caught.value) and "loss.reduction" in str(caught.value)
    with pytest.raises(RecipeError, match="Did you mean 'MSELoss'"):
        build_loss(LossConfig(name="MSELos"), REGRESSION)


# ----------------------------------------------------------------------------------- runtime targets


@pytest.mark.parametrize(
    "name, spec, output, target, message",
    [
        ("BCELoss", REGRESSION, torch.full((2, 2), 0.5), torch.tensor([[0.0, 1.5], [0.2, 0.3]]),
         "targets must lie in [0, 1]"),
        ("BCEWithLogitsLoss", REGRESSION, torch.zeros(2, 2), torch.tensor([[-1.0, 0.5], [0.2, 0.3]]),
         "targets must lie in [0, 1]"),
        ("MSELoss", REGRESSION, torch.zeros(2, 2), torch.tensor([[math.nan, 0.5], [0.2, 0.3]]),
         "targets must be finite"),
        ("PoissonNLLLoss", REGRESSION, torch.zeros(2, 2), torch.tensor([[-1.0, 0.5], [0.2, 0.3]]),
         "non-negative counts"),
        ("CrossEntropyLoss", CLASSIFICATION, torch.zeros(2, 3), torch.tensor([0, 3]), "must lie in [0, 3)"),
        ("CrossEntropyLoss", CLASSIFICATION, torch.zeros(2, 3), torch.tensor([0.0, 1.0]), "integer class indices"),
        ("MSELoss", CLASSIFICATION, torch.zeros(2, 3), torch.tensor([-1, 1]), "must lie in [0, 3)"),
        ("MSELoss", REGRESSION, torch.zeros(2, 3), torch.zeros(2, 2), "must output 2 values per sample"),
        ("CrossEntropyLoss", CLASSIFICATION, torch.zeros(3, 3), torch.tensor([0, 1]), "share the batch dimension"),
        ("CTCLoss", SEQUENCE, torch.zeros(1, 2, 5), torch.tensor([[1, 2, 3]]), "longer than the model's output"),
        ("CTCLoss", SEQUENCE, torch.zeros(1, 6, 5), torch.tensor([[1, 0, 3]]), "padded with 0 at the end only"),
        ("CTCLoss", SEQUENCE, torch.zeros(1, 6, 5), torch.tensor([[1, 7, 0]]), "label ids must lie in [0, 5)"),
    ],
)
def test_unusable_targets_raise_a_clear_trainlab_error(name, spec, output, target, message):
    with pytest.raises(TrainlabError) as caught:
        loss(name, spec)(output, target)
    text = str(caught.value)
    assert message in text and "Received: " in text and text.startswith(f"loss ({name}): ")


def test_check_target_can_validate_a_whole_target_tensor():
    criterion = loss("BCELoss", REGRESSION)
    criterion.check_target(torch.rand(100, 2))
    with pytest.raises(TrainlabError, match=r"\[0, 1\]"):
        criterion.check_target(torch.full((100, 2), 2.0))


# ----------------------------------------------------------------------------------- resolve / defaults


def test_default_loss_by_task():
    assert [default_loss(SPECS[t]) for t in ("classification", "regression", "sequence")] == [
        "CrossEntropyLoss", "MSELoss", "CTCLoss"]
    assert loss("CrossEntropyLoss", CLASSIFICATION).name == build_loss(None, CLASSIFICATION).name


def test_resolve_fills_torch_defaults_and_canonical_names():
    resolved = resolve_loss(LossConfig(name="cross_entropy_loss", label_smoothing=0.1), CLASSIFICATION)
    assert resolved.name == "CrossEntropyLoss"
    assert resolved.arguments() == {"weight": None, "ignore_index": -100, "reduction": "mean", "label_smoothing": 0.1}
    assert resolve_loss(None, REGRESSION).model_dump() == {"name": "MSELoss", "reduction": "mean"}
    triplet = resolve_loss(LossConfig(name="TripletMarginWithDistanceLoss"), CLASSIFICATION).arguments()
    assert triplet == {"margin": 1.0, "swap": False, "reduction": "mean"}
    assert resolve_loss(LossConfig(name="ctcloss"), SEQUENCE).arguments() == {
        "blank": 0, "reduction": "mean", "zero_infinity": False}
    with pytest.raises(RecipeError, match="unknown loss"):
        resolve_loss(LossConfig(name="Nope"), CLASSIFICATION)
