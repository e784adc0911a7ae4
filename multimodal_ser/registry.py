"""The models of a run, loaded on first use: the one place that builds them.

:class:`multimodal_ser.pipeline.Analyzer` and evaluation
(:func:`multimodal_ser.evaluation.predict_manifest`) both take their models from a
:class:`Models`, so a recording analysed by ``mser analyze`` and an item scored by
``mser evaluate`` go through the same encoder, transcriber, voice, text and face models built
the same way.

    Whisper (openai-whisper) ─► SpeechEncoder ─┬─► transcriber (CTranslate2 or openai-whisper)
                                               └─► VoiceEmotionModel (one per head file)
    SpeechDetector (VAD) · TextEmotionModel · FaceAnalyzer · fusion

Constructing a :class:`Models` does no I/O; each model is built when first asked for, and kept.

Example::

    models = Models(asr_model="base", language="en", threads=2)
    window = models.encoder().encode(audio[: 30 * 16000], offset=0.0)
    segments = models.transcriber().transcribe(window)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .errors import MserError
from .files import sha256_file
from .validate import valid_int


class Models:
    """The branches' models for one set of options, each loaded on first use.

    Args:
        asr_model: packaged Whisper name (``base``, ``tiny.en``), a CTranslate2 folder, an
            openai-whisper ``.pt`` file, or a hub name: the speech encoder and the transcriber.
        asr_engine: ``ctranslate2`` or ``openai-whisper`` (:data:`multimodal_ser.options.ENGINES`).
        language: spoken language (ISO code) for the transcriber; None detects it.
        beam_size: the transcriber's beam.
        word_timestamps: the transcriber times each word (False: text only, which is all
            ``mser evaluate`` reads, and saves an alignment pass per window).
        threads: CPU threads for the encoder and the decoder (>= 1).
        fps: video frames per second the face analyzer reads, in (0, 30].
        text_head: the text head file; None uses the packaged one.
        fusion, fusion_weights: what :func:`multimodal_ser.fusion.load_fusion` loads.

    Raises:
        ValueError: ``threads`` below 1 or ``fps`` out of range.
    """

    def __init__(
        self,
        *,
        asr_model: str = "base",
        asr_engine: str = "ctranslate2",
        language: str | None = None,
        beam_size: int = 5,
        word_timestamps: bool = True,
        threads: int = 2,
        fps: float = 4.0,
        text_head: str | os.PathLike | None = None,
        fusion: str = "default",
        fusion_weights: str | os.PathLike | None = None,
    ):
        self.threads = valid_int("threads", threads, 1)
        if not 0 < fps <= 30:
            raise ValueError(f"fps must be in (0, 30], not {fps}")
        self.asr_model = asr_model
        self.asr_engine = asr_engine
        self.language = language
        self.beam_size = beam_size
        self.word_timestamps = word_timestamps
        self.fps = fps
        self.text_head = text_head
        self.fusion_kind = fusion
        self.fusion_weights = fusion_weights
        self._loaded: dict[str, object] = {}

    def _get(self, name: str, make: Callable[[], object]):
        if name not in self._loaded:
            self._loaded[name] = make()
        return self._loaded[name]

    def loaded(self, name: str) -> bool:
        """Whether a model has been built: ``name`` is the method's name (``whisper``, ``encoder``,
        ``transcriber``, ``vad``, ``speakers``, ``text``, ``face``, ``fusion``; ``voice`` for the packaged voice
        head, ``voice:<head file>`` for another)."""
        return name in self._loaded

    # --- speech ---------------------------------------------------------------------------------

    def whisper(self):
        """The openai-whisper model (float32, CPU) whose encoder every speech branch shares."""
        import torch

        from .weights import load_openai_whisper

        def make():
            torch.set_num_threads(self.threads)
            return load_openai_whisper(self.asr_model)

        return self._get("whisper", make)

    def encoder(self):
        """The shared :class:`~multimodal_ser.encoder.SpeechEncoder`."""
        from .encoder import SpeechEncoder

        return self._get("encoder", lambda: SpeechEncoder(self.whisper()))

    def ct2_dir(self) -> Path:
        """The CTranslate2 folder of ``asr_model``.

        Raises:
            MserError: ``asr_model`` is neither a packaged name nor a CTranslate2 folder.
        """
        from .weights import PACKAGED_WHISPER, ctranslate2_dir

        def make():
            if self.asr_model in PACKAGED_WHISPER:
                return ctranslate2_dir(self.asr_model)
            if (Path(self.asr_model) / "model.bin").is_file():
                return Path(self.asr_model)
            raise MserError(
                f"the ctranslate2 engine needs a packaged Whisper name ({', '.join(PACKAGED_WHISPER)}) or a CTranslate2 "
                f"model folder; {self.asr_model!r} is neither (mser analyze: use --asr-engine openai-whisper)"
            )

        return self._get("ct2", make)

    def whisper_id(self) -> dict:
        """``{"name", "sha256"}`` of the CTranslate2 Whisper, known without loading it (for cache keys)."""
        from .weights import PACKAGED_WHISPER

        packaged = PACKAGED_WHISPER.get(self.asr_model)
        if packaged is not None:
            return {"name": self.asr_model, "sha256": [sha for _, _, sha in packaged.parts]}
        return {"name": str(Path(self.asr_model).resolve()), "sha256": sha256_file(self.ct2_dir() / "model.bin")}

    def _new_transcriber(self):
        from .asr import AsrOptions, CTranslate2Transcriber, OpenAIWhisperTranscriber
        from .options import ENGINES

        options = AsrOptions(language=self.language, beam_size=self.beam_size, word_timestamps=self.word_timestamps)
        if self.asr_engine == "openai-whisper":
            return OpenAIWhisperTranscriber(self.whisper(), options=options)
        if self.asr_engine != "ctranslate2":
            raise ValueError(f"asr_engine must be one of {ENGINES}, not {self.asr_engine!r}")
        return CTranslate2Transcriber(self.ct2_dir(), multilingual=self.whisper().is_multilingual, options=options, threads=self.threads)

    def transcriber(self):
        """The shared transcriber of ``asr_engine``, built once (loading CTranslate2's Whisper takes
        a second). It keeps the language it detects: call its ``new_recording()`` before each recording."""
        return self._get("transcriber", self._new_transcriber)

    def vad(self):
        """The shared :class:`~multimodal_ser.vad.SpeechDetector` (``reset()`` it before streaming a new recording)."""
        from .vad import SpeechDetector

        return self._get("vad", SpeechDetector)

    def speakers(self):
        """The CAM++ speaker encoder for diarisation (:class:`~multimodal_ser.diarisation.SpeakerEncoder`)."""
        from .diarisation import SpeakerEncoder

        return self._get("speakers", SpeakerEncoder)

    def voice(self, head: str | os.PathLike | None = None):
        """The :class:`~multimodal_ser.voice.VoiceEmotionModel` with ``head`` (None: the packaged
        head); one instance per head file."""
        from .voice import VoiceEmotionModel

        if head is None:
            return self._get("voice", VoiceEmotionModel)
        return self._get(f"voice:{head}", lambda: VoiceEmotionModel(head_path=head))

    # --- words, face, fusion --------------------------------------------------------------------

    def text(self):
        """The :class:`~multimodal_ser.text.TextEmotionModel` with ``text_head``."""
        from .text import TextEmotionModel

        return self._get("text", lambda: TextEmotionModel(head_path=self.text_head))

    def face(self):
        """The :class:`~multimodal_ser.face.FaceAnalyzer` reading ``fps`` frames per second."""
        from .face import FaceAnalyzer

        return self._get("face", lambda: FaceAnalyzer(fps=self.fps))

    def fusion(self):
        """The fusion :func:`~multimodal_ser.fusion.load_fusion` gives for ``fusion`` and ``fusion_weights``."""
        from .fusion import load_fusion

        return self._get("fusion", lambda: load_fusion(self.fusion_kind, self.fusion_weights))
