"""What the mesh's expression shape adds to the face network, measured on FER2013.

    .venv/bin/python benchmarks/face_shape.py --data ../shared/data

For every PublicTest (``val``) and PrivateTest (``test``) face: the packaged expression network's
calibrated, mirror-averaged probabilities, and the :func:`multimodal_ser.face.shape.expression_shape`
of the face mesh found on the image (padded by 24 px of its own border, upscaled to 240 px;
MediaPipe face mesh, static-image mode). Two multinomial logistic regressions are fitted on
PublicTest, which no gradient step of the network saw, and scored once on PrivateTest:

- *crop*: the network's log-probabilities alone (a re-weighting of what it already says);
- *crop + shape*: the same plus the 10 shape values (standardised; a face the mesh misses gets
  the PublicTest mean and a missing flag).

Class weights are balanced, so the fit aims at unweighted accuracy; the regularisation is chosen
by 5-fold cross-validation on PublicTest. Intervals: 1000 bootstrap resamples of images.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import cv2
import numpy as np
from sklearn.linear_model import LogisticRegressionCV
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from multimodal_ser.evaluation import metrics
from multimodal_ser.face.expression import ExpressionModel, read_label_folder
from multimodal_ser.face.shape import SHAPE_FEATURES, expression_shape
from multimodal_ser.labels import EMOTIONS

logger = logging.getLogger("face_shape")

PAD_PX, MESH_INPUT_PX = 24, 240


def mesh_shapes(images: np.ndarray) -> np.ndarray:
    """``(n, len(SHAPE_FEATURES))`` shape values of uint8 grayscale faces ``(n, h, w)``; NaN rows where no mesh is found."""
    from mediapipe.python.solutions import face_mesh

    out = np.full((len(images), len(SHAPE_FEATURES)), np.nan)
    with face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False, min_detection_confidence=0.3) as mesh:
        for i, image in enumerate(tqdm(images, desc="face mesh", unit="image")):
            padded = cv2.copyMakeBorder(image, PAD_PX, PAD_PX, PAD_PX, PAD_PX, cv2.BORDER_REPLICATE)
            rgb = cv2.cvtColor(cv2.resize(padded, (MESH_INPUT_PX, MESH_INPUT_PX), interpolation=cv2.INTER_CUBIC), cv2.COLOR_GRAY2RGB)
            found = mesh.process(rgb).multi_face_landmarks
            if found:
                landmarks = np.array([(p.x, p.y) for p in found[0].landmark]) * MESH_INPUT_PX
                out[i] = expression_shape(landmarks)
    return out


def split(data: Path, name: str, model: ExpressionModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(log-probabilities (n, 7), shape (n, 10), labels (n,))`` of one FER2013 folder."""
    images, labels = read_label_folder(data / "fer2013" / name, size=48)
    probabilities = np.concatenate([model.predict(images[i : i + 512])[0] for i in range(0, len(images), 512)])
    return np.log(np.clip(probabilities, 1e-6, 1.0)), mesh_shapes(images), np.array(labels, dtype=object)


def design(log_p: np.ndarray, shape: np.ndarray | None, scaler: StandardScaler | None, fill: np.ndarray | None) -> np.ndarray:
    if shape is None:
        return log_p
    missing = np.isnan(shape).any(axis=1)
    filled = np.where(np.isnan(shape), fill, shape)
    return np.hstack([log_p, scaler.transform(filled), missing[:, None].astype(float)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    began = time.monotonic()
    model = ExpressionModel()
    val_p, val_s, val_y = split(args.data, "val", model)
    test_p, test_s, test_y = split(args.data, "test", model)
    logger.info("mesh found on %.1f%% of PublicTest and %.1f%% of PrivateTest faces",
                100 * (~np.isnan(val_s).any(1)).mean(), 100 * (~np.isnan(test_s).any(1)).mean())
    fill = np.nanmean(val_s, axis=0)
    scaler = StandardScaler().fit(np.where(np.isnan(val_s), fill, val_s))
    rows = {"the network alone (argmax)": test_p.argmax(1)}
    for name, with_shape in (("crop: its log-probabilities, re-weighted on PublicTest", False),
                             ("crop + shape", True)):
        x_val = design(val_p, val_s if with_shape else None, scaler, fill)
        x_test = design(test_p, test_s if with_shape else None, scaler, fill)
        fit = LogisticRegressionCV(Cs=8, cv=5, class_weight="balanced", max_iter=3000, scoring="balanced_accuracy").fit(x_val, val_y)
        rows[name] = np.array([EMOTIONS.index(label) for label in fit.predict(x_test)])
    print(f"\nFER2013 PrivateTest, {len(test_y)} faces (mesh found on {(~np.isnan(test_s).any(1)).sum()})\n")
    print("| model | accuracy | UA | 95% CI | " + " | ".join(f"recall {e}" for e in EMOTIONS) + " |")
    print("|---|---|---|---|" + "---|" * len(EMOTIONS))
    for name, predicted in rows.items():
        labels = [EMOTIONS[i] for i in predicted]
        s = metrics.summary(list(test_y), labels, labels=EMOTIONS, seed=0)
        recall = [np.mean(predicted[test_y == e] == k) for k, e in enumerate(EMOTIONS)]
        print(f"| {name} | {s['wa']:.3f} | {s['ua']:.3f} | [{s['ua_ci'][0]:.3f}, {s['ua_ci'][1]:.3f}] | "
              + " | ".join(f"{r:.2f}" for r in recall) + " |")
    print("\nMean shape per true class on PublicTest (faces with a mesh):\n")
    print("| class | " + " | ".join(SHAPE_FEATURES) + " |")
    print("|---|" + "---|" * len(SHAPE_FEATURES))
    for e in EMOTIONS:
        inside = (val_y == e) & ~np.isnan(val_s).any(1)
        print(f"| {e} | " + " | ".join(f"{v:.3f}" for v in val_s[inside].mean(0)) + " |")
    print(f"\n{time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
