"""Evaluation metrics agree with scikit-learn's on fixed predictions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn import metrics as sk
from sklearn.preprocessing import label_binarize

from trainlab.evaluate.metrics import (
    CLASSIFICATION_METRICS,
    JSON_CURVE_POINTS,
    REGRESSION_METRICS,
    EvalResult,
    check_metrics,
    compute_metrics,
    default_metrics,
)
from trainlab.evaluate.predictions import Predictions
from trainlab.recipe.errors import TrainlabError

APPROX = {"rel": 1e-5, "abs": 1e-6}


def classification(num_samples: int, num_classes: int, seed: int = 0, never_predicted: int | None = None,
                   names: list[str] | None = None, width: int | None = None) -> Predictions:
    """Seeded predictions better than chance; ``never_predicted`` is a class that argmax never picks.

    ``width`` > ``num_classes`` adds classes that occur neither in the targets nor the predictions.
    """
    generator = torch.Generator().manual_seed(seed)
    width = width or num_classes
    targets = torch.randint(0, num_classes, (num_samples,), generator=generator)  # (N,)
    logits = torch.randn(num_samples, width, generator=generator, dtype=torch.float64)  # (N, C)
    logits[torch.arange(num_samples), targets] += 1.0
    logits[:, num_classes:] -= 10.0
    if never_predicted is not None:
        logits[:, never_predicted] -= 10.0
    probabilities = logits.softmax(dim=1)
    names = names or [f"c{i}" for i in range(width)]
    return Predictions("classification", targets, probabilities.argmax(dim=1), probabilities, names)


def arrays(pred: Predictions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return pred.targets.numpy(), pred.predicted.numpy(), pred.probabilities.numpy()


def test_multiclass_metrics_match_sklearn():
    pred = classification(60, 4, seed=1)
    y, y_hat, p = arrays(pred)
    result = compute_metrics(pred, top_k=2)
    s = result.scalars
    assert s["accuracy"] == pytest.approx(sk.accuracy_score(y, y_hat), **APPROX)
    assert s["top_2_accuracy"] == pytest.approx(sk.top_k_accuracy_score(y, p, k=2, labels=range(4)), **APPROX)
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = sk.precision_recall_fscore_support(y, y_hat, average=average, zero_division=0)
        assert s[f"precision_{average}"] == pytest.approx(precision, **APPROX)
        assert s[f"recall_{average}"] == pytest.approx(recall, **APPROX)
        assert s[f"f1_{average}"] == pytest.approx(f1, **APPROX)
    precision, recall, f1, support = sk.precision_recall_fscore_support(y, y_hat, zero_division=0)
    onehot = label_binarize(y, classes=range(4))  # (N, C)
    for index, name in enumerate(pred.class_names):
        row = result.per_class[name]
        assert row["precision"] == pytest.approx(precision[index], **APPROX)
        assert row["recall"] == pytest.approx(recall[index], **APPROX)
        assert row["f1"] == pytest.approx(f1[index], **APPROX)
        assert row["support"] == support[index]
        assert row["roc_auc"] == pytest.approx(sk.roc_auc_score(onehot[:, index], p[:, index]), **APPROX)
        assert row["average_precision"] == pytest.approx(
            sk.average_precision_score(onehot[:, index], p[:, index]), **APPROX)
        assert result.curves["roc"][name]["auc"] == row["roc_auc"]
        assert result.curves["pr"][name]["ap"] == row["average_precision"]
    assert result.confusion["counts"] == sk.confusion_matrix(y, y_hat).tolist()
    assert np.allclose(result.confusion["normalized"], sk.confusion_matrix(y, y_hat, normalize="true"))
    assert s["roc_auc_macro"] == pytest.approx(sk.roc_auc_score(y, p, multi_class="ovr", average="macro"), **APPROX)
    assert s["average_precision_macro"] == pytest.approx(
        sk.average_precision_score(onehot, p, average="macro"), **APPROX)
    assert result.notes == []


def test_binary_metrics_use_class_1_as_positive():
    pred = classification(50, 2, seed=2, names=["neg", "pos"])
    y, y_hat, p = arrays(pred)
    result = compute_metrics(pred)
    s = result.scalars
    assert s["accuracy"] == pytest.approx(sk.accuracy_score(y, y_hat), **APPROX)
    assert s["roc_auc"] == pytest.approx(sk.roc_auc_score(y, p[:, 1]), **APPROX)
    assert s["average_precision"] == pytest.approx(sk.average_precision_score(y, p[:, 1]), **APPROX)
    assert "roc_auc_macro" not in s and "average_precision_macro" not in s
    _, _, f1, _ = sk.precision_recall_fscore_support(y, y_hat, average="macro", zero_division=0)
    assert s["f1_macro"] == pytest.approx(f1, **APPROX)
    assert list(result.curves["roc"]) == ["pos"] and list(result.curves["pr"]) == ["pos"]
    assert "roc_auc" in result.per_class["pos"] and "roc_auc" not in result.per_class["neg"]
    fpr, tpr, _ = sk.roc_curve(y, p[:, 1], drop_intermediate=False)
    assert np.allclose(result.curves["roc"]["pos"]["fpr"], fpr) and np.allclose(result.curves["roc"]["pos"]["tpr"], tpr)
    # top-5 accuracy of 2 classes is 1 by construction: skipped, with the reason
    assert not any(name.startswith("top_") for name in s)
    assert any("top_k_accuracy skipped" in note for note in result.notes)


def test_a_class_never_predicted_scores_zero_as_sklearn_zero_division_0():
    pred = classification(60, 3, seed=3, never_predicted=2)
    y, y_hat, _ = arrays(pred)
    assert (y == 2).any() and not (y_hat == 2).any()
    result = compute_metrics(pred, ["precision", "recall", "f1"])
    assert result.per_class["c2"]["precision"] == 0.0  # 0 / 0 predicted: zero_division=0
    assert result.per_class["c2"]["recall"] == 0.0 and result.per_class["c2"]["f1"] == 0.0
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = sk.precision_recall_fscore_support(y, y_hat, average=average, zero_division=0)
        assert result.scalars[f"precision_{average}"] == pytest.approx(precision, **APPROX)
        assert result.scalars[f"recall_{average}"] == pytest.approx(recall, **APPROX)
        assert result.scalars[f"f1_{average}"] == pytest.approx(f1, **APPROX)


def test_a_class_absent_from_targets_and_predictions_is_left_out_of_macro_averages():
    pred = classification(60, 3, seed=4, width=4)  # class c3 occurs nowhere
    y, y_hat, p = arrays(pred)
    result = compute_metrics(pred, top_k=2)
    # scikit-learn's default labels are those present, as torchmetrics' macro average
    _, _, f1, _ = sk.precision_recall_fscore_support(y, y_hat, average="macro", zero_division=0)
    assert result.scalars["f1_macro"] == pytest.approx(f1, **APPROX)
    assert result.per_class["c3"] == {"support": 0, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert result.confusion["normalized"][3] == [0.0, 0.0, 0.0, 0.0]
    onehot = label_binarize(y, classes=range(4))
    present = [sk.roc_auc_score(onehot[:, i], p[:, i]) for i in range(3)]
    assert result.scalars["roc_auc_macro"] == pytest.approx(np.mean(present), **APPROX)
    assert "c3" not in result.curves["roc"] and "c3" not in result.curves["pr"]
    assert any("roc_auc is undefined for 1 class" in note and "'c3'" in note for note in result.notes)
    assert any("average_precision is undefined for 1 class" in note for note in result.notes)


@pytest.mark.parametrize("outputs", [1, 3])
def test_regression_metrics_match_sklearn(outputs):
    generator = torch.Generator().manual_seed(5)
    targets = torch.rand(40, outputs, generator=generator, dtype=torch.float64) * 5  # (N, k) all >= 0
    predicted = targets + 0.3 * torch.randn(40, outputs, generator=generator, dtype=torch.float64)
    predicted = predicted.clamp(min=-0.5)
    result = compute_metrics(Predictions("regression", targets, predicted))
    y, y_hat = targets.numpy(), predicted.numpy()
    s = result.scalars
    assert set(s) == set(REGRESSION_METRICS)
    assert s["mse"] == pytest.approx(sk.mean_squared_error(y, y_hat), **APPROX)
    assert s["mae"] == pytest.approx(sk.mean_absolute_error(y, y_hat), **APPROX)
    assert s["r2"] == pytest.approx(sk.r2_score(y, y_hat), **APPROX)  # multioutput="uniform_average"
    # rmse and rmsle: the mean of the per-target roots
    rmse = np.mean([math.sqrt(sk.mean_squared_error(y[:, j], y_hat[:, j])) for j in range(outputs)])
    rmsle = np.mean([math.sqrt(sk.mean_squared_log_error(y[:, j], y_hat[:, j])) for j in range(outputs)])
    assert s["rmse"] == pytest.approx(rmse, **APPROX)
    assert s["rmsle"] == pytest.approx(rmsle, **APPROX)
    assert result.per_class == {} and result.confusion is None and result.notes == []


def test_rmsle_below_minus_one_is_a_note_by_default_and_an_error_when_asked_for():
    targets = torch.tensor([[-2.0], [0.5], [1.0], [3.0]])
    predicted = torch.tensor([[-1.5], [0.4], [1.2], [2.5]])
    pred = Predictions("regression", targets, predicted)
    result = compute_metrics(pred)
    assert "rmsle" not in result.scalars and "mse" in result.scalars
    assert result.notes == ["rmsle skipped: needs every target and prediction above -1; the lowest is -2"]
    with pytest.raises(TrainlabError) as error:
        compute_metrics(pred, ["mse", "rmsle"])
    assert [problem.path for problem in error.value.problems] == ["evaluate.metrics[1]"]
    assert "above -1" in str(error.value)


def test_only_the_named_metrics_are_computed():
    pred = classification(30, 3, seed=6)
    result = compute_metrics(pred, ["accuracy", "f1"])
    assert set(result.scalars) == {"accuracy", "f1_macro", "f1_weighted"}
    assert result.confusion is None and result.curves == {"roc": {}, "pr": {}}
    assert set(result.per_class["c0"]) == {"support", "f1"}


def test_missing_probabilities_skip_the_ranking_metrics():
    pred = classification(30, 3, seed=7)
    pred.probabilities = None
    result = compute_metrics(pred)
    assert "accuracy" in result.scalars and "roc_auc_macro" not in result.scalars
    assert len([note for note in result.notes if "no class probabilities" in note]) == 3
    with pytest.raises(TrainlabError, match=r"evaluate.metrics\[0\]: cannot be computed"):
        compute_metrics(pred, ["roc_auc"])


def test_json_round_trip_and_downsampled_curves():
    pred = classification(1000, 2, seed=8)
    result = compute_metrics(pred)
    assert len(result.curves["roc"]["c1"]["fpr"]) > JSON_CURVE_POINTS  # one point per distinct score
    data = json.loads(json.dumps(result.to_json()))
    roc = data["curves"]["roc"]["c1"]
    assert len(roc["fpr"]) == len(roc["tpr"]) <= JSON_CURVE_POINTS
    assert (roc["fpr"][0], roc["tpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (0.0, 0.0, 1.0, 1.0)
    back = EvalResult.from_json(data)
    assert back.scalars == result.scalars and back.per_class == result.per_class
    assert back.confusion == result.confusion and back.notes == result.notes
    assert back.class_names == ["c0", "c1"] and back.task == "classification"
    assert back.to_json() == data


def test_default_metrics_by_task():
    assert default_metrics("classification") == list(CLASSIFICATION_METRICS)
    assert default_metrics("regression") == ["mse", "rmse", "mae", "r2", "rmsle"]
    assert default_metrics("sequence") == []


def test_check_metrics_locates_and_explains_each_problem():
    problems = check_metrics(["acuracy", "rmse", "roc_auc", "f1", "f1"], "classification", num_classes=1, top_k=5)
    rendered = [problem.render() for problem in problems]
    assert [problem.path for problem in problems] == [
        "evaluate.metrics[0]", "evaluate.metrics[1]", "evaluate.metrics[2]", "evaluate.metrics[4]"]
    assert rendered[0] == ("evaluate.metrics[0]: unknown classification metric. Received: acuracy. "
                           "Did you mean 'accuracy'?")
    assert "is a regression metric, but the data's task is classification" in rendered[1]
    assert "needs at least 2 classes; the data have 1 class" in rendered[2]
    assert "listed twice (also at evaluate.metrics[3])" in rendered[3]
    regression = check_metrics(["mse", "accuracy", "maae"], "regression", None, 5)
    assert [problem.path for problem in regression] == ["evaluate.metrics[1]", "evaluate.metrics[2]"]
    assert "is a classification metric" in regression[0].render()
    assert "Did you mean 'mae'?" in regression[1].render()
    top_k = check_metrics(["top_k_accuracy"], "classification", num_classes=3, top_k=5)
    assert "Set evaluate.top_k below 3" in top_k[0].render()
    assert check_metrics(list(CLASSIFICATION_METRICS), "classification", num_classes=10, top_k=5) == []


def test_compute_metrics_rejects_unknown_names():
    with pytest.raises(TrainlabError, match="Did you mean 'accuracy'"):
        compute_metrics(classification(10, 3), ["accuracyy"])
