"""Merging per-tile answers into one answer on the plan grid.

Each tile record carries its objects in plan pixels: box, points, score, label and, when masks
were made, the polygons traced from the tile's mask (vertices on pixel corners, so integers).
Objects of *different* tiles are the same object when

- both have polygons and these share area (the overlap strip saw the same pixels) or share an edge
  of at least one pixel (pieces meeting exactly on a seam when tiles do not overlap), or
- they have boxes only and their boxes, cut to the part both tiles see, overlap with IoU >= 0.5.

Same-object links are closed transitively (union-find), so a lake over four tiles is one object.
Its polygons are dissolved with shapely; since every vertex lies on the same integer pixel grid
the union is exact and leaves no sliver along the seams. The box becomes the bounds of the merged
polygon (or the union of the boxes), and each object keeps the tiles it came from with its score
(and box_score) in each. The merged object's score is its largest piece's; its box_score is the
best of its pieces' (the reasoner was that sure of it in at least one tile; a tile that saw only a
sliver of it and was unsure should not lower it). Records are merged in tile order and the objects
sorted top-left first, so the result does not depend on the order tiles finished in (what makes a
resumed run identical).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import shapely
from shapely.geometry import MultiPolygon
from shapely.geometry.polygon import orient
from shapely.strtree import STRtree

from ...core.frames import box_center, box_iou
from ...core.protocol import AnswerObject, Polygon

BOX_MERGE_IOU = 0.5


def _geometry(obj: Dict[str, Any]):
    parts = []
    for poly in obj.get("polygons") or []:
        exterior = [tuple(p) for p in poly["exterior"]]
        if len(set(exterior)) < 3:
            continue
        parts.append(shapely.Polygon(exterior, [[tuple(p) for p in h] for h in poly.get("holes", [])]))
    if not parts:
        return None
    geom = shapely.union_all(parts) if len(parts) > 1 else parts[0]
    return geom if geom.is_valid else shapely.make_valid(geom)


def _clip(box, window) -> Optional[Tuple[float, float, float, float]]:
    x1, y1 = max(box[0], window[0]), max(box[1], window[1])
    x2, y2 = min(box[2], window[2]), min(box[3], window[3])
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def _window_intersection(a, b):
    return _clip(a, b)


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _same_object(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    if a["geom"] is not None and b["geom"] is not None:
        inter = a["geom"].intersection(b["geom"])
        return inter.area > 0 or inter.length >= 1.0
    if a["box"] is None or b["box"] is None:
        return False
    seen_by_both = _window_intersection(a["window"], b["window"])
    if seen_by_both is None:
        return False
    ca, cb = _clip(a["box"], seen_by_both), _clip(b["box"], seen_by_both)
    return ca is not None and cb is not None and box_iou(ca, cb) >= BOX_MERGE_IOU


def to_protocol_polygons(geom) -> List[Polygon]:
    """Shapely (multi)polygon -> protocol polygons with the vectorizer's orientation (exterior CCW
    in (col, row), i.e. positive shoelace area; holes negative)."""
    if geom is None or geom.is_empty:
        return []
    parts = list(geom.geoms) if hasattr(geom, "geoms") else [geom]
    out = []
    for part in parts:
        if part.geom_type != "Polygon" or part.area <= 0:
            continue
        part = orient(part, sign=1.0)
        out.append(Polygon(exterior=[(float(x), float(y)) for x, y in part.exterior.coords],
                           holes=[[(float(x), float(y)) for x, y in ring.coords] for ring in part.interiors]))
    return out


def merge_records(records: Sequence[Dict[str, Any]], *, centre_points: bool = False) -> List[AnswerObject]:
    """One list of objects from tile records (each {"tile", "key", "window": [x, y, w, h], "objects"})."""
    items: List[Dict[str, Any]] = []
    for record in sorted(records, key=lambda r: int(r["tile"])):
        x, y, w, h = record["window"]
        window = (x, y, x + w, y + h)
        for obj in record.get("objects", []):
            items.append({"tile": int(record["tile"]), "key": record["key"], "window": window, "obj": obj,
                          "box": tuple(obj["box"]) if obj.get("box") is not None else None,
                          "geom": _geometry(obj)})
    if not items:
        return []
    links = _UnionFind(len(items))
    envelopes = [shapely.box(*(it["box"] if it["box"] is not None else it["geom"].bounds)) for it in items]
    tree = STRtree(envelopes)
    left, right = tree.query(envelopes, predicate="intersects")
    for i, j in zip(left.tolist(), right.tolist()):
        if i < j and items[i]["tile"] != items[j]["tile"] and _same_object(items[i], items[j]):
            links.union(i, j)
    groups: Dict[int, List[int]] = {}
    for i in range(len(items)):
        groups.setdefault(links.find(i), []).append(i)

    merged: List[AnswerObject] = []
    for members in groups.values():
        merged.append(_merge_group([items[i] for i in members], centre_points))
    merged.sort(key=lambda o: (o.box[1], o.box[0], o.box[3], o.box[2]) if o.box else (0, 0, 0, 0))
    for index, obj in enumerate(merged):
        obj.index = index
    return merged


def _area(item) -> float:
    if item["geom"] is not None:
        return float(item["geom"].area)
    box = item["box"]
    return float((box[2] - box[0]) * (box[3] - box[1])) if box else 0.0


def _merge_group(members: List[Dict[str, Any]], centre_points: bool) -> AnswerObject:
    largest = max(members, key=lambda m: (_area(m), -m["tile"]))
    geoms = [m["geom"] for m in members if m["geom"] is not None]
    polygons: List[Polygon] = []
    if len(members) == 1:
        polygons = [Polygon.from_dict(p) for p in largest["obj"].get("polygons") or []]
        box = tuple(largest["box"]) if largest["box"] is not None else None
    else:
        if geoms:
            union = shapely.union_all(geoms)
            # Drop the vertices left in the middle of straight edges where pieces met (tolerance 0).
            union = shapely.simplify(union, 0.0)
            polygons = to_protocol_polygons(union)
            box = tuple(float(v) for v in union.bounds)
        else:
            boxes = [m["box"] for m in members if m["box"] is not None]
            box = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
                   max(b[3] for b in boxes)) if boxes else None
    points = [tuple(p) for p in largest["obj"].get("points", [])]
    if len(members) > 1 and box is not None and (centre_points or not points):
        points = [box_center(box)]
    tiles = []
    for m in sorted(members, key=lambda m: m["tile"]):
        tile = {"tile": m["key"], "score": m["obj"].get("score")}
        if m["obj"].get("box_score") is not None:
            tile["box_score"] = m["obj"]["box_score"]
        tiles.append(tile)
    box_scores = [t["box_score"] for t in tiles if "box_score" in t]
    return AnswerObject(index=0, box=box, points=points, score=largest["obj"].get("score"),
                        label=largest["obj"].get("label"), polygons=polygons, tiles=tiles,
                        box_score=max(box_scores) if box_scores else None)


def multipolygon(obj: AnswerObject):
    """The object's polygons as one shapely MultiPolygon (plan pixels); None without polygons."""
    parts = [shapely.Polygon(p.exterior, p.holes) for p in obj.polygons if len(set(p.exterior)) >= 3]
    return MultiPolygon(parts) if parts else None
