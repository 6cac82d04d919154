"""Distillation's preparation of the student and its consistent teacher (engine.train.distillation): the student's
BatchNorm statistics are measured again on the pictures (toward the data's, weights untouched); the teacher answers
on the student's own augmented pictures during training steps only; with a soft weight of 0 the loss is still the
cross-entropy; a distilled run says both in its log."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.train.distillation import DistillationLoss, OnlineTeacher, recalibrate_batchnorm


def _targets(classes):
    n = len(classes)
    return torch.stack([torch.tensor(classes), torch.arange(n), torch.ones(n, dtype=torch.long)], 1)


def _student() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 2))
    bn = model[1]
    # Statistics from somewhere else (like a network cut from a wider one): far from what the layer now sees.
    bn.running_mean.fill_(50.0)
    bn.running_var.fill_(1e-3)
    return model.eval()


def test_batchnorm_statistics_move_to_the_data_and_the_weights_do_not():
    model = _student()
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randn(8, 3, 6, 6, generator=generator) * 2 + 1 for _ in range(4)]
    with torch.no_grad():  # what the BatchNorm layer sees: the convolution's outputs over all the pictures
        seen = torch.cat([model[0](x) for x in batches])
    mean, var = seen.mean((0, 2, 3)), seen.var((0, 2, 3))

    assert recalibrate_batchnorm(model, iter(batches)) == 1
    bn = model[1]
    assert torch.allclose(bn.running_mean, mean, atol=1e-4)
    assert torch.allclose(bn.running_var, var, rtol=0.05)  # per-batch unbiased variances, averaged
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in weights.items())  # convolution, BatchNorm affine, head
    assert not model.training  # the mode it had
    # Evaluation now normalises with the data's statistics: the BatchNorm outputs are centred.
    with torch.no_grad():
        assert model[1](model[0](batches[0])).mean().abs() < 0.5


def test_recalibration_can_be_stopped_and_a_model_without_batchnorm_is_left_alone():
    from engine.train.loop import Stopped

    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        recalibrate_batchnorm(_student(), iter([torch.randn(2, 3, 6, 6)]), stop)
    plain = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    assert recalibrate_batchnorm(plain, iter([torch.randn(2, 3, 2, 2)])) == 0


def test_the_teacher_answers_on_the_students_own_pictures_during_training_steps_only():
    asked = []

    def teacher(x):
        asked.append(x.clone())
        return x.mean((2, 3))[:, :2] * 5  # an answer that depends on the very pictures

    student = _student()
    online = OnlineTeacher(teacher).attach(student)
    x = torch.randn(5, 3, 6, 6)
    with torch.no_grad():  # evaluation: no teacher pass
        student.eval()(x)
    assert asked == [] and online.take(5) is None
    student.train()
    with torch.no_grad():  # BatchNorm recalibration and other passes without gradients: none either
        student(x)
    assert asked == []
    logits = student(x)
    assert len(asked) == 1 and torch.equal(asked[0], x)
    answer = teacher(x)
    loss = DistillationLoss(torch.zeros(5, 2), temperature=2.0, soft_weight=1.0, online=online)
    expected = 4 * F.kl_div((logits / 2).log_softmax(1), (answer / 2).log_softmax(1), log_target=True,
                            reduction="batchmean")
    assert loss(logits, _targets([0, 1, 0, 1, 0])).item() == pytest.approx(expected.item(), rel=1e-5)
    loss(logits, _targets([0, 1, 0, 1, 0])).backward()  # the answer is a plain target: backward works
    # Used once: the next batch without an answer falls back to the answers computed before training.
    assert online.take(5) is None
    online.detach()
    student(x)
    assert len(asked) == 2  # (the one direct call above), the hook is gone


def test_with_a_soft_weight_of_0_the_loss_is_the_cross_entropy_even_with_a_teacher_answering():
    student = _student().train()
    online = OnlineTeacher(lambda x: torch.randn(x.shape[0], 2) * 10).attach(student)
    x = torch.randn(6, 3, 6, 6)
    logits = student(x)
    classes = [0, 1, 1, 0, 1, 0]
    for smoothing in (0.0, 0.1):
        loss = DistillationLoss(torch.randn(6, 2).log_softmax(1), temperature=4.0, soft_weight=0.0,
                                label_smoothing=smoothing, online=online)
        expected = F.cross_entropy(logits, torch.tensor(classes), label_smoothing=smoothing)
        assert torch.allclose(loss(logits, _targets(classes)), expected)
