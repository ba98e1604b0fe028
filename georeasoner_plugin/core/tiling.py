"""Tiled reasoning over whole rasters: the plan is pure geometry.

A *plan* lays a grid of square windows ("tiles") over the part of a raster a question is asked
about, on a *plan grid*: the raster's own pixels, or pixels resampled to a chosen ground resolution
(``--gsd``). Everything here is in pixels of the plan grid unless named ``source``; the plan keeps
the offset and scale that lead back to source pixels, so the backend (rasterio windows) and the
QGIS plugin (provider blocks) read exactly the same windows.

Tiles overlap by ``overlap`` (a fraction of the tile side, 12.5 % by default) so an object cut by
one tile's edge is seen whole, or at least in an overlapping part, by its neighbour; the merge
(backend) joins the pieces. The last row and column are shifted back to stay full size (no thin
sliver tiles), so the overlap there can be larger.

Pure Python: the QGIS plugin, the backend and the service's job protocol import this very file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .frames import FRAME_FIXED

Box = Tuple[float, float, float, float]
Ring = Sequence[Tuple[float, float]]

DEFAULT_OVERLAP = 0.125
MAX_OVERLAP = 0.5
MIN_TILE_SIZE = 64
MAX_TILE_SIZE = 8192
MAX_TILES = 100_000  # a plan larger than this is a mistake (a tiny --gsd, a huge --tile-size mismatch)
STRATEGY_GRID = "grid"
STRATEGY_FOCUS = "focus"
STRATEGIES = (STRATEGY_GRID, STRATEGY_FOCUS)
# focus: overview boxes are grown by this fraction of their own size, and at least by the overlap.
DEFAULT_FOCUS_MARGIN = 0.25

# Files a tiled run keeps beside its output (the CLI) and the service's job protocol.
JOURNAL_SUFFIX = "_tiles.jsonl"
JOB_STATES = ("waiting", "running", "done", "cancelled", "failed", "expired")
JOB_EVENTS = ("accepted", "tile", "progress", "done", "cancelled", "error")
DEFAULT_JOB_TTL_S = 900  # a job nobody touched for this long is cancelled and forgotten


class TilingError(ValueError):
    """A plan that cannot be made (empty area, bad option); the message says what to change."""


@dataclass(frozen=True)
class Tile:
    """One window of the plan grid: columns x..x+width, rows y..y+height."""

    index: int  # row-major position in the full grid, stable whatever is selected
    row: int
    col: int
    x: int
    y: int
    width: int
    height: int

    @property
    def key(self) -> str:
        return f"r{self.row}c{self.col}"

    @property
    def box(self) -> Box:
        return (float(self.x), float(self.y), float(self.x + self.width), float(self.y + self.height))

    def to_dict(self) -> Dict[str, int]:
        return {"index": self.index, "row": self.row, "col": self.col, "x": self.x, "y": self.y,
                "width": self.width, "height": self.height}


@dataclass(frozen=True)
class TilePlan:
    """The grid over the plan area and the tiles selected in it."""

    width: int  # plan grid size, pixels
    height: int
    tile_size: int
    overlap: float
    scale_x: float  # source pixels per plan pixel
    scale_y: float
    source_x: float  # source pixel position of the plan grid's (0, 0) corner
    source_y: float
    xs: Tuple[int, ...]  # left edges of the grid columns
    ys: Tuple[int, ...]  # top edges of the grid rows
    selected: Tuple[int, ...]  # indexes of the tiles to ask, ascending
    strategy: str = STRATEGY_GRID
    notes: Tuple[str, ...] = field(default_factory=tuple)

    @property
    def columns(self) -> int:
        return len(self.xs)

    @property
    def rows(self) -> int:
        return len(self.ys)

    @property
    def grid_size(self) -> int:
        return self.columns * self.rows

    def tile(self, index: int) -> Tile:
        if not 0 <= index < self.grid_size:
            raise TilingError(f"tile {index} is outside the grid of {self.grid_size} tiles (0..{self.grid_size - 1})")
        row, col = divmod(index, self.columns)
        x, y = self.xs[col], self.ys[row]
        return Tile(index, row, col, x, y, min(self.tile_size, self.width - x), min(self.tile_size, self.height - y))

    @property
    def tiles(self) -> List[Tile]:
        return [self.tile(i) for i in self.selected]

    def all_tiles(self) -> List[Tile]:
        return [self.tile(i) for i in range(self.grid_size)]

    def source_window(self, tile: Tile) -> Box:
        """(col_off, row_off, width, height) of the tile in source pixels (fractional when resampled)."""
        return (self.source_x + tile.x * self.scale_x, self.source_y + tile.y * self.scale_y,
                tile.width * self.scale_x, tile.height * self.scale_y)

    def plan_transform(self, source_gt: Sequence[float]) -> Tuple[float, ...]:
        """GDAL geotransform of the plan grid, given the source raster's geotransform."""
        g = [float(v) for v in source_gt]
        ox = g[0] + self.source_x * g[1] + self.source_y * g[2]
        oy = g[3] + self.source_x * g[4] + self.source_y * g[5]
        return (ox, g[1] * self.scale_x, g[2] * self.scale_y, oy, g[4] * self.scale_x, g[5] * self.scale_y)

    def with_selection(self, indexes: Iterable[int], strategy: Optional[str] = None,
                       note: Optional[str] = None) -> "TilePlan":
        chosen = tuple(sorted(set(int(i) for i in indexes)))
        for i in chosen:
            self.tile(i)  # range check
        notes = self.notes + ((note,) if note else ())
        return TilePlan(self.width, self.height, self.tile_size, self.overlap, self.scale_x, self.scale_y,
                        self.source_x, self.source_y, self.xs, self.ys, chosen, strategy or self.strategy, notes)

    def to_dict(self) -> Dict[str, Any]:
        return {"width": self.width, "height": self.height, "tile_size": self.tile_size, "overlap": self.overlap,
                "scale": [self.scale_x, self.scale_y], "source_origin": [self.source_x, self.source_y],
                "xs": list(self.xs), "ys": list(self.ys), "selected": list(self.selected),
                "strategy": self.strategy}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TilePlan":
        try:
            plan = cls(int(data["width"]), int(data["height"]), int(data["tile_size"]), float(data["overlap"]),
                       float(data["scale"][0]), float(data["scale"][1]), float(data["source_origin"][0]),
                       float(data["source_origin"][1]), tuple(int(v) for v in data["xs"]),
                       tuple(int(v) for v in data["ys"]), tuple(int(v) for v in data["selected"]),
                       str(data.get("strategy", STRATEGY_GRID)))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise TilingError(f"malformed tile plan: {exc}") from None
        for i in plan.selected:
            plan.tile(i)
        return plan


