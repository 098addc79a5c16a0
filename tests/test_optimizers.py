"""Optimizers: every registry entry steps, parameter groups follow the recipe (no_decay by
module type, group overrides, order, sharing), and every problem reads path, Received:, fix."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from trainlab.recipe.errors import RecipeError
from trainlab.recipe.schema import OptimizerConfig
from trainlab.train.optimizers import (
    OPTIMIZERS,
    build_optimizer,
    check_optimizer,
    fused_by_default,
    needs_closure,
    parameter_groups,
    resolve_optimizer,
)


def config(**values) -> OptimizerConfig:
    return OptimizerConfig.model_validate(values)


def conv_net() -> nn.Module:
    """features.0 Conv2d, features.1 BatchNorm2d (its weight is *named* weight), classifier.*"""
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(
        features=nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU()),
        flatten=nn.Flatten(),
        classifier=nn.Sequential(nn.Linear(8, 4), nn.LayerNorm(4), nn.Linear(4, 2)),
    ))


def mlp(bias: bool = True) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8, bias=bias), nn.Tanh(), nn.Linear(8, 2, bias=bias))


class SparseModel(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(10, 3, sparse=True)

    def forward(self, tokens):
        return self.embedding(tokens).sum(1)


def model_for(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    if OPTIMIZERS.get(name).capabilities["sparse_only"]:
        return SparseModel(), torch.randint(0, 10, (6, 2), generator=generator), torch.randn(6, 3, generator=generator)
    model = mlp(bias=not OPTIMIZERS.get(name).capabilities["matrix_only"])  # Muon: 2-D matrices only
    return model, torch.randn(6, 4, generator=generator), torch.randn(6, 2, generator=generator)


def test_registry_holds_every_torch_optimizer():
    torch_classes = {
        name for name in torch.optim.__all__
        if isinstance(getattr(torch.optim, name), type)
        and issubclass(getattr(torch.optim, name), torch.optim.Optimizer) and name != "Optimizer"
    }
    assert set(OPTIMIZERS.names()) == torch_classes
    assert len(OPTIMIZERS) >= 13
    assert {"SGD", "Adam", "AdamW", "LBFGS", "SparseAdam", "Rprop"} <= set(OPTIMIZERS.names())


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_builds_and_steps(name):
    model, inputs, target = model_for(name)
    optimizer = build_optimizer(config(name=name, lr=0.01), model)
    assert isinstance(optimizer, OPTIMIZERS.get(name).target)
    before = [p.detach().clone() for p in model.parameters()]

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(inputs), target)
        loss.backward()
        return loss

    if needs_closure(optimizer):
        optimizer.step(closure)
    else:
        closure()
        optimizer.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert needs_closure(optimizer) == (name == "LBFGS")


def _step(optimizer: torch.optim.Optimizer, model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> None:
    optimizer.zero_grad()
    nn.functional.mse_loss(model(inputs), target).backward()
    optimizer.step()


@pytest.mark.parametrize("name, arguments", [
    ("SGD", {"momentum": 0.9, "weight_decay": 0.01, "nesterov": True}),
    ("Adam", {"amsgrad": True}),
    ("AdamW", {"weight_decay": 0.1}),
    ("Adagrad", {"lr_decay": 0.01}),
])
def test_fused_by_default_where_torch_has_it_with_the_same_update(name, arguments):
    """Adam, AdamW, SGD and Adagrad run fused on the CPU; the steps equal torch's default
    implementation up to float rounding (another order of operations, not another update)."""
    model, inputs, target = model_for(name)
    reference = mlp()
    reference.load_state_dict(model.state_dict())
    fused = build_optimizer(config(name=name, lr=0.05, **arguments), model)
    default = build_optimizer(config(name=name, lr=0.05, fused=False, **arguments), reference)
    assert fused.defaults["fused"] is True and default.defaults["fused"] is False
    initial = [p.detach().clone() for p in model.parameters()]
    for _ in range(5):
        _step(fused, model, inputs, target)
        _step(default, reference, inputs, target)
    for before, a, b in zip(initial, model.parameters(), reference.parameters()):
        assert not torch.equal(before, a)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


class ComplexModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, dtype=torch.complex64))

    def forward(self, inputs):
        return (inputs * self.weight).abs()


@pytest.mark.parametrize("values, model", [
    ({"name": "RMSprop"}, mlp),  # torch has no fused RMSprop
    ({"name": "AdamW", "foreach": True}, mlp),  # an implementation switch in the recipe is obeyed
    ({"name": "AdamW", "fused": False}, mlp),
    ({"name": "Adam", "capturable": True}, mlp),
    ({"name": "SGD", "groups": [{"params": ["2"], "foreach": False}]}, mlp),  # ... also in a group
    ({"name": "SGD"}, SparseModel),  # fused SGD refuses sparse gradients
    ({"name": "Adam"}, ComplexModel),  # fused kernels take real floating-point tensors only
])
def test_torch_default_implementation_where_fused_does_not_apply(values, model):
    section, built = config(lr=0.1, **values), model()
    assert not fused_by_default(OPTIMIZERS.get(section.name), section, built)
    optimizer = build_optimizer(section, built)
    assert not optimizer.defaults.get("fused") and not any(group.get("fused") for group in optimizer.param_groups)


def test_fused_needs_every_trainable_parameter_on_a_fused_device():
    model = mlp()
    assert fused_by_default(OPTIMIZERS.get("SGD"), config(name="SGD"), model)
    model[2].to("meta")  # a device without fused kernels
    assert not fused_by_default(OPTIMIZERS.get("SGD"), config(name="SGD"), model)
    model[2].requires_grad_(False)  # frozen parameters are not the optimizer's
    assert fused_by_default(OPTIMIZERS.get("SGD"), config(name="SGD"), model)


def test_capabilities():
    capabilities = {entry.name: entry.capabilities for entry in OPTIMIZERS}
    assert capabilities["LBFGS"]["needs_closure"] and capabilities["SparseAdam"]["sparse_only"]
    assert capabilities["SGD"]["cycles_momentum"] == "momentum"
    assert capabilities["RMSprop"]["cycles_momentum"] == "momentum"
    assert capabilities["AdamW"]["cycles_momentum"] == "betas"
    assert capabilities["Adadelta"]["cycles_momentum"] is None
    for name in ("LBFGS", "Rprop"):
        assert capabilities[name]["range_test"] is False and capabilities[name]["range_test_reason"]
    assert capabilities["Adam"]["range_test"] is True


# ----------------------------------------------------------------------------------- parameter groups


def names_of(groups, model) -> dict[str, list[str]]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {group["name"]: [by_id[id(p)] for p in group["params"]] for group in groups}


def test_no_decay_by_module_type_not_by_name():
    model = conv_net()
    groups = parameter_groups(config(name="SGD", weight_decay=0.1, no_decay=["bias", "norm"]), model)
    assert names_of(groups, model) == {
        "default": ["features.0.weight", "classifier.0.weight", "classifier.2.weight"],
        "default/no_decay": ["features.0.bias", "features.1.weight", "features.1.bias", "classifier.0.bias",
                             "classifier.1.weight", "classifier.1.bias", "classifier.2.bias"],
    }
    assert [g.get("weight_decay") for g in groups] == [None, 0.0]  # decay part inherits the optimizer's
    optimizer = build_optimizer(config(name="SGD", weight_decay=0.1, no_decay=True), model)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]


def test_no_decay_embedding_and_glob_tokens():
    model = nn.Sequential(OrderedDict(embed=nn.Embedding(5, 3), head=nn.Linear(3, 2)))
    groups = parameter_groups(config(name="AdamW", no_decay=["embedding"]), model)
    assert names_of(groups, model)["default/no_decay"] == ["embed.weight"]
    groups = parameter_groups(config(name="AdamW", no_decay=["head.*"]), model)
    assert names_of(groups, model)["default/no_decay"] == ["head.weight", "head.bias"]


def test_groups_override_arguments_and_split_decay():
    model = conv_net()
    recipe = config(name="SGD", lr=0.1, momentum=0.9, weight_decay=0.01, no_decay=["bias"],
                    groups=[{"params": ["classifier"], "lr": 0.001, "momentum": 0.5}])
    optimizer = build_optimizer(recipe, model)
    by_name = {group["name"]: group for group in optimizer.param_groups}
    assert list(by_name) == ["default", "default/no_decay", "groups[0]", "groups[0]/no_decay"]
    assert by_name["default"]["lr"] == 0.1 and by_name["default"]["momentum"] == 0.9
    assert by_name["groups[0]"]["lr"] == 0.001 and by_name["groups[0]"]["momentum"] == 0.5
    assert by_name["groups[0]"]["weight_decay"] == 0.01 and by_name["groups[0]/no_decay"]["weight_decay"] == 0.0
    grouped = names_of(optimizer.param_groups, model)
    assert grouped["groups[0]"] == ["classifier.0.weight", "classifier.1.weight", "classifier.2.weight"]
    assert grouped["default"] == ["features.0.weight", "features.1.weight"]
    # every trainable parameter exactly once, in named_parameters order within each group
    everything = [n for names in grouped.values() for n in names]
    assert sorted(everything) == sorted(n for n, _ in model.named_parameters())


def test_prefix_means_module_or_descendant_not_string_prefix():
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(11)])  # modules 1 and 10
    groups = parameter_groups(config(name="SGD", groups=[{"params": "1", "lr": 0.5}]), model)
    assert names_of(groups, model)["groups[0]"] == ["1.weight", "1.bias"]


def test_shared_and_frozen_parameters_and_empty_groups():
    model = nn.Sequential(nn.Linear(3, 3, bias=False), nn.ReLU(), nn.Linear(3, 3))
    model[2].weight = model[0].weight  # tied
    model[2].bias.requires_grad_(False)  # frozen
    groups = parameter_groups(config(name="SGD", groups=[{"params": ["1"], "lr": 0.1}]), model)
    assert names_of(groups, model) == {"default": ["0.weight"]}  # ReLU group empty: omitted


def test_tuples_and_muon_or_other_tuple_arguments():
    model = mlp()
    optimizer = build_optimizer(config(name="Adam", betas=[0.8, 0.99]), model)
    assert optimizer.defaults["betas"] == (0.8, 0.99)
    optimizer = build_optimizer(config(name="Rprop", etas=[0.4, 1.3], step_sizes=[1e-5, 10]), model)
    assert optimizer.defaults["etas"] == (0.4, 1.3) and optimizer.defaults["step_sizes"] == (1e-5, 10)
    optimizer = build_optimizer(config(name="Adam", groups=[{"params": ["2"], "betas": [0.5, 0.9]}]), model)
    assert optimizer.param_groups[1]["betas"] == (0.5, 0.9)


# ----------------------------------------------------------------------------------- checks


@pytest.mark.parametrize(
    "values, model, path, message, fix",
    [
        (dict(name="Adm"), mlp, "optimizer.name", "unknown optimizer", "Did you mean 'Adam'?"),
        (dict(name="SGD", momentun=0.9), mlp, "optimizer.momentun", "unknown argument of SGD",
         "Did you mean 'momentum'?"),
        (dict(name="SGD", nesterov="yes"), mlp, "optimizer.nesterov", "expected true or false", "Give nesterov as"),
        (dict(name="Adam", betas=0.9), mlp, "optimizer.betas", "list of 2 numbers", "Give betas as"),
        (dict(name="Adam", betas=[0.9, 1.5]), mlp, "optimizer", "Invalid beta parameter", "Fix the argument"),
        (dict(name="SGD", groups=[{"params": ["clasifier"]}]), conv_net, "optimizer.groups[0].params[0]",
         "names no module", "Did you mean 'classifier'?"),
        (dict(name="SGD", groups=[{"params": ["classifier"], "lrr": 0.1}]), conv_net, "optimizer.groups[0].lrr",
         "unknown argument", "Did you mean 'lr'?"),
        (dict(name="SGD", groups=[{"params": ["classifier"]}, {"params": ["classifier.1"]}]), conv_net,
         "optimizer.groups[1].params", "already in optimizer.groups[0]: classifier.1.weight, classifier.1.bias",
         "disjoint modules"),
        (dict(name="SGD", no_decay=["bais"]), conv_net, "optimizer.no_decay[0]", "matches no parameter",
         "Did you mean 'bias'?"),
        (dict(name="SGD", no_decay=["encoder.*"]), conv_net, "optimizer.no_decay[0]", "matches no parameter",
         "glob"),
        (dict(name="SparseAdam"), conv_net, "optimizer.name", "dense gradients: features.0.weight",
         "Use Adam"),
        (dict(name="Adam"), SparseModel, "optimizer.name", "cannot update sparse gradients", "SparseAdam"),
        (dict(name="SparseAdam", no_decay=["bias"]), SparseModel, "optimizer.no_decay", "no weight_decay",
         "Remove no_decay"),
        (dict(name="LBFGS", groups=[{"params": ["classifier"]}]), conv_net, "optimizer.groups",
         "single parameter group", "Remove groups"),
    ],
)
def test_check_optimizer_problems_render_path_received_and_fix(values, model, path, message, fix):
    problems = check_optimizer(config(**values), model())
    matching = [p for p in problems if p.path == path and message in p.render()]
    assert matching, [p.render() for p in problems]
    text = matching[0].render()
    assert text.startswith(f"{path}: ") and "Received: " in text
    assert fix in text.split("Received: ", 1)[1]


@pytest.mark.skipif("Muon" not in OPTIMIZERS, reason="torch without Muon")
def test_muon_accepts_matrices_only():
    problems = check_optimizer(config(name="Muon"), mlp(bias=True))
    assert [p.path for p in problems] == ["optimizer.name"]
    assert "0.bias (8,)" in problems[0].render() and "2-D" in problems[0].render()
    assert check_optimizer(config(name="Muon"), mlp(bias=False)) == []


def test_good_sections_have_no_problems_and_bad_ones_raise():
    model = conv_net()
    good = config(name="adamw", lr=3e-4, no_decay=True, groups=[{"params": ["classifier"], "lr": 1e-3}])
    assert check_optimizer(good, model) == []
    assert check_optimizer(config(name="Adam", no_decay=True), mlp()) == []  # no norm layers: not an error
    assert check_optimizer(config(name="SparseAdam"), SparseModel()) == []
    with pytest.raises(RecipeError) as caught:
        build_optimizer(config(name="SGD", momentun=0.9, groups=[{"params": ["nope"]}]), model)
    assert "optimizer.momentun" in str(caught.value) and "optimizer.groups[0].params[0]" in str(caught.value)


# ----------------------------------------------------------------------------------- resolve


def test_resolve_fills_defaults_and_canonical_name():
    resolved = resolve_optimizer(config(name="adamw", weight_decay=0.05))
    assert resolved.name == "AdamW"
    assert resolved.arguments() == {"betas": [0.9, 0.999], "eps": 1e-08, "weight_decay": 0.05,
                                    "amsgrad": False, "maximize": False}
    sgd = resolve_optimizer(config(name="sgd", lr=0.1, fused=False, no_decay=["bias"]))
    assert sgd.name == "SGD" and sgd.lr == 0.1 and sgd.no_decay == ["bias"]
    assert sgd.arguments()["fused"] is False and "foreach" not in sgd.arguments()  # given: kept; else left out
    assert resolve_optimizer(config(name="Rprop")).arguments()["step_sizes"] == [1e-06, 50]
    with pytest.raises(RecipeError, match="Did you mean 'Adam'"):
        resolve_optimizer(config(name="Adm"))
