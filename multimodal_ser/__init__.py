"""multimodal-ser: emotion timelines from the voice, the words and the face of recorded speech."""

__version__ = "0.1.0"
