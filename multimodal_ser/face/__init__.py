"""The face branch: frames table, expression model and segment reduction."""

from .analyzer import FRAME_COLUMNS, FaceAnalyzer
from .expression import ExpressionModel
from .segments import face_segment_table

__all__ = ["FRAME_COLUMNS", "ExpressionModel", "FaceAnalyzer", "face_segment_table"]
