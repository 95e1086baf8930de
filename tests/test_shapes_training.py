"""The shapes training code: its pieces on hand-made cases, and each trainer for a few steps."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from trtdeploy.calibration import shapes
from trtdeploy.models.shapes import common, configs, train_clip, train_clipseg, train_florence2, vocab
from trtdeploy.models.shapes.models import get
from trtdeploy.runtime.locations import quantize_boxes


def test_index_batches_are_seeded_shuffled_epochs() -> None:
    settings = common.TrainSettings(steps=6, batch_size=4, learning_rate=1e-3, train_images=8)
    batches = list(common.index_batches(settings))
    assert len(batches) == 6 and all(len(b) == 4 for b in batches)
    assert sorted(np.concatenate(batches[:2])) == list(range(8))  # an epoch sees each image once
    assert not np.array_equal(np.concatenate(batches[:2]), np.arange(8))  # ... in shuffled order
    assert all(np.array_equal(a, b) for a, b in zip(batches, common.index_batches(settings), strict=True))


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    settings = common.TrainSettings(
        steps=100, batch_size=1, learning_rate=1e-3, train_images=1, warmup_steps=10
    )
    factor = common.warmup_cosine(settings)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0) and factor(55) == pytest.approx(0.5) and factor(100) == 0.0


def test_batch_pixels_equal_the_deployed_preprocessing() -> None:
    images = np.stack([s.image for s in shapes.samples("evaluation", 0, 4)])
    for preprocess in (configs.CLIP_PREPROCESS, configs.CLIPSEG_PREPROCESS, configs.FLORENCE2_PREPROCESS):
        common.check_pixel_values(images, preprocess)
    with pytest.raises(ValueError, match="images already at the model size"):
        common.pixel_values(images[:, :64, :64], configs.CLIP_PREPROCESS)


def test_clip_positives_are_the_captions_and_headlines_an_image_has() -> None:
    data = train_clip.ClipData(
        np.zeros((3, 1, 1, 3), np.uint8),
        ("a red circle and a blue star", "a red circle", "a blue star"),
        ("a red circle", "a red circle", "a blue star"),
    )
    texts = ["a red circle and a blue star", "a red circle", "a blue star"]
    expected = [[1, 1, 0], [0, 1, 0], [0, 0, 1]]  # image 0 is described by its caption and headline
    np.testing.assert_array_equal(train_clip.positives(data, np.arange(3), texts), expected)


def test_location_targets_are_narrow_gaussians_over_location_tokens() -> None:
    tokenizer = vocab.florence2_tokenizer()
    targets = train_florence2.location_targets(tokenizer, tokenizer.get_vocab_size())
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(tokenizer.get_vocab_size()))
    loc = vocab.location_token_id(tokenizer, 500)
    assert int(targets[loc].argmax()) == loc
    assert targets[loc, loc + 8] > 0.1 * targets[loc, loc] > targets[loc, loc + 40]  # one pixel = 7.8 bins
    word = vocab.token_id(tokenizer, "▁circle")
    assert targets[word, word] == 1.0 and targets[word].sum() == 1.0


def test_answer_loss_prefers_a_near_location_to_a_far_one() -> None:
    tokenizer = vocab.florence2_tokenizer()
    size = tokenizer.get_vocab_size()
    targets = train_florence2.location_targets(tokenizer, size)
    loc = vocab.location_token_id(tokenizer, 300)
    labels = torch.tensor([[loc]])
    near, far = torch.zeros(1, 1, size), torch.zeros(1, 1, size)
    near[0, 0, loc + 4] = 10.0
    far[0, 0, loc + 200] = 10.0
    assert train_florence2.answer_loss(near, labels, targets) < train_florence2.answer_loss(
        far, labels, targets
    )


def test_segmentation_loss_is_low_for_the_right_mask_and_high_for_the_wrong_one() -> None:
    target = torch.zeros(1, 8, 8)
    target[0, 2:5, 2:5] = 1.0
    right = (target * 2 - 1) * 10  # confident logits matching the mask
    wrong = -right
    assert (
        train_clipseg.segmentation_loss(right, target) < 0.01 < train_clipseg.segmentation_loss(wrong, target)
    )


def test_the_segmentation_head_starts_unsaturated_at_the_cover_prior() -> None:
    """The class's initial decoder spreads logits by hundreds; after calm_output_head the first
    batch's logits have unit spread, centred near the log-odds of the true cover."""
    from transformers import CLIPSegForImageSegmentation

    torch.manual_seed(0)
    model = CLIPSegForImageSegmentation(configs.clipseg_config())
    images = np.stack([s.image for s in shapes.samples("train", 0, 4)])
    pixels = common.pixel_values(images, configs.CLIPSEG_PREPROCESS)
    tokenizer = vocab.clip_tokenizer()
    ids = torch.tensor([tokenizer.encode("the red circle").ids] * 4)
    tokens = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        before = model(pixel_values=pixels, **tokens).logits
    train_clipseg.calm_output_head(model, pixels, tokens, cover=0.05)
    with torch.no_grad():
        after = model(pixel_values=pixels, **tokens).logits
    assert before.std() > 20
    assert abs(float(after.std()) - 1.0) < 1e-3
    assert abs(float(after.mean()) - np.log(0.05 / 0.95)) < 1.0


