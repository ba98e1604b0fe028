"""The pieces of `georeasoner ask` around the cascade: argument checks, output paths, progress
lines on stderr, the answer JSON and the summary on stdout. `cli.cmd_ask` runs them in order.

Light on purpose (no torch, no GDAL at import): `georeasoner --help` and argument errors stay
instant.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..core.exit_codes import EXIT_CANTCREAT, EXIT_DATAERR, EXIT_NOINPUT, EXIT_USAGE, CommandError
from ..core.files import atomic_write_text
from ..core.protocol import GRANULARITIES

MAX_RECORDED_OUTPUT_BYTES = 1_000_000

__all__ = ["MAX_RECORDED_OUTPUT_BYTES", "Progress", "parse_outputs", "parse_bands", "output_paths",
           "read_recorded_output", "refuse_existing_outputs", "write_answer_json", "remove_files", "print_summary"]


class Progress:
    """Stage lines on stderr so slow steps (model load, generation) show they are alive."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.started: Optional[float] = None
        self.timings: Dict[str, float] = {}

    def stage(self, name: str, label: str) -> "_Stage":
        return _Stage(self, name, label)

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)


class _Stage:
    def __init__(self, progress: Progress, name: str, label: str):
        self.progress, self.name, self.label = progress, name, label

    def __enter__(self):
        self.start = time.perf_counter()
        if not self.progress.quiet:
            print(f"... {self.label}", file=sys.stderr, end="", flush=True)
        return self

    def __exit__(self, exc_type, exc, tb):
        elapsed = time.perf_counter() - self.start
        self.progress.timings[self.name] = elapsed
        if not self.progress.quiet:
            print(f" {'done' if exc is None else 'failed'} ({elapsed:.2f} s)", file=sys.stderr, flush=True)
        return False


def parse_outputs(text: str) -> List[str]:
    items = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [t for t in items if t not in GRANULARITIES]
    if unknown or not items:
        raise CommandError(f"--outputs takes a comma-separated subset of {','.join(GRANULARITIES)}; "
                           f"got {text!r}", EXIT_USAGE)
    return list(dict.fromkeys(items))


def parse_bands(text: Optional[str]) -> Optional[Tuple[int, ...]]:
    if text is None:
        return None
    try:
        bands = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise CommandError(f"--bands takes three band numbers like 4,3,2; got {text!r}", EXIT_USAGE) from None
    if len(bands) != 3 or any(b < 1 for b in bands):
        raise CommandError(f"--bands takes three band numbers (1-based) like 4,3,2; got {text!r}", EXIT_USAGE)
    return bands


def output_paths(out: str) -> Dict[str, Path]:
    """Where `ask` writes: vectors, the mask GeoTIFF and the answer JSON."""
    path = Path(out)
    lower = out.lower()
    if lower.endswith((".gpkg", ".shp")):
        stem = path.with_suffix("")
        return {"vectors": path, "mask": Path(f"{stem}_mask.tif"), "answer": Path(f"{stem}_answer.json")}
    if path.suffix and not path.is_dir():
        raise CommandError(f"-o/--out must end in .gpkg or .shp, or be a folder; got {out!r}", EXIT_USAGE)
    return {"vectors": path, "mask": path / "mask.tif", "answer": path / "answer.json"}


def read_recorded_output(path: str) -> str:
    file = Path(path)
    if not file.is_file():
        raise CommandError(f"--reasoner-output: {path} does not exist or is not a file", EXIT_NOINPUT)
    if file.stat().st_size > MAX_RECORDED_OUTPUT_BYTES:
        raise CommandError(f"--reasoner-output: {path} is larger than {MAX_RECORDED_OUTPUT_BYTES} bytes; "
                           "that is not a model answer", EXIT_DATAERR)
    data = file.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError(f"--reasoner-output: {path} is not UTF-8 text", EXIT_DATAERR) from None


def refuse_existing_outputs(paths: Dict[str, Path], outputs: List[str], overwrite: bool) -> None:
    """Fail before minutes of model time, not after: an existing output needs --overwrite."""
    if overwrite:
        return
    candidates = [paths["answer"]]
    if "masks" in outputs:
        candidates.append(paths["mask"])
    vectors = paths["vectors"]
    if str(vectors).lower().endswith(".gpkg") and any(o in outputs for o in ("boxes", "points", "contours")):
        candidates.append(vectors)
    existing = [str(p) for p in candidates if p.exists()]
    if existing:
        raise CommandError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace, or choose another -o",
                           EXIT_CANTCREAT)


def write_answer_json(answer, path: Path, overwrite: bool) -> Path:
    from .writers import OutputError
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return atomic_write_text(path, answer.to_json(indent=2), overwrite=overwrite)
    except FileExistsError:
        raise OutputError(f"{path} already exists; pass --overwrite to replace it") from None
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def remove_files(paths: List[Path]) -> None:
    for p in paths:
        try:
            p.unlink()
        except OSError:
            pass


def print_summary(answer, written: List[Path], raster) -> None:
    print(f"Question: {answer.question}")
    print(f"Profile: {answer.profile}   models: {', '.join(f'{k}={v}' for k, v in answer.models.items())}")
    print("Reasoning:")
    print("  " + (answer.reasoning.strip().replace("\n", "\n  ") if answer.reasoning.strip() else "(none given)"))
    print(f"Objects: {len(answer.objects)}  (parse: {answer.parse_status})")
    for obj in answer.objects:
        box = ", ".join(f"{v:.1f}" for v in obj.box) if obj.box else "-"
        area = sum(p.area() for p in obj.polygons)
        score = f"{obj.score:.3f}" if obj.score is not None else "-"
        print(f"  #{obj.index}: box [{box}] px, {len(obj.points)} point(s), score {score}, "
              f"contour area {area:.0f} px")
    for problem in answer.parse_problems:
        print(f"  note: {problem}")
    for warning in answer.warnings:
        print(f"  warning: {warning}")
    print(f"CRS: {raster.crs_name or 'none (pixel coordinates)'}")
    print("Written:")
    for path in written:
        print(f"  {path}")
