import math

import pytest
import torch

from fundus_diffusion.evaluation.pm_classifier import ClassifierRecipe, label_agreement, predict, train_pm_classifier


def test_label_agreement_known_answer():
    report = label_agreement([1, 1, 0, 0, 1], [1, 0, 0, 0, 1])
    assert report["overall"] == pytest.approx(0.8)
    assert report["PM"] == 1.0 and report["non-PM"] == pytest.approx(2 / 3)
    assert report["n_PM"] == 2 and report["n_non-PM"] == 3
    assert math.isnan(label_agreement([0], [0])["PM"])


def test_classifier_learns_a_separable_signal():
    # Class 1 carries a bright square in the top-left corner; flips move it to the top-right, so it stays learnable.
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 2
    images = torch.rand(64, 3, 16, 16, generator=generator) * 0.4 - 0.8
    images[labels == 1, :, :6, :6] = 0.9
    model = train_pm_classifier(images, labels, ClassifierRecipe(steps=80, batch_size=16, width=4, learning_rate=3e-3))
    assert (predict(model, images) == labels).float().mean() >= 0.9


def test_unknown_labels_are_refused():
    with pytest.raises(ValueError, match="unknown"):
        train_pm_classifier(torch.zeros(2, 3, 16, 16), torch.tensor([0, -1]), ClassifierRecipe(steps=1, width=4))


def test_judge_class_conditional_reports_counts_and_refuses_unlabelled():
    from fundus_diffusion.data import load_phantom_dataset
    from fundus_diffusion.evaluation.pm_classifier import judge_class_conditional

    real, synthetic = load_phantom_dataset(20, size=48, seed=0), load_phantom_dataset(6, size=48, seed=100)
    report = judge_class_conditional(real, synthetic, resolution=32, recipe=ClassifierRecipe(steps=3, width=4))
    assert report["n_real_train"] == 16 and report["real_held_out_accuracy"]["n"] == 4
    assert report["synthetic_label_agreement"]["n_PM"] == 3 and report["synthetic_label_agreement"]["n_non-PM"] == 3
    unlabelled = synthetic.map(lambda row: {"label": -1})
    with pytest.raises(ValueError, match="--labels"):
        judge_class_conditional(real, unlabelled, resolution=32, recipe=ClassifierRecipe(steps=1, width=4))
    with pytest.raises(ValueError, match=r"The real set has no PM / non-PM labels.*Fix: pass labelled images"):
        judge_class_conditional(unlabelled, synthetic, resolution=32, recipe=ClassifierRecipe(steps=1, width=4))
