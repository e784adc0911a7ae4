"""multimodal-ser: emotion timelines from the voice, the words and the face of recorded speech."""

__version__ = "0.1.0"

from .pipeline import AnalysisOptions, Analyzer, analyze
from .timeline import Timeline, load_timeline

__all__ = ["AnalysisOptions", "Analyzer", "Timeline", "analyze", "load_timeline", "__version__"]
