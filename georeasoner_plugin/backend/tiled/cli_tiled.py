"""`georeasoner ask ... --tiles auto`: a question over a whole raster at native (or chosen) resolution.

The options are added to `ask` by ``add_tiled_arguments``; ``cmd_ask_tiled`` runs when --tiles is
given. Outputs are those of a plain `ask` (vectors, mask GeoTIFF, answer JSON) plus the tile journal
``<out>_tiles.jsonl`` beside them: rerunning the same command after a crash or Ctrl+C skips the
tiles it lists.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import List, Optional

from ...core.exit_codes import EXIT_DATAERR, EXIT_INTERRUPTED, EXIT_NOINPUT, EXIT_OK
from ...core.profiles import get_profile
from ...core.tiling import (DEFAULT_OVERLAP, JOURNAL_SUFFIX, STRATEGIES, STRATEGY_GRID, TilingError,
                            default_tile_size, gsd_scale, map_box_to_source_pixels, parse_extent, parse_overlap,
                            plan_tiles)


def add_tiled_arguments(ask) -> None:
    group = ask.add_argument_group("whole rasters in tiles")
    group.add_argument("--tiles", choices=("auto",),
                       help="ask tile by tile at native resolution and merge into one answer; a raster that fits "
                            "one frame is a single tile, so it can always be given")
    group.add_argument("--tile-size", type=int, help="tile side in pixels (default: the profile's frame, e.g. 896)")
    group.add_argument("--overlap", default=f"{DEFAULT_OVERLAP * 100:g}%",
                       help="overlap between neighbouring tiles, a fraction or percentage (default 12.5%%)")
    group.add_argument("--gsd", type=float, help="ground resolution to resample to, in CRS units per pixel "
                                                 "(default: native)")
    group.add_argument("--extent", help="xmin,ymin,xmax,ymax in the raster's CRS: only this area is asked")
    group.add_argument("--mask-layer", help="vector file of polygons limiting the area (any OGR format; "
                                            "reprojected to the raster's CRS)")
    group.add_argument("--tile-strategy", choices=STRATEGIES, default=STRATEGY_GRID,
                       help="grid: ask every tile; focus: ask an overview first, then only the tiles meeting "
                            "its boxes")


def add_remote_arguments(ask) -> None:
    ask.add_argument("--reasoner-url", metavar="URL",
                     help="OpenAI-compatible chat-completions endpoint (vLLM, SGLang) instead of an in-process "
                          "reasoner; its API key, if any, is read from GEOREASONER_REASONER_API_KEY")
    ask.add_argument("--reasoner-model", metavar="NAME", help="the model name the --reasoner-url endpoint serves")
    ask.add_argument("--concurrency", type=int, default=1,
                     help="tiled runs: requests in flight to the --reasoner-url endpoint at once (at least its batch "
                          "slots), or tiles per batched generate call of an in-process model (default 1)")


def remote_reasoner(args, user_error, usage_code):
    """A RemoteReasoner for --reasoner-url, or None."""
    if not getattr(args, "reasoner_url", None):
        return None
    from ..remote_reasoner import API_KEY_ENV, RemoteReasoner
    if not args.reasoner_model:
        raise user_error("--reasoner-url needs --reasoner-model (the name the endpoint serves)", usage_code)
    try:
        return RemoteReasoner(args.reasoner_url, args.reasoner_model, api_key=os.environ.get(API_KEY_ENV) or None)
    except ValueError as exc:
        raise user_error(str(exc), usage_code) from None


def journal_path(paths) -> Path:
    vectors = Path(paths["vectors"])
    if vectors.suffix.lower() in (".gpkg", ".shp"):
        return vectors.with_name(vectors.stem + JOURNAL_SUFFIX)
    return vectors / JOURNAL_SUFFIX.lstrip("_")


def _mask_geometries(path: str, source, user_error):
    """Polygons of a vector file in source pixel coordinates (shapely)."""
    import pyogrio
    import shapely
    from rasterio.crs import CRS
    from rasterio.warp import transform_geom

    if not Path(path).exists():
        raise user_error(f"--mask-layer: {path} does not exist", EXIT_NOINPUT)
    try:
        meta, _, geometries, _ = pyogrio.raw.read(path, read_geometry=True)
    except Exception as exc:  # noqa: BLE001 - pyogrio's own error types
        raise user_error(f"--mask-layer: {path} is not a vector file OGR can read ({exc})", EXIT_DATAERR) from None
    geoms = [g for g in shapely.from_wkb([g for g in geometries if g is not None])
             if g is not None and g.geom_type in ("Polygon", "MultiPolygon") and not g.is_empty]
    if not geoms:
        raise user_error(f"--mask-layer: {path} has no polygons; give a polygon layer", EXIT_DATAERR)
    layer_crs = meta.get("crs")
    if layer_crs and source.crs_wkt and CRS.from_user_input(layer_crs) != CRS.from_wkt(source.crs_wkt):
        geoms = [shapely.geometry.shape(transform_geom(layer_crs, source.crs_wkt, shapely.geometry.mapping(g)))
                 for g in geoms]
    t = source.transform

    def to_pixels(coords):
        import numpy as np
        det = t.determinant()
        dx, dy = coords[:, 0] - t.origin_x, coords[:, 1] - t.origin_y
        return np.column_stack(((dx * t.pixel_height - dy * t.row_rotation) / det,
                                (dy * t.pixel_width - dx * t.column_rotation) / det))

    return [shapely.transform(g, to_pixels) for g in geoms]


def make_plan(args, profile, source, user_error, usage_code):
    import shapely

    try:
        overlap = parse_overlap(args.overlap)
        tile_size = args.tile_size or default_tile_size(profile.frame)
        scale = gsd_scale(*source.pixel_size(), args.gsd) if args.gsd is not None else (1.0, 1.0)
        area = None
        if args.extent:
            area = map_box_to_source_pixels(source.transform.to_gdal(), parse_extent(args.extent))
        rings, limits = None, None
        if args.mask_layer:
            geoms = _mask_geometries(args.mask_layer, source, user_error)
            rings = [list(p.exterior.coords) for g in geoms for p in getattr(g, "geoms", [g])]
            limits = geoms
        plan = plan_tiles(source.width, source.height, tile_size=tile_size, overlap=overlap, scale=scale,
                          area=area, mask_rings=rings)
    except TilingError as exc:
        raise user_error(str(exc), usage_code) from None
    if limits:
        # Pixels outside the mask polygons become nodata (source pixels -> plan pixels).
        source.limit_geometries = [shapely.affinity.affine_transform(
            g, [1 / plan.scale_x, 0, 0, 1 / plan.scale_y, -plan.source_x / plan.scale_x,
                -plan.source_y / plan.scale_y]) for g in limits]
    return plan


def cmd_ask_tiled(args, progress, outputs: List[str], profile_name: str, recorded: Optional[str], paths,
                  user_error, usage_code) -> int:
    from .. import cli_ask as base
    from ..cascade import AskOptions, CascadeError
    from ..imagery import ImageryError
    from ..writers import OutputError, all_output_files, write_vectors
    from .engine import TiledEngine, TiledRequest
    from .journal import Journal, JournalError
    from .output import write_plan_mask
    from .source import RasterTileSource

    profile = get_profile(profile_name)
    if args.concurrency < 1:
        raise user_error("--concurrency must be at least 1", usage_code)
    options = AskOptions(granularities=outputs, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                         top_p=args.top_p, seed=args.seed, simplify_tolerance=args.simplify, min_area=args.min_area)
    try:
        options.validate()
    except CascadeError as exc:
        raise user_error(str(exc), usage_code) from None
    try:
        source = RasterTileSource(args.image, bands=base.parse_bands(args.bands))
    except ImageryError as exc:
        raise user_error(str(exc)) from None
    with source:
        for warning in source.warnings:
            progress.say(f"warning: {warning}")
        plan = make_plan(args, profile, source, user_error, usage_code)
        progress.say(f"... plan: {plan.width} x {plan.height} px in {len(plan.selected)} tile(s) of {plan.tile_size} px "
                     f"({plan.columns} x {plan.rows} grid, overlap {plan.overlap:.1%})")
        for note in plan.notes:
            progress.say(f"... {note}")

        reasoner = remote_reasoner(args, user_error, usage_code)
        segmenter = None
        needs_segmenter = any(o in outputs for o in ("masks", "contours"))
        local_models = (recorded is None and reasoner is None) or needs_segmenter
        if local_models:  # torch and transformers only when a model runs here
            from transformers.utils import logging as transformers_logging
            transformers_logging.disable_progress_bar()
            from ..models import ModelLoadError
        else:
            ModelLoadError = type("NoModelLoadError", (Exception,), {})  # noqa: N806 - nothing is loaded here
        try:
            with progress.stage("load", "loading models"):
                if recorded is None and reasoner is None:
                    model = args.reasoner or profile.default_checkpoint
                    if not model:
                        raise user_error(f"profile {profile.name} has no published checkpoint; pass --reasoner "
                                         "with your model (hub id or folder), or --reasoner-url", usage_code)
                    from ..reasoner import Reasoner
                    reasoner = Reasoner(model, adapter=args.adapter, device=args.device, dtype=args.dtype)
                if needs_segmenter:
                    from ..segmenter import Segmenter
                    segmenter = Segmenter(args.segmenter, device=args.device, dtype=args.dtype)
        except ModelLoadError as exc:
            raise user_error(str(exc)) from None

        signature = {"raster": os.path.abspath(args.image), "size": [source.width, source.height],
                     "bands": list(source.bands), "question": args.question, "profile": profile.name,
                     "plan": plan.to_dict(), "strategy": args.tile_strategy, "outputs": outputs,
                     "reasoner": "recorded answer" if recorded is not None else getattr(reasoner, "name", ""),
                     "segmenter": args.segmenter if needs_segmenter else None, "simplify": args.simplify,
                     "min_area": args.min_area, "max_new_tokens": args.max_new_tokens,
                     "temperature": args.temperature, "seed": args.seed}
        try:
            journal = Journal(journal_path(paths), signature).open()
        except JournalError as exc:
            raise user_error(str(exc)) from None
        engine = TiledEngine(reasoner, segmenter, profile=profile.name)
        request = TiledRequest(args.question, profile=profile.name, options=options, strategy=args.tile_strategy,
                               concurrency=args.concurrency, recorded_output=recorded)

        def on_event(kind, data):
            if kind == "plan":
                if data["resumed"]:
                    progress.say(f"... resuming from {journal.path}: {data['resumed']} of {data['total']} tiles "
                                 f"already done and skipped, {data['todo']} to ask")
                else:
                    progress.say(f"... asking {data['total']} tile(s)")
            elif kind == "focus":
                progress.say(f"... {data['note']}")
            elif kind == "stage":
                progress.say(f"... {data['stage']}")
            elif kind == "tile":
                eta = f", about {data['eta_s']:.0f} s left" if data.get("eta_s") is not None else ""
                what = "nodata, skipped" if data.get("skipped") else f"{data['objects']} object(s)"
                progress.say(f"  tile {data['tile']}: {what} ({data['done']}/{data['total']} done, "
                             f"{data['objects_so_far']} object(s) so far{eta})")

        started = time.perf_counter()
        try:
            result = engine.run(source, plan, request, journal=journal, on_event=on_event)
        except KeyboardInterrupt:
            journal.close()
            print(f"\ngeoreasoner: interrupted; finished tiles are kept in {journal.path}; run the same command "
                  f"again to resume", file=sys.stderr)
            return EXIT_INTERRUPTED
        except CascadeError as exc:
            raise user_error(str(exc)) from None
        finally:
            journal.close()
        answer = result.answer
        answer.timings.update(result.timings)
        answer.timings["tiled_s"] = time.perf_counter() - started
        answer.warnings.extend(source.warnings)
        transform = source.plan_transform(result.plan)
        crs_wkt, crs_name = source.crs_wkt, source.crs_name

    written: List[Path] = []
    try:
        with progress.stage("write", f"writing {paths['vectors']}"):
            vector_layers = [o for o in ("boxes", "points", "contours") if o in outputs]
            if vector_layers:
                written += write_vectors(answer, transform, crs_wkt, paths["vectors"], layers=vector_layers,
                                         overwrite=args.overwrite)
            if "masks" in outputs:
                written.append(write_plan_mask(answer, transform, crs_wkt, paths["mask"], overwrite=args.overwrite))
            written.append(base.write_answer_json(answer, paths["answer"], args.overwrite))
    except OutputError as exc:
        base.remove_files(all_output_files(written))
        raise user_error(str(exc)) from None
    written.append(journal.path)
    if args.json:
        print(answer.to_json(indent=2))
    else:
        print(f"Tiles: {len(result.plan.selected)} asked of a {result.plan.grid_size}-tile grid "
              f"({result.resumed} resumed from the journal, {result.nodata} nodata)")
        base.print_summary(answer, written, SimpleNamespace(crs_name=crs_name))
    return EXIT_OK