def default_tile_size(frame_spec: Any) -> int:
    """The side of a square image the profile's model sees without being shrunk (its frame).

    Fixed frames: their side. Qwen smart resize: the largest square within max_pixels, rounded
    down to the patch factor (RemoteReasoner: 1024 * 28 * 28 pixels -> 896).
    """
    if frame_spec.kind == FRAME_FIXED:
        return int(max(frame_spec.fixed_width, frame_spec.fixed_height))
    side = int(math.isqrt(int(frame_spec.max_pixels)))
    return max(MIN_TILE_SIZE, side - side % int(frame_spec.factor))


def parse_overlap(text: Any) -> float:
    """'12.5%', '12.5 %', '0.125' -> 0.125. Fractions in [0, 0.5)."""
    raw = str(text).strip()
    try:
        value = float(raw.rstrip("%").strip()) / (100.0 if raw.endswith("%") else 1.0)
    except ValueError:
        raise TilingError(f"overlap must be a fraction like 0.125 or a percentage like 12.5%; got {text!r}") from None
    if not 0.0 <= value < MAX_OVERLAP or not math.isfinite(value):
        raise TilingError(f"overlap must be at least 0 and below {MAX_OVERLAP:.0%} of the tile; got {text!r}")
    return value


def parse_extent(text: str) -> Box:
    """'xmin,ymin,xmax,ymax' (map units of the raster's CRS) -> a box."""
    try:
        values = tuple(float(v) for v in str(text).replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise TilingError(f"the extent is four numbers xmin,ymin,xmax,ymax in the raster's CRS; got {text!r}")
    xmin, ymin, xmax, ymax = values
    if xmin >= xmax or ymin >= ymax:
        raise TilingError(f"the extent needs xmin < xmax and ymin < ymax; got {text!r}")
    return values


def map_box_to_source_pixels(source_gt: Sequence[float], box: Box) -> Box:
    """Bounding box, in source pixels, of a map-space box (corners through the inverse transform)."""
    g = [float(v) for v in source_gt]
    det = g[1] * g[5] - g[2] * g[4]
    if det == 0:
        raise TilingError("the raster's geotransform is singular; it cannot locate an extent")
    xmin, ymin, xmax, ymax = box
    cols, rows = [], []
    for x, y in ((xmin, ymin), (xmax, ymin), (xmax, ymax), (xmin, ymax)):
        dx, dy = x - g[0], y - g[3]
        cols.append((dx * g[5] - dy * g[2]) / det)
        rows.append((dy * g[1] - dx * g[4]) / det)
    return (min(cols), min(rows), max(cols), max(rows))


def gsd_scale(pixel_size_x: float, pixel_size_y: float, gsd: Optional[float]) -> Tuple[float, float]:
    """Source pixels per plan pixel for a target ground resolution (None: native, 1:1)."""
    if gsd is None:
        return 1.0, 1.0
    if not (gsd > 0 and math.isfinite(gsd)):
        raise TilingError(f"the ground resolution (--gsd) must be a positive number of map units; got {gsd}")
    sx, sy = abs(pixel_size_x), abs(pixel_size_y)
    if sx == 0 or sy == 0:
        raise TilingError("the raster has no pixel size; --gsd needs a georeferenced raster")
    return gsd / sx, gsd / sy


def _starts(length: int, tile: int, step: int) -> Tuple[int, ...]:
    if length <= tile:
        return (0,)
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)  # the last tile shifted back to full size
    return tuple(sorted(set(starts)))


