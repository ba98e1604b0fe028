"""The tiled job engine: a plan's tiles through reasoning and segmentation, merged into one answer.

    source (windowed reads) -> [reason x N] -> [segment + vectorize] -> journal -> merge

The three stages run in their own threads joined by small bounded queues, so reading, reasoning
and segmentation overlap and at most about ``2 * concurrency + 5`` tiles are in memory whatever
the raster's size. ``concurrency`` reasoning threads send that many tiles at once to an
OpenAI-compatible endpoint (vLLM spreads them over its GPUs and nodes); an in-process reasoner
serialises them on its own lock. SAM2 encodes each tile once and decodes all of the tile's prompts
in one call (``Segmenter.segment``). Tiles whose pixels are all nodata are never sent.

The same engine serves the CLI (tiles from rasterio) and the service's jobs (tiles uploaded by a
client, or read from a raster path on a local backend).
"""
from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from ...core.profiles import SAM_BOX_AND_CENTER, get_profile
from ...core.protocol import (PARSE_EMPTY, PARSE_INVALID, PARSE_NO_ANSWER, PARSE_OK, PARSE_PARTIAL, Answer,
                              Polygon)
from ...core.tiling import DEFAULT_FOCUS_MARGIN, STRATEGY_FOCUS, TilePlan, focus_selection
from ..cascade import AskCancelled, AskOptions, Cascade, CascadeError, resize_to_frame
from ..prompts import SamPrompt
from ..vectorize import mask_to_polygons
from .batch import generate_batch, supports_batches
from .journal import Journal, MemoryJournal
from .merge import merge_records

EventCallback = Callable[[str, dict], None]
_END = object()


@dataclass
class TiledRequest:
    question: str
    profile: Optional[str] = None
    options: AskOptions = field(default_factory=AskOptions)
    strategy: str = "grid"
    focus_margin: float = DEFAULT_FOCUS_MARGIN
    concurrency: int = 1
    recorded_output: Optional[str] = None  # replay one saved answer for every tile (tests, demos)


@dataclass
class TiledResult:
    answer: Answer
    plan: TilePlan  # the tiles actually asked (focus: the selection)
    records: List[Dict[str, Any]]
    resumed: int  # tiles taken from the journal
    asked: int  # tiles sent to the reasoner in this run
    nodata: int  # tiles skipped because every pixel is nodata
    cancelled: bool = False
    timings: Dict[str, float] = field(default_factory=dict)


def _shift_polygon(poly: Polygon, dx: int, dy: int) -> Dict[str, Any]:
    return {"exterior": [[x + dx, y + dy] for x, y in poly.exterior],
            "holes": [[[x + dx, y + dy] for x, y in ring] for ring in poly.holes]}


def _box_has_data(valid: np.ndarray, box) -> bool:
    height, width = valid.shape
    x1, y1 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x2, y2 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
    return x2 > x1 and y2 > y1 and bool(valid[y1:y2, x1:x2].any())