def test_cell_labels_name_the_object_covering_each_cell() -> None:
    for sample in shapes.samples("train", 0, 8):
        cells = train_florence2.cell_labels(sample).reshape(8, 8)  # 16 px cells of a 128 px image
        assert set(np.unique(cells)) <= set(range(1 + len(shapes.LABELS)))
        for obj in sample.objects:
            rows, cols = np.nonzero(obj.mask)
            centre = (int(rows.mean()) // 16, int(cols.mean()) // 16)
            if (
                obj.mask[centre[0] * 16 : centre[0] * 16 + 16, centre[1] * 16 : centre[1] * 16 + 16].mean()
                >= 0.5
            ):
                assert cells[centre] == 1 + shapes.LABELS.index(obj.name), (sample.index, obj.name)
        covered = sum(int(o.mask.sum()) for o in sample.objects)
        assert 0 < np.count_nonzero(cells) * 256 < 2 * covered + 256 * 8  # about the objects' area


def test_cell_boxes_hold_the_location_bins_of_the_covering_object() -> None:
    size = (shapes.IMAGE_SIZE, shapes.IMAGE_SIZE)
    for sample in shapes.samples("train", 0, 8):
        labels = train_florence2.cell_labels(sample)  # (cells,)
        boxes = train_florence2.cell_boxes(sample)  # (cells, 4)
        assert np.array_equal(boxes[labels == 0], np.full((int((labels == 0).sum()), 4), -1))
        for obj, bins in zip(sample.objects, quantize_boxes(sample.boxes, size), strict=True):
            mine = labels == 1 + shapes.LABELS.index(obj.name)
            assert mine.any(), (sample.index, obj.name)  # every object teaches at least one cell
            assert (boxes[mine] == bins).all()


def test_cell_box_loss_prefers_queries_at_the_right_bins_and_ignores_background() -> None:
    bins, dim = 1000, 16
    angles = torch.arange(bins, dtype=torch.float32)[:, None] / (4.0 * 2.0 ** torch.arange(dim // 2))
    embeddings = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # (bins, D): nearby bins alike
    soft = torch.eye(bins)
    boxes = torch.tensor([[[100, 200, 300, 400], [-1, -1, -1, -1]]])  # (B=1, cells=2, 4)
    right = torch.zeros(1, 2, 4, dim)
    right[0, 0] = 5 * embeddings[boxes[0, 0]]
    wrong = right.clone()
    wrong[0, 0] = 5 * embeddings[boxes[0, 0] + 37]
    loss = train_florence2.cell_box_loss(right, boxes, embeddings, soft)
    assert loss < train_florence2.cell_box_loss(wrong, boxes, embeddings, soft)
    noisy_background = right.clone()
    noisy_background[0, 1] = torch.randn(4, dim)
    assert train_florence2.cell_box_loss(noisy_background, boxes, embeddings, soft) == loss
    nothing_covered = torch.full_like(boxes, -1)
    assert train_florence2.cell_box_loss(right, nothing_covered, embeddings, soft) == 0.0


@pytest.mark.integration
def test_each_trainer_runs_and_its_model_saves_and_scores(tmp_path: Path) -> None:
    """Two steps of each trainer on a handful of images: the plumbing, not the accuracy."""
    tiny = common.TrainSettings(steps=2, batch_size=2, learning_rate=1e-3, train_images=4, warmup_steps=1)
    samples = shapes.samples("evaluation", 0, 2)
    clip_dir = tmp_path / "clip-shapes-tiny"
    clip_dir.mkdir()
    get("clip").write_tokenizer(clip_dir)
    clip = train_clip.train(clip_dir, tiny)
    clip.save_pretrained(str(clip_dir))
    assert 0.0 <= get("clip").metrics(clip, clip_dir, samples)["zero_shot_top1"] <= 1.0

    seg_dir = tmp_path / "clipseg-shapes-tiny"
    seg_dir.mkdir()
    get("clipseg").write_tokenizer(seg_dir)
    seg = train_clipseg.train(seg_dir, clip_dir, tiny)
    # The towers started from the CLIP just trained (then moved by two steps of their own).
    assert not seg.training and set(seg.clip.state_dict()) == set(clip.state_dict())
    assert 0.0 <= get("clipseg").metrics(seg, seg_dir, samples)["mean_iou"] <= 1.0

    florence_dir = tmp_path / "florence2-shapes-tiny"
    florence_dir.mkdir()
    get("florence2").write_tokenizer(florence_dir)
    florence = train_florence2.train(florence_dir, dataclasses.replace(tiny, steps=1))
    scores = get("florence2").metrics(florence, florence_dir, samples)
    assert set(scores) == {"caption_exact_match", "od_map50", "od_mean_best_iou"}