def plan_tiles(source_width: int, source_height: int, *, tile_size: int, overlap: float = DEFAULT_OVERLAP,
               scale: Tuple[float, float] = (1.0, 1.0), area: Optional[Box] = None,
               mask_rings: Optional[Sequence[Ring]] = None) -> TilePlan:
    """The grid of tiles over a raster.

    area: (col0, row0, col1, row1) in source pixels limiting the plan (an --extent); it is clipped
    to the raster. mask_rings: polygons (outer rings, source pixels); only tiles meeting one are
    selected and the plan area shrinks to their bounds when no area is given.
    """
    if source_width <= 0 or source_height <= 0:
        raise TilingError(f"the raster is empty ({source_width} x {source_height} pixels)")
    tile_size = int(tile_size)
    if not MIN_TILE_SIZE <= tile_size <= MAX_TILE_SIZE:
        raise TilingError(f"the tile size must be between {MIN_TILE_SIZE} and {MAX_TILE_SIZE} pixels; got {tile_size}")
    overlap = float(overlap)
    if not 0.0 <= overlap < MAX_OVERLAP:
        raise TilingError(f"overlap must be at least 0 and below {MAX_OVERLAP:.0%}; got {overlap}")
    sx, sy = float(scale[0]), float(scale[1])
    if not (sx > 0 and sy > 0):
        raise TilingError("the resampling scale must be positive")
    notes: List[str] = []
    rings = [list(r) for r in mask_rings] if mask_rings else []
    if area is None and rings:
        ring_xs = [p[0] for r in rings for p in r]
        ring_ys = [p[1] for r in rings for p in r]
        area = (min(ring_xs), min(ring_ys), max(ring_xs), max(ring_ys))
    if area is None:
        area = (0.0, 0.0, float(source_width), float(source_height))
    c0, r0 = max(0.0, float(area[0])), max(0.0, float(area[1]))
    c1, r1 = min(float(source_width), float(area[2])), min(float(source_height), float(area[3]))
    if c1 - c0 < 1 or r1 - r0 < 1:
        raise TilingError("the requested area does not overlap the raster; check the extent or mask layer and "
                          "that it is in the raster's CRS")
    if (c0, r0, c1, r1) != (0.0, 0.0, float(source_width), float(source_height)):
        c0, r0 = math.floor(c0), math.floor(r0)
        c1, r1 = math.ceil(c1), math.ceil(r1)
    width = max(1, int(math.ceil((c1 - c0) / sx - 1e-9)))
    height = max(1, int(math.ceil((r1 - r0) / sy - 1e-9)))
    # The plan must not read past the raster: shrink the last plan pixel row/column if it would.
    width = min(width, max(1, int((source_width - c0) / sx + 1e-9)))
    height = min(height, max(1, int((source_height - r0) / sy + 1e-9)))
    step = max(1, int(round(tile_size * (1.0 - overlap))))
    xs, ys = _starts(width, tile_size, step), _starts(height, tile_size, step)
    if len(xs) * len(ys) > MAX_TILES:
        raise TilingError(f"the plan has {len(xs) * len(ys)} tiles, more than {MAX_TILES}; use a larger --tile-size, "
                          f"a coarser --gsd or a smaller --extent")
    plan = TilePlan(width, height, tile_size, overlap, sx, sy, float(c0), float(r0), xs, ys,
                    tuple(range(len(xs) * len(ys))), STRATEGY_GRID, tuple(notes))
    if rings:
        # Mask rings to plan pixels, then keep the tiles meeting at least one.
        plan_rings = [[((x - c0) / sx, (y - r0) / sy) for x, y in r] for r in rings]
        keep = [t.index for t in plan.all_tiles() if any(rect_meets_ring(t.box, r) for r in plan_rings)]
        if not keep:
            raise TilingError("no tile meets the mask polygons; check the mask layer covers the raster")
        plan = plan.with_selection(keep, note=f"mask: {len(keep)} of {plan.grid_size} tiles meet the mask polygons")
    return plan


