"""Segmentation metrics for tests, benchmarks and users: Dice and object F1 at an IoU threshold."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix


def dice(predicted: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Dice of the foregrounds (non-zero pixels), over ``mask`` when given; 1.0 when both are empty."""
    p, t = np.asarray(predicted) > 0, np.asarray(truth) > 0
    if p.shape != t.shape:
        raise ValueError(f"shapes differ: {p.shape} and {t.shape}")
    if mask is not None:
        p, t = p[mask], t[mask]
    total = int(p.sum()) + int(t.sum())
    return 1.0 if total == 0 else float(2 * np.sum(p & t) / total)


@dataclass(frozen=True)
class ObjectMatch:
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        real = self.true_positives + self.false_negatives
        return self.true_positives / real if real else 1.0

    @property
    def f1(self) -> float:
        denominator = 2 * self.true_positives + self.false_positives + self.false_negatives
        return 2 * self.true_positives / denominator if denominator else 1.0


def match_objects(
    truth: np.ndarray, predicted: np.ndarray, iou_threshold: float = 0.5
) -> ObjectMatch:
    """One-to-one matching of objects (ids > 0) that maximises total IoU above the threshold."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    if truth.shape != predicted.shape:
        raise ValueError(f"shapes differ: {truth.shape} and {predicted.shape}")
    t_ids, t_inv = np.unique(truth, return_inverse=True)
    p_ids, p_inv = np.unique(predicted, return_inverse=True)
    overlap = coo_matrix(
        (np.ones(truth.size, np.int64), (t_inv.ravel(), p_inv.ravel())),
        shape=(len(t_ids), len(p_ids)),
    ).toarray()
    t_fg, p_fg = t_ids > 0, p_ids > 0
    t_sizes, p_sizes = overlap.sum(1)[t_fg], overlap.sum(0)[p_fg]
    inter = overlap[np.ix_(t_fg, p_fg)]
    n_true, n_pred = int(t_fg.sum()), int(p_fg.sum())
    if n_true == 0 or n_pred == 0:
        return ObjectMatch(0, n_pred, n_true)
    iou = inter / (t_sizes[:, None] + p_sizes[None, :] - inter)
    rows, cols = linear_sum_assignment(-np.where(iou >= iou_threshold, iou, 0))
    matched = int(np.sum(iou[rows, cols] >= iou_threshold))
    return ObjectMatch(matched, n_pred - matched, n_true - matched)


def object_f1(truth: np.ndarray, predicted: np.ndarray, iou_threshold: float = 0.5) -> float:
    """F1 of one-to-one matched objects at ``iou_threshold`` (0.5 is the usual choice)."""
    return match_objects(truth, predicted, iou_threshold).f1
