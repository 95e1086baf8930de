"""Task metrics against ground truth (or against a reference model's outputs): numpy in, numbers out.

CLIP: zero-shot top-1. CLIPSeg: mask IoU and its mean. Florence-2: caption exact match, box IoU and
mAP@0.5. The torch-free runtime uses these to judge an engine on a task, so they import numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trtdeploy.runtime.locations import Detections


def top1_accuracy(scores: np.ndarray, targets: Sequence[int] | np.ndarray) -> float:
    """Fraction of rows of ``scores`` (N, C) whose argmax is the target class index (N,)."""
    scores = np.asarray(scores)
    targets = np.asarray(targets)
    if scores.ndim != 2 or targets.shape != (scores.shape[0],) or scores.shape[0] == 0:
        raise ValueError(
            f"expected scores (N, C) and targets (N,) with N > 0; got {scores.shape} and {targets.shape}"
        )
    return float(np.mean(np.argmax(scores, axis=1) == targets))


def mask_iou(prediction: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union of two boolean (H, W) masks; 1.0 when both are empty (they agree)."""
    prediction, target = _bool_pair(prediction, target)
    union = np.logical_or(prediction, target).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(prediction, target).sum() / union)


def mean_iou(
    predictions: Sequence[np.ndarray] | np.ndarray, targets: Sequence[np.ndarray] | np.ndarray
) -> float:
    """Mean of per-image mask IoU over paired masks, e.g. model vs ground truth or engine vs reference."""
    if len(predictions) != len(targets) or len(predictions) == 0:
        raise ValueError(
            f"expected equal, non-zero numbers of masks; got {len(predictions)} and {len(targets)}"
        )
    return float(np.mean([mask_iou(p, t) for p, t in zip(predictions, targets, strict=True)]))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU (N, M) of boxes a (N, 4) and b (M, 4), each (x_min, y_min, x_max, y_max)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])  # (N, M, 2)
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)  # (N, M)
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Fraction of predictions equal to their reference after collapsing whitespace (case kept)."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError(
            f"expected equal, non-zero numbers of texts; got {len(predictions)} and {len(references)}"
        )
    same = [" ".join(p.split()) == " ".join(r.split()) for p, r in zip(predictions, references, strict=True)]
    return float(np.mean(same))


def mean_average_precision(
    predictions: Sequence[Detections], ground_truth: Sequence[Detections], iou_threshold: float = 0.5
) -> float:
    """mAP over the classes present in the ground truth, at one IoU threshold (0.5: mAP@0.5).

    Per class, predictions are matched greedily in score order to the unmatched ground-truth box of
    the same image with the highest IoU >= threshold. AP is the area under the precision envelope
    (all-point interpolation, as PASCAL VOC since 2010). Equal scores form one operating point, so
    detections without scores (Florence-2 gives none) count as a single threshold: AP = P · R.
    Classes absent from the ground truth are skipped, as in COCO.
    """
    if len(predictions) != len(ground_truth) or not ground_truth:
        raise ValueError(
            f"expected detections for the same non-zero number of images; got {len(predictions)} and {len(ground_truth)}"
        )
    classes = sorted({label for gt in ground_truth for label in gt.labels})
    if not classes:
        raise ValueError("the ground truth holds no boxes, so mAP is undefined")
    return float(np.mean([_class_ap(c, predictions, ground_truth, iou_threshold) for c in classes]))


def _class_ap(
    label: str, predictions: Sequence[Detections], ground_truth: Sequence[Detections], iou_threshold: float
) -> float:
    gt_boxes = [gt.boxes[np.array(gt.labels, dtype=object) == label] for gt in ground_truth]
    candidates = []  # (score, image, box) of every prediction of this class
    for image, pred in enumerate(predictions):
        scores = pred.scores if pred.scores is not None else np.ones(len(pred.boxes))
        candidates += [
            (float(s), image, b)
            for s, b, lab in zip(scores, pred.boxes, pred.labels, strict=True)
            if lab == label
        ]
    candidates.sort(key=lambda c: -c[0])  # stable: equal scores keep image and generation order
    matched = [np.zeros(len(boxes), dtype=bool) for boxes in gt_boxes]
    hits = np.zeros(len(candidates), dtype=bool)
    for k, (_, image, box) in enumerate(candidates):
        ious = box_iou(box, gt_boxes[image])[0]  # (G,)
        ious[matched[image]] = -1.0
        if ious.size and ious.max() >= iou_threshold:
            matched[image][int(ious.argmax())] = True
            hits[k] = True
    return _area_under_envelope(np.array([c[0] for c in candidates]), hits, sum(len(b) for b in gt_boxes))


def _area_under_envelope(scores: np.ndarray, hits: np.ndarray, num_gt: int) -> float:
    """AP from predictions sorted by descending score, with one operating point per distinct score."""
    if len(scores) == 0:
        return 0.0
    tp = np.cumsum(hits)
    fp = np.cumsum(~hits)
    last_of_tie = np.append(scores[1:] != scores[:-1], True)  # (K,) end of each equal-score run
    recall = np.concatenate([[0.0], tp[last_of_tie] / num_gt])
    precision = np.concatenate([[1.0], tp[last_of_tie] / (tp + fp)[last_of_tie]])
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at this recall or beyond
    return float(np.sum(np.diff(recall) * envelope[1:]))


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _bool_pair(prediction: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prediction, target = np.asarray(prediction), np.asarray(target)
    if prediction.shape != target.shape:
        raise ValueError(f"masks must have the same shape; got {prediction.shape} and {target.shape}")
    if prediction.dtype != bool or target.dtype != bool:
        raise ValueError(
            f"masks must be boolean (threshold probabilities first); got {prediction.dtype} and {target.dtype}"
        )
    return prediction, target
