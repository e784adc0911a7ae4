"""Face ids across sampled frames: a greedy IoU / centre-distance tracker.

Boxes are matched to the tracks of earlier sampled frames greedily by IoU (>= :data:`TRACK_MIN_IOU`)
or, for fast movement at low frame rates, by centre distance (<= :data:`TRACK_MAX_CENTRE_SHIFT` of
the box side). A track not seen for more than ``max_gap_s`` seconds is closed; a face reappearing
later gets a new id. Ids count from 0 in order of first appearance.
"""

from __future__ import annotations

import math

import numpy as np

from .detection import iou

TRACK_MIN_IOU = 0.3
"""Boxes of consecutive sampled frames with at least this IoU belong to the same face."""

TRACK_MAX_CENTRE_SHIFT = 0.5
"""Or: box centres closer than this fraction of the mean box side belong to the same face."""


class FaceTracker:
    """Greedy box matching between consecutive sampled frames (see the module docstring).

    Args:
        max_gap_s: a track unseen for longer than this (seconds) is closed.
    """

    def __init__(self, max_gap_s: float):
        self.max_gap_s = max_gap_s
        self.tracks: dict[int, tuple[float, np.ndarray]] = {}  # id -> (last time seen, last box)
        self.next_id = 0

    def assign(self, time: float, boxes: list[np.ndarray]) -> list[int]:
        """Face ids of ``boxes`` (each ``(x, y, w, h)`` pixels) seen at ``time`` seconds, in their order."""
        self.tracks = {i: tb for i, tb in self.tracks.items() if time - tb[0] <= self.max_gap_s}
        candidates = []
        for track_id, (_, old) in self.tracks.items():
            for j, box in enumerate(boxes):
                overlap = iou(old, box)
                side = (old[2] + old[3] + box[2] + box[3]) / 4
                shift = math.dist(old[:2] + old[2:] / 2, box[:2] + box[2:] / 2) / side
                if overlap >= TRACK_MIN_IOU or shift <= TRACK_MAX_CENTRE_SHIFT:
                    candidates.append((overlap - shift, track_id, j))
        ids: list[int | None] = [None] * len(boxes)
        used = set()
        for _, track_id, j in sorted(candidates, reverse=True):
            if ids[j] is None and track_id not in used:
                ids[j] = track_id
                used.add(track_id)
        for j, box in enumerate(boxes):
            if ids[j] is None:
                ids[j] = self.next_id
                self.next_id += 1
            self.tracks[ids[j]] = (time, box)
        return ids
