"""What decides an analysis: :class:`AnalysisOptions`, its choices as ``Literal`` types, and the
command-line flags derived from it (standard library only, so ``mser --help`` stays fast)."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable
from typing import Literal

from .labels import MODALITIES
from .validate import default_threads, valid_fps, valid_int

Modality = Literal["audio", "text", "face"]
AsrEngine = Literal["ctranslate2", "openai-whisper"]
FusionKind = Literal["default", "late", "attention", "equal"]
VoiceReference = Literal["none", "collection"]

ENGINES: tuple[str, ...] = typing.get_args(AsrEngine)
FUSIONS: tuple[str, ...] = typing.get_args(FusionKind)
VOICE_REFERENCES: tuple[str, ...] = typing.get_args(VoiceReference)
"""What a voice head reads segment features against: ``none``, the features as computed;
``collection``, the features less the mean of the collection they come from (one corpus, one call
centre's calls, one study's recordings; :func:`multimodal_ser.voice.centre_by_collection`), so
that what a whole collection shares (language, channel, set-up, speaking style) is not read as emotion."""


def _option(default, help: str):
    """A field with its command-line help; a callable ``default`` is a default factory."""
    if callable(default):
        return dataclasses.field(default_factory=default, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class AnalysisOptions:
    """Everything that decides an analysis; recorded in every output file."""

    modalities: tuple[Modality, ...] = _option(MODALITIES, "branches to run: a comma-separated subset of audio,text,face")
    asr_model: str = _option(
        "base", "packaged Whisper name (base, tiny.en), a CTranslate2 folder, an openai-whisper .pt, or a hub name (needs a network)"
    )
    asr_engine: AsrEngine = _option("ctranslate2", "decoder for the shared encoder pass; both decode the same encoder output")
    language: str | None = _option(None, "spoken language as an ISO code (default: detect)")
    beam_size: int = _option(5, "ASR beam size")
    fps: float = _option(4.0, "video frames per second analysed for faces")
    fusion: FusionKind = _option(
        "default",
        "how branches are combined: default = the packaged choice (models/late_fusion.md); late; attention; "
        "equal = equal weights without priors, for comparison",
    )
    fusion_weights: str | None = _option(
        None, "late: JSON weights from 'mser train fusion'; attention: a module file (default: the packaged one)"
    )
    gap_window: float = _option(5.0, "seconds: silent stretches are covered by windows at most this long")
    diarise: bool = _option(True, "label speakers S1, S2... by their voices (CAM++) when no transcript or caller names them")
    speakers: int | None = _option(None, "number of speakers for diarisation (default: estimated)")
    pack: bool = _option(
        False,
        "recordings of at most 8 s, several in one run (mser batch, or several MEDIA), are encoded and transcribed "
        "together: about 2x faster, results within the noise of cutting each 10 ms later (README, Batch)",
    )
    voice_reference: str | None = _option(
        None,
        "a collection's voice reference (.npz from 'mser voice-reference'): the voice is read against that "
        "collection's mean by the head trained that way (README, Voice reference); default: as computed",
    )
    threads: int = _option(default_threads, "CPU threads (default: the machine's cores, at most 4)")

    def __post_init__(self):
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown or not self.modalities:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, not {self.modalities}")
        if self.asr_engine not in ENGINES:
            raise ValueError(f"asr_engine must be one of {ENGINES}, not {self.asr_engine!r}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, not {self.fusion!r}")
        if self.fusion_weights is not None and self.fusion in ("default", "equal"):
            raise ValueError(f"fusion_weights needs fusion 'late' or 'attention', not {self.fusion!r}")
        object.__setattr__(self, "modalities", tuple(self.modalities))
        object.__setattr__(self, "fps", valid_fps(self.fps))
        valid_int("beam_size", self.beam_size, 1)
        valid_int("threads", self.threads, 1)
        if self.speakers is not None:
            if not self.diarise:
                raise ValueError(f"speakers={self.speakers} needs diarise=True")
            valid_int("speakers", self.speakers, 1)
        if not self.gap_window > 0:
            raise ValueError(f"gap_window must be positive, not {self.gap_window}")
        if self.voice_reference is not None and "audio" not in self.modalities:
            raise ValueError("voice_reference needs the audio modality")


def parse_modalities(text: str) -> tuple[str, ...]:
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    if not names or set(names) - set(MODALITIES):
        raise argparse.ArgumentTypeError(f"must be a comma-separated subset of {','.join(MODALITIES)}, not {text!r}")
    return names


def _argument(field: dataclasses.Field, annotation) -> dict:
    """``add_argument`` keywords for one field, from its type and default."""
    default = field.default_factory() if field.default is dataclasses.MISSING else field.default
    shown = ",".join(default) if isinstance(default, tuple) else default
    help = field.metadata["help"] + ("" if default is None or "default:" in field.metadata["help"] else f" (default: {shown})")
    kwargs = {"default": default, "help": help.replace("%", "%%")}
    kind = annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # X | None
        kind = next(a for a in typing.get_args(annotation) if a is not type(None))
    if kind is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(annotation) is tuple:
        kwargs["type"] = parse_modalities
    elif typing.get_origin(kind) is Literal:
        kwargs["choices"] = typing.get_args(kind)
    else:
        kwargs["type"] = kind
    return kwargs


def add_option_arguments(parser: argparse.ArgumentParser, names: Iterable[str] | None = None) -> None:
    """Add a ``--flag`` to ``parser`` for each named :class:`AnalysisOptions` field (all when None)."""
    hints = typing.get_type_hints(AnalysisOptions)
    fields = {f.name: f for f in dataclasses.fields(AnalysisOptions)}
    for name in fields if names is None else names:
        parser.add_argument("--" + name.replace("_", "-"), **_argument(fields[name], hints[name]))


def option_values(args: argparse.Namespace, names: Iterable[str] | None = None) -> dict:
    """``{field: value}`` of the named :class:`AnalysisOptions` fields parsed by :func:`add_option_arguments`."""
    names = [f.name for f in dataclasses.fields(AnalysisOptions)] if names is None else names
    return {name: getattr(args, name) for name in names}
