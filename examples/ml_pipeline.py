"""A small, real ML pipeline: extract -> transform -> train N candidates in parallel -> pick the
best (fan-in) -> evaluate. Pure Python, no downloads: the data is synthesised deterministically.

    conveyor dev examples/ml_pipeline.py --run ml_pipeline
    conveyor dev examples/ml_pipeline.py --run ml_pipeline --input '{"rows": 2000}'

Each `train` child is an independent task: with several workers they run on several machines.
"""

from __future__ import annotations

import math
import random

from pydantic import BaseModel

from orchestrator import workflow
from workers import task

TRUE_WEIGHTS = (3.0, -2.0, 0.5)


class Dataset(BaseModel):
    features: list[list[float]]
    targets: list[float]


class Split(BaseModel):
    train: Dataset
    test: Dataset
    means: list[float]
    scales: list[float]


class Candidate(BaseModel):
    l2: float
    learning_rate: float


class Model(BaseModel):
    candidate: Candidate
    weights: list[float]
    bias: float
    validation_mse: float


class Report(BaseModel):
    best: Candidate
    test_mse: float
    r2: float
    weights: list[float]


@task(retries=2)
def extract(rows: int, seed: int) -> Dataset:
    """Synthesise a noisy linear dataset (stands in for reading a table)."""
    rng = random.Random(seed)
    features, targets = [], []
    for _ in range(rows):
        x = [rng.uniform(-5, 5) for _ in TRUE_WEIGHTS]
        noise = rng.gauss(0, 1.0)
        features.append(x)
        targets.append(sum(w * v for w, v in zip(TRUE_WEIGHTS, x, strict=True)) + 4.0 + noise)
    return Dataset(features=features, targets=targets)


@task
def transform(data: Dataset, test_fraction: float) -> Split:
    """Standardise the features and split train/test."""
    columns = list(zip(*data.features, strict=True))
    means = [sum(c) / len(c) for c in columns]
    scales = [
        math.sqrt(sum((v - m) ** 2 for v in c) / len(c)) or 1.0
        for c, m in zip(columns, means, strict=True)
    ]
    scaled = [
        [(v - m) / s for v, m, s in zip(row, means, scales, strict=True)] for row in data.features
    ]
    cut = int(len(scaled) * (1 - test_fraction))
    return Split(
        train=Dataset(features=scaled[:cut], targets=data.targets[:cut]),
        test=Dataset(features=scaled[cut:], targets=data.targets[cut:]),
        means=means,
        scales=scales,
    )


def _mse(weights: list[float], bias: float, data: Dataset) -> float:
    errors = [
        (sum(w * v for w, v in zip(weights, x, strict=True)) + bias - y) ** 2
        for x, y in zip(data.features, data.targets, strict=True)
    ]
    return sum(errors) / len(errors)


@task(timeout=120)
def train(candidate: Candidate, split: Split, epochs: int) -> Model:
    """Ridge regression by full-batch gradient descent; validated on the last 20% of train."""
    cut = int(len(split.train.features) * 0.8)
    fit = Dataset(features=split.train.features[:cut], targets=split.train.targets[:cut])
    valid = Dataset(features=split.train.features[cut:], targets=split.train.targets[cut:])
    weights, bias, n = [0.0] * len(fit.features[0]), 0.0, len(fit.features)
    for _ in range(epochs):
        grad_w, grad_b = [0.0] * len(weights), 0.0
        for x, y in zip(fit.features, fit.targets, strict=True):
            error = sum(w * v for w, v in zip(weights, x, strict=True)) + bias - y
            for i, v in enumerate(x):
                grad_w[i] += error * v
            grad_b += error
        weights = [
            w - candidate.learning_rate * (g / n + candidate.l2 * w)
            for w, g in zip(weights, grad_w, strict=True)
        ]
        bias -= candidate.learning_rate * grad_b / n
    return Model(
        candidate=candidate, weights=weights, bias=bias, validation_mse=_mse(weights, bias, valid)
    )


@task
def pick_best(models: list[Model]) -> Model:
    """Fan-in: receives every candidate's model, keeps the lowest validation error."""
    return min(models, key=lambda m: m.validation_mse)


@task
def evaluate(model: Model, split: Split) -> Report:
    test_mse = _mse(model.weights, model.bias, split.test)
    mean = sum(split.test.targets) / len(split.test.targets)
    variance = sum((y - mean) ** 2 for y in split.test.targets) / len(split.test.targets)
    # Report the weights in the original units of the features.
    weights = [round(w / s, 3) for w, s in zip(model.weights, split.scales, strict=True)]
    return Report(
        best=model.candidate,
        test_mse=round(test_mse, 4),
        r2=round(1 - test_mse / variance, 4),
        weights=weights,
    )


DEFAULT_CANDIDATES = [
    {"l2": l2, "learning_rate": lr} for l2 in (0.0, 0.01, 0.1) for lr in (0.05, 0.2)
]


@workflow
def ml_pipeline(
    rows: int = 1_000,
    seed: int = 7,
    epochs: int = 60,
    candidates: list[Candidate] = DEFAULT_CANDIDATES,  # type: ignore[assignment]
) -> Report:
    """Train several hyperparameter candidates in parallel and report the best on held-out data."""
    data = extract(rows, seed)
    split = transform(data, test_fraction=0.2)
    models = train.map(candidates, split=split, epochs=epochs)
    best = pick_best(models)
    return evaluate(best, split)
