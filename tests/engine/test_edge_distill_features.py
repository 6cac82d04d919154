"""Distillation's features term (engine.train.distillation): the teacher answers with its features after its logits;
the loss adds the weighted distance between the student's features and the teacher's on the same pictures (0 when
they are equal, and relative to the teacher's size), through the batch's similarities when the two models have
different numbers of features; with a feature weight of 0 nothing changes; a real distillation says it in its log."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from engine.train.distillation import (DistillationLoss, LogitsAndFeatures, OnlineTeacher, StudentFeatures,
                                       _with_features, feature_loss)


def _targets(classes):
    n = len(classes)
    return torch.stack([torch.tensor(classes), torch.arange(n), torch.ones(n, dtype=torch.long)], 1)


def _model(width: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, 2))


def test_the_distance_is_0_for_equal_features_and_1_for_none():
    torch.manual_seed(0)
    teacher = torch.rand(8, 16) + 0.1
    assert feature_loss(teacher.clone(), teacher).item() == pytest.approx(0.0, abs=1e-7)
    assert feature_loss(torch.zeros(8, 16), teacher).item() == pytest.approx(1.0, rel=1e-6)
    assert feature_loss(teacher * 2, teacher).item() == pytest.approx(1.0, rel=1e-6)
    # Different widths: compared through the pictures' similarities, which extra zero features do not change...
    wider = torch.cat([teacher, torch.zeros(8, 5)], 1)
    assert feature_loss(wider, teacher).item() == pytest.approx(0.0, abs=1e-6)
    # ... and which pictures in another order do.
    assert feature_loss(wider[torch.randperm(8, generator=torch.Generator().manual_seed(1))], teacher).item() > 1e-3


def test_the_teacher_answers_with_its_logits_then_the_features_its_head_reads():
    model = _model(6, 0).eval()
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        logits, features = model(x), model[:4](x)
    both, width = _with_features(model, "4", x)
    assert width == 6
    with torch.no_grad():
        answer = both(x)
    assert torch.allclose(answer[:, :2], logits, atol=1e-6) and torch.allclose(answer[:, 2:], features, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(model(x), logits)  # the teacher itself is left whole


def test_a_head_that_changes_the_answer_when_taken_out_gives_logits_only():
    class Scaled(nn.Module):  # something after the head: its input alone does not give the answer back
        def __init__(self):
            super().__init__()
            self.inner = _model(4, 0)

        def forward(self, x):
            return self.inner(x) * 3

    model = Scaled().eval()
    same, width = _with_features(model, "inner.4", torch.randn(2, 3, 8, 8))
    assert width == 0 and same is model


@pytest.mark.parametrize("teacher_width", [6, 9])
def test_the_features_term_adds_the_weighted_distance_and_pulls_the_student_to_the_teacher(teacher_width):
    teacher = LogitsAndFeatures(_model(teacher_width, 1), "4").eval()
    student = _model(6, 2).train()
    online = OnlineTeacher(lambda x: teacher(x)).attach(student)
    mine = StudentFeatures().attach(student, "4")
    x, y = torch.randn(5, 3, 8, 8), _targets([0, 1, 0, 1, 1])
    plain = DistillationLoss(torch.zeros(5, 2), 4.0, 0.7)
    with_features = DistillationLoss(torch.zeros(5, 2), 4.0, 0.7, online=online, feature_weight=5.0, features=mine)
    without = DistillationLoss(torch.zeros(5, 2), 4.0, 0.7, online=online, feature_weight=0.0, features=mine)
    with torch.no_grad():
        answer = teacher(x)
        features = student[:4](x)
    distance = feature_loss(features, answer[:, 2:]).item()
    assert distance > 0.01
    loss_with = with_features(student(x), y).item()
    loss_without = without(student(x), y).item()
    assert loss_with - loss_without == pytest.approx(5.0 * distance, rel=1e-4)
    plain.online = OnlineTeacher(lambda x: teacher(x)[:, :2]).attach(student)
    assert plain(student(x), y).item() == pytest.approx(loss_without, rel=1e-5)  # weight 0: as before
    # The term's gradient reaches the student's own layers (the hook keeps the features in the graph), and steps
    # on a loss where it dominates bring the student's features toward the teacher's.
    strong = DistillationLoss(torch.zeros(5, 2), 4.0, 0.7, online=online, feature_weight=10.0, features=mine)
    optimizer = torch.optim.Adam(student.parameters(), lr=0.01)
    for _ in range(20):
        optimizer.zero_grad()
        strong(student(x), y).backward()
        optimizer.step()
    with torch.no_grad():
        assert feature_loss(student[:4](x), teacher(x)[:, 2:]).item() < 0.7 * distance


def test_evaluation_passes_keep_no_features():
    student = _model(4, 0)
    mine = StudentFeatures().attach(student, "4")
    student.eval()
    with torch.no_grad():
        student(torch.randn(2, 3, 8, 8))
    assert mine.take(2) is None
    student.train()
    student(torch.randn(2, 3, 8, 8))
    assert mine.take(2) is not None and mine.take(2) is None  # taken once
    mine.detach()
    student(torch.randn(2, 3, 8, 8))
    assert mine.take(2) is None


@pytest.mark.usefixtures("quick_training")
def test_a_student_that_sees_pictures_as_its_teacher_learns_from_its_features(tiny_run, tmp_path):
    from engine import events as ev
    from engine.edge.distill import distill, distill_config

    # The teacher's own architecture as the student (same preprocessing, same number of features).
    config = distill_config(tiny_run, "timm:test_resnet", "none", epochs=1, out=str(tmp_path / "runs"))
    logs = []
    done = distill(config, lambda e: logs.append(e.message) if isinstance(e, ev.Log) else None, latency_rounds=2)
    assert done.run.status == "completed", done.run.error
    said = "\n".join(logs)
    assert "Consistent teaching" in said and "The teacher's features" in said
    assert "mean squared difference of the two models' features" in said and "not used" not in said
    assert "head starts as a copy of the teacher's" in said


def test_a_student_head_of_the_same_shape_starts_as_the_teachers():
    from engine.train.distillation import TeacherRunner, _reuse_teacher_head

    teacher = LogitsAndFeatures(_model(6, 1), "4")
    said = []
    same, other = _model(6, 2), _model(5, 3)
    runner = TeacherRunner(teacher, {}, 2, 6, teacher.head)
    assert _reuse_teacher_head(same, "4", runner, said.append)
    assert torch.equal(same[4].weight, teacher.head.weight) and torch.equal(same[4].bias, teacher.head.bias)
    before = other[4].weight.clone()
    assert not _reuse_teacher_head(other, "4", runner, said.append)  # 5 features against 6: left as it was
    assert torch.equal(other[4].weight, before) and len(said) == 1
