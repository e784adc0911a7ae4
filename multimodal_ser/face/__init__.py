"""The face branch, one module per stage of the data flow.

:mod:`.detection` (MediaPipe faces and meshes) -> :mod:`.tracking` (face ids) -> :mod:`.crops`
(aligned crop) -> :mod:`.expression` (mini-Xception, rebuilt by :mod:`.keras_port`) and
:mod:`.geometry` (head pose, eyes, gaze, mouth) -> :mod:`.frames` (the frames table) ->
:mod:`.segments` (the face columns of the segment grid). :mod:`.analyzer` runs the frame stages.
"""

from .analyzer import FaceAnalyzer
from .expression import ExpressionModel
from .frames import FRAME_COLUMNS
from .segments import face_segment_table

__all__ = ["FRAME_COLUMNS", "ExpressionModel", "FaceAnalyzer", "face_segment_table"]