class TiledEngine:
    """Runs tiled questions with one reasoner and one segmenter (either may be absent)."""

    def __init__(self, reasoner=None, segmenter=None, profile: str = "remotereasoner"):
        self.reasoner = reasoner
        self.segmenter = segmenter
        self.default_profile = profile
        # Parsing and frame mapping exactly as the one-image cascade does (recorded-answer path).
        self._parser = Cascade(reasoner=None, segmenter=None, profile=profile)

    # -- one tile
    def _reason(self, prof, request: TiledRequest, rgb, stop) -> str:
        if request.recorded_output is not None:
            return request.recorded_output
        if self.reasoner is None:
            raise CascadeError("no reasoning model is loaded; pass a model, --reasoner-url or a recorded answer")
        height, width = rgb.shape[:2]
        frame = prof.frame.frame_for(width, height)
        image = resize_to_frame(rgb, frame.frame_width, frame.frame_height, prof.frame.kind)
        opts = request.options
        return self.reasoner.generate(image, prof.messages(request.question), max_new_tokens=opts.max_new_tokens,
                                      temperature=opts.temperature, top_p=opts.top_p, seed=opts.seed,
                                      should_stop=stop)

    def _reason_batch(self, prof, request: TiledRequest, images, stop) -> List[str]:
        """Answers for several tiles, one generate call per frame size."""
        frames = []
        for rgb in images:
            height, width = rgb.shape[:2]
            frame = prof.frame.frame_for(width, height)
            frames.append(resize_to_frame(rgb, frame.frame_width, frame.frame_height, prof.frame.kind))
        answers: List[Optional[str]] = [None] * len(frames)
        opts = request.options
        for size in dict.fromkeys(f.size for f in frames):
            group = [i for i, f in enumerate(frames) if f.size == size]
            texts = generate_batch(self.reasoner, [frames[i] for i in group], prof.messages(request.question),
                                   max_new_tokens=opts.max_new_tokens, temperature=opts.temperature,
                                   top_p=opts.top_p, seed=opts.seed, should_stop=stop)
            for i, text in zip(group, texts):
                answers[i] = text
        return answers

    def _segment(self, prof, request: TiledRequest, tile, rgb, valid, raw: str) -> Dict[str, Any]:
        """Parse the tile's answer, segment all its prompts in one call, vectorise: a journal record."""
        started = time.perf_counter()
        answer = self._parser.run(rgb, request.question, profile=prof.name, raw_output=raw, valid=valid,
                                  options=replace(request.options, granularities=("boxes", "points"))).answer
        wants_pixels = any(g in request.options.granularities for g in ("masks", "contours"))
        polygons: List[List[Polygon]] = [[] for _ in answer.objects]
        on_nodata = [valid is not None and obj.box is not None and not _box_has_data(valid, obj.box)
                     for obj in answer.objects]
        if wants_pixels and answer.objects:
            if self.segmenter is None:
                raise CascadeError("masks and contours need a segmentation model; none is loaded")
            # One encode of the tile, every prompt decoded in the same call (Segmenter.segment).
            prompts = [SamPrompt(box=o.box, points=list(o.points)) for o in answer.objects]
            results = self.segmenter.segment(rgb, prompts, multimask=prof.sam_multimask)
            opts = request.options
            for n, (obj, result) in enumerate(zip(answer.objects, results)):
                mask = np.asarray(result.mask, dtype=bool)
                if valid is not None:
                    segmented = bool(mask.any())
                    mask = mask & valid
                    on_nodata[n] = on_nodata[n] or (segmented and not mask.any())
                polygons[n] = mask_to_polygons(mask, opts.simplify_tolerance, opts.min_area)
                # The boxes-only cascade above filled a missing score with box_score; a mask outranks it
                # (Cascade.run's order: the model's own score, the mask's, the box's).
                if obj.score is None or obj.score == obj.box_score:
                    obj.score = float(result.score)
        objects = []
        for obj, parts, nodata in zip(answer.objects, polygons, on_nodata):
            if obj.box is None or nodata:
                continue  # an object only where the tile has no data is the model seeing the black fill
            objects.append({
                "box": [obj.box[0] + tile.x, obj.box[1] + tile.y, obj.box[2] + tile.x, obj.box[3] + tile.y],
                "points": [[p[0] + tile.x, p[1] + tile.y] for p in obj.points],
                "score": obj.score, "box_score": obj.box_score, "label": obj.label,
                "polygons": [_shift_polygon(p, tile.x, tile.y) for p in parts],
            })
        record = {"tile": tile.index, "key": tile.key, "window": [tile.x, tile.y, tile.width, tile.height],
                  "reasoning": answer.reasoning, "raw_output": answer.raw_output,
                  "parse_status": answer.parse_status, "problems": list(answer.parse_problems),
                  "warnings": list(answer.warnings), "objects": objects}
        record["_seconds"] = time.perf_counter() - started
        return record

    # -- focus: the overview
    def _overview(self, source, plan: TilePlan, prof, request: TiledRequest, stop) -> Dict[str, Any]:
        rgb, valid = source.overview(plan, plan.tile_size)
        raw = self._reason(prof, request, rgb, stop)
        cascade = Cascade(reasoner=None, segmenter=None, profile=prof.name)
        answer = cascade.run(rgb, request.question, profile=prof.name, raw_output=raw, valid=valid,
                             options=replace(request.options, granularities=("boxes",))).answer
        sx, sy = plan.width / rgb.shape[1], plan.height / rgb.shape[0]
        boxes = [[o.box[0] * sx, o.box[1] * sy, o.box[2] * sx, o.box[3] * sy] for o in answer.objects if o.box]
        return {"size": [int(rgb.shape[1]), int(rgb.shape[0])], "boxes": boxes, "reasoning": answer.reasoning,
                "raw_output": answer.raw_output, "parse_status": answer.parse_status,
                "problems": list(answer.parse_problems)}

    # -- the whole run
    def run(self, source, plan: TilePlan, request: TiledRequest, journal: Optional[Journal] = None,
            on_event: Optional[EventCallback] = None, should_stop: Optional[Callable[[], bool]] = None) -> TiledResult:
        request.options.validate()
        prof = get_profile(request.profile or self.default_profile)
        emit = on_event or (lambda kind, data: None)
        outer_stop = should_stop or (lambda: False)
        failed = threading.Event()
        stop = lambda: failed.is_set() or outer_stop()  # noqa: E731
        journal = journal or MemoryJournal("", {}).open()
        started = time.perf_counter()
        timings: Dict[str, float] = {}

        overview = None
        if request.strategy == STRATEGY_FOCUS:
            overview = journal.overview
            if overview is None:
                emit("stage", {"stage": "overview"})
                t0 = time.perf_counter()
                overview = self._overview(source, plan, prof, request, stop)
                timings["overview"] = time.perf_counter() - t0
                journal.add_overview(overview)
            plan = focus_selection(plan, [tuple(b) for b in overview["boxes"]], request.focus_margin)
            emit("focus", {"selected": len(plan.selected), "grid": plan.grid_size, "note": plan.notes[-1]})

        done: Dict[int, Dict[str, Any]] = {i: r for i, r in journal.tiles.items() if i in set(plan.selected)}
        todo = [t for t in plan.tiles if t.index not in done]
        resumed = len(done)
        total = len(plan.selected)
        emit("plan", {"total": total, "resumed": resumed, "todo": len(todo), "grid": plan.grid_size})

        counters = {"asked": 0, "nodata": 0, "objects": sum(len(r.get("objects", [])) for r in done.values())}
        errors: List[BaseException] = []
        concurrency = max(1, int(request.concurrency))
        # An in-process model takes `concurrency` tiles per generate call (one worker); an endpoint
        # gets `concurrency` requests at once (that many workers).
        batching = request.recorded_output is None and concurrency > 1 and supports_batches(self.reasoner)
        workers = 1 if batching else concurrency
        to_reason: "queue.Queue" = queue.Queue(maxsize=concurrency + 1)
        to_segment: "queue.Queue" = queue.Queue(maxsize=2)
        finished: "queue.Queue" = queue.Queue()
        stage_seconds = {"read": 0.0, "reason": 0.0, "segment": 0.0}
        seconds_lock = threading.Lock()

        def add_seconds(name, value):
            with seconds_lock:
                stage_seconds[name] += value

        def fail(exc: BaseException):
            errors.append(exc)
            failed.set()

        def reader():
            try:
                iterator = source.iter_tiles(plan, todo, stop)
                while True:
                    t0 = time.perf_counter()
                    item = next(iterator, None)
                    add_seconds("read", time.perf_counter() - t0)
                    if item is None or stop():
                        break
                    tile, rgb, valid = item
                    if valid is not None and not valid.any():
                        finished.put({"tile": tile.index, "key": tile.key, "window": [tile.x, tile.y, tile.width,
                                      tile.height], "skipped": "nodata", "objects": [], "reasoning": "",
                                      "parse_status": PARSE_EMPTY, "problems": [], "warnings": []})
                        continue
                    to_reason.put((tile, rgb, valid))
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                fail(exc)
            finally:
                for _ in range(workers):
                    to_reason.put(_END)

        def reasoner_worker():
            while True:
                item = to_reason.get()
                if item is _END:
                    to_segment.put(_END)
                    return
                if stop():
                    continue
                tile, rgb, valid = item
                try:
                    t0 = time.perf_counter()
                    raw = self._reason(prof, request, rgb, stop)
                    add_seconds("reason", time.perf_counter() - t0)
                    if stop():
                        continue
                    to_segment.put((tile, rgb, valid, raw))
                except BaseException as exc:  # noqa: BLE001
                    fail(exc)

        def batch_worker():
            ended = False
            while not ended:
                first = to_reason.get()
                if first is _END:
                    break
                batch = [first]
                while len(batch) < concurrency:
                    try:
                        item = to_reason.get(timeout=0.05)  # a moment for the reader to fill the batch
                    except queue.Empty:
                        break
                    if item is _END:
                        ended = True
                        break
                    batch.append(item)
                if stop():
                    continue
                try:
                    t0 = time.perf_counter()
                    raws = self._reason_batch(prof, request, [rgb for _, rgb, _ in batch], stop)
                    add_seconds("reason", time.perf_counter() - t0)
                    for (tile, rgb, valid), raw in zip(batch, raws):
                        if not stop():
                            to_segment.put((tile, rgb, valid, raw))
                except BaseException as exc:  # noqa: BLE001
                    fail(exc)
            to_segment.put(_END)

        def segment_worker():
            ends = 0
            while ends < workers:
                item = to_segment.get()
                if item is _END:
                    ends += 1
                    continue
                if stop():
                    continue
                tile, rgb, valid, raw = item
                try:
                    record = self._segment(prof, request, tile, rgb, valid, raw)
                    add_seconds("segment", record.pop("_seconds"))
                    record["asked"] = True
                    finished.put(record)
                except BaseException as exc:  # noqa: BLE001
                    fail(exc)
            finished.put(_END)

        threads = [threading.Thread(target=reader, name="tiles-read", daemon=True),
                   threading.Thread(target=segment_worker, name="tiles-segment", daemon=True)]
        threads += [threading.Thread(target=batch_worker if batching else reasoner_worker,
                                     name=f"tiles-reason-{i}", daemon=True) for i in range(workers)]
        for thread in threads:
            thread.start()
        run_started = time.perf_counter()
        while True:
            record = finished.get()
            if record is _END:
                break
            if failed.is_set():
                continue
            if record.pop("asked", False):
                counters["asked"] += 1
            else:
                counters["nodata"] += 1
            # Stored and merged as the journal would give it back: a resumed run merges identical records.
            record = json.loads(json.dumps(record, allow_nan=False))
            try:
                journal.add_tile(record)
            except OSError as exc:
                fail(exc)
                continue
            done[record["tile"]] = record
            counters["objects"] += len(record["objects"])
            finished_now = len(done) - resumed
            elapsed = time.perf_counter() - run_started
            left = total - len(done)
            emit("tile", {"tile": record["key"], "index": record["tile"], "objects": len(record["objects"]),
                          "skipped": record.get("skipped"), "done": len(done), "total": total,
                          "objects_so_far": counters["objects"],
                          "eta_s": round(elapsed / finished_now * left, 1) if finished_now else None})
        for thread in threads:
            thread.join()
        if errors:
            exc = errors[0]
            if isinstance(exc, CascadeError):
                raise exc
            raise exc
        cancelled = outer_stop() and len(done) < total
        timings.update({f"{k}_s": round(v, 4) for k, v in stage_seconds.items()})
        timings["total_s"] = time.perf_counter() - started
        answer = self._answer(prof, request, plan, journal, overview, list(done.values()))
        if cancelled:
            answer.warnings.append(f"cancelled: {len(done)} of {total} tiles are in this answer")
        return TiledResult(answer=answer, plan=plan, records=list(done.values()), resumed=resumed,
                           asked=counters["asked"], nodata=counters["nodata"], cancelled=cancelled, timings=timings)

    def answer_so_far(self, plan: TilePlan, request: TiledRequest, journal: Journal) -> Answer:
        """The merged answer of the tiles finished so far (a running job's partial result)."""
        prof = get_profile(request.profile or self.default_profile)
        records = list(journal.tiles.values())
        answer = self._answer(prof, request, plan, journal, journal.overview, records)
        answer.warnings.append(f"partial: {len(records)} tile(s) finished so far")
        return answer

    def _answer(self, prof, request: TiledRequest, plan: TilePlan, journal, overview, records) -> Answer:
        records = sorted(records, key=lambda r: r["tile"])
        objects = merge_records(records, centre_points=prof.sam_prompting == SAM_BOX_AND_CENTER)
        granularities = list(request.options.granularities)
        if "boxes" not in granularities:
            for obj in objects:
                obj.box = None
        if "points" not in granularities:
            for obj in objects:
                obj.points = []
        if not any(g in granularities for g in ("masks", "contours")):
            for obj in objects:
                obj.polygons = []
        asked = [r for r in records if not r.get("skipped")]
        bad = [r for r in asked if r["parse_status"] in (PARSE_INVALID, PARSE_NO_ANSWER)]
        problems = [f"tile {r['key']}: {p}" for r in asked for p in r.get("problems", [])]
        if asked and len(bad) == len(asked):
            status = bad[0]["parse_status"]
        elif bad or any(r["parse_status"] == PARSE_PARTIAL for r in asked):
            status = PARSE_PARTIAL
        else:
            status = PARSE_OK if objects else PARSE_EMPTY
        if overview is not None:
            reasoning, raw = overview["reasoning"], overview["raw_output"]
        elif len(records) == 1:
            reasoning, raw = records[0]["reasoning"], records[0].get("raw_output", "")
        else:
            reasoning = "\n\n".join(f"[tile {r['key']}] {r['reasoning'].strip()}" for r in asked
                                    if r["objects"] and r["reasoning"].strip())
            raw = ""
        warnings = sorted({w for r in records for w in r.get("warnings", [])})
        nodata = sum(1 for r in records if r.get("skipped") == "nodata")
        if nodata:
            warnings.append(f"{nodata} tile(s) hold only nodata and were not asked")
        models = {"reasoner": "recorded answer" if request.recorded_output is not None
                  else getattr(self.reasoner, "name", "reasoner")}
        if self.segmenter is not None and any(g in granularities for g in ("masks", "contours")):
            models["segmenter"] = getattr(self.segmenter, "name", "segmenter")
        tiles = [{"tile": r["key"], "window": r["window"], "reasoning": r["reasoning"], "parse_status": r["parse_status"],
                  "objects": len(r["objects"]), **({"skipped": r["skipped"]} if r.get("skipped") else {})}
                 for r in records]
        summary = {"tile": "plan", "strategy": plan.strategy, "grid": plan.grid_size, "asked": len(plan.selected),
                   "tile_size": plan.tile_size, "overlap": plan.overlap, "scale": [plan.scale_x, plan.scale_y]}
        return Answer(question=request.question, profile=prof.name, image_width=plan.width, image_height=plan.height,
                      objects=objects, reasoning=reasoning, raw_output=raw, parse_status=status,
                      parse_problems=problems, models=models, granularities=granularities,
                      warnings=warnings, answer_id=journal.header["answer_id"], created=journal.header["created"],
                      tiles=[summary] + tiles)


__all__ = ["TiledEngine", "TiledRequest", "TiledResult", "AskCancelled"]