def grow_box(box: Box, margin: float, minimum: float = 0.0) -> Box:
    """The box grown on every side by margin x its larger side, at least by ``minimum`` pixels."""
    x1, y1, x2, y2 = box
    pad = max(minimum, margin * max(x2 - x1, y2 - y1))
    return (x1 - pad, y1 - pad, x2 + pad, y2 + pad)


def boxes_meet(a: Box, b: Box) -> bool:
    """True when the boxes share area (touching edges do not count)."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def focus_selection(plan: TilePlan, boxes: Iterable[Box], margin: float = DEFAULT_FOCUS_MARGIN) -> TilePlan:
    """The plan restricted to the tiles meeting the overview's boxes (plan pixels) grown by a margin."""
    minimum = plan.tile_size * plan.overlap
    grown = [grow_box(b, margin, minimum) for b in boxes]
    keep = [t.index for t in plan.tiles if any(boxes_meet(t.box, g) for g in grown)]
    return plan.with_selection(keep, STRATEGY_FOCUS,
                               f"focus: {len(keep)} of {len(plan.selected)} tiles meet the overview's boxes")


def overview_size(plan: TilePlan, long_side: int) -> Tuple[int, int]:
    """(width, height) of the decimated overview of the plan area, long side ``long_side``."""
    factor = max(plan.width, plan.height) / float(long_side)
    if factor <= 1:
        return plan.width, plan.height
    return max(1, round(plan.width / factor)), max(1, round(plan.height / factor))


def _point_in_ring(x: float, y: float, ring: Ring) -> bool:
    inside = False
    n = len(ring)
    for i in range(n):
        x0, y0 = ring[i]
        x1, y1 = ring[(i + 1) % n]
        if (y0 > y) != (y1 > y) and x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
            inside = not inside
    return inside


def _segments_cross(p: Tuple[float, float], q: Tuple[float, float], r: Tuple[float, float],
                    s: Tuple[float, float]) -> bool:
    def orient(a: Tuple[float, float], b: Tuple[float, float], c: Tuple[float, float]) -> int:
        v = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        return int(v > 0) - int(v < 0)

    return orient(p, q, r) * orient(p, q, s) < 0 and orient(r, s, p) * orient(r, s, q) < 0


def rect_meets_ring(rect: Box, ring: Ring) -> bool:
    """True when a rectangle and a polygon ring share area (pure Python: QGIS and the backend agree).

    Hand-written rather than shapely because core has no third-party imports.
    """
    if len(ring) < 3:
        return False
    x1, y1, x2, y2 = rect
    xs = [p[0] for p in ring]
    ys = [p[1] for p in ring]
    if max(xs) <= x1 or min(xs) >= x2 or max(ys) <= y1 or min(ys) >= y2:
        return False
    if any(x1 < px < x2 and y1 < py < y2 for px, py in ring):
        return True
    if _point_in_ring((x1 + x2) / 2, (y1 + y2) / 2, ring) or any(
            _point_in_ring(cx, cy, ring) for cx, cy in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))):
        return True
    corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
    edges = list(zip(corners, corners[1:] + corners[:1]))
    n = len(ring)
    return any(_segments_cross(ring[i], ring[(i + 1) % n], a, b) for i in range(n) for a, b in edges)
