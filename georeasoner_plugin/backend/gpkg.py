"""GeoPackage 1.2 files written in one SQLite transaction.

Why not GDAL (pyogrio) here: creating a GeoPackage through OGR costs a fixed ~15 ms per layer
(dataset reopened for each layer, R-tree triggers, metadata queries), which dominated a small
answer's non-model time. An answer's layers are tiny, so this module writes the tables the
GeoPackage 1.2 standard (OGC 12-128r15) requires with the standard library's sqlite3: one
connection, one transaction, prepared inserts (executemany). The version is 1.2 (user_version
10200) so that GDAL 3.6, QGIS 3.40's on Debian 12, opens the files without a warning; the test
suite opens them with the system GDAL to hold that. No spatial index is written: GDAL and QGIS
read layers without one, and an answer has tens of features.
"""
from __future__ import annotations

import re
import sqlite3
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import shapely

__all__ = ["GpkgLayer", "write_geopackage", "srs_of_wkt"]

_APPLICATION_ID = 0x47504B47  # "GPKG"
_USER_VERSION = 10200  # GeoPackage 1.2.0
_CUSTOM_SRS_ID = 100000
_SQL_TYPES = {"str": "TEXT", "int": "MEDIUMINT", "float": "REAL", "datetime": "DATETIME"}
# A WKT's own authority: AUTHORITY["EPSG","26914"] (WKT1) or ID["EPSG",26914] (WKT2) directly
# inside the root node (nested ones name the datum, the unit...).
_AUTHORITY = re.compile(r'(?:AUTHORITY|ID)\[\s*"([A-Za-z]+)"\s*,\s*"?(\d+)"?\s*\]')

_SCHEMA = """
CREATE TABLE gpkg_spatial_ref_sys (srs_name TEXT NOT NULL, srs_id INTEGER NOT NULL PRIMARY KEY,
  organization TEXT NOT NULL, organization_coordsys_id INTEGER NOT NULL, definition TEXT NOT NULL, description TEXT);
CREATE TABLE gpkg_contents (table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL, identifier TEXT UNIQUE,
  description TEXT DEFAULT '', last_change DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
  min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE, srs_id INTEGER,
  CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys(srs_id));
CREATE TABLE gpkg_geometry_columns (table_name TEXT NOT NULL, column_name TEXT NOT NULL,
  geometry_type_name TEXT NOT NULL, srs_id INTEGER NOT NULL, z TINYINT NOT NULL, m TINYINT NOT NULL,
  CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name), CONSTRAINT uk_gc_table_name UNIQUE (table_name),
  CONSTRAINT fk_gc_tn FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name),
  CONSTRAINT fk_gc_srs FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys (srs_id));
"""
_REQUIRED_SRS = (
    ("Undefined cartesian SRS", -1, "NONE", -1, "undefined", "undefined cartesian coordinate reference system"),
    ("Undefined geographic SRS", 0, "NONE", 0, "undefined", "undefined geographic coordinate reference system"),
    ("WGS 84 geodetic", 4326, "EPSG", 4326,
     'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563,AUTHORITY["EPSG","7030"]],'
     'AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,AUTHORITY["EPSG","8901"]],UNIT["degree",0.0174532925199433,'
     'AUTHORITY["EPSG","9122"]],AXIS["Latitude",NORTH],AXIS["Longitude",EAST],AUTHORITY["EPSG","4326"]]',
     "longitude/latitude coordinates in decimal degrees on the WGS 84 spheroid"),
)


@dataclass
class GpkgLayer:
    name: str
    geometry_type: str  # "POLYGON", "POINT", "MULTIPOLYGON"
    fields: Sequence[Tuple[str, str]]  # (name, kind in core.fields: str / int / float / datetime)
    geometries: List[Any]  # shapely geometries
    rows: List[Sequence[Any]]  # values in field order (datetimes already ISO 8601 text)


def srs_of_wkt(crs_wkt: Optional[str]) -> Tuple[int, str, int, str, str]:
    """(srs_id, organization, organization_coordsys_id, name, definition) for a CRS given as WKT."""
    if not crs_wkt:
        return -1, "NONE", -1, "Undefined cartesian SRS", "undefined"
    name_match = re.match(r'\s*\w+\[\s*"([^"]*)"', crs_wkt)
    name = name_match.group(1) if name_match else "unknown"
    for match in _AUTHORITY.finditer(crs_wkt):
        if match.group(1).upper() == "EPSG" and _depth(crs_wkt, match.start()) == 1:
            code = int(match.group(2))
            return code, "EPSG", code, name, crs_wkt
    return _CUSTOM_SRS_ID, "NONE", _CUSTOM_SRS_ID, name, crs_wkt


def _depth(text: str, position: int) -> int:
    """Bracket depth at ``position`` of a WKT string (brackets inside quoted names do not count)."""
    depth, quoted = 0, False
    for char in text[:position]:
        if char == '"':
            quoted = not quoted
        elif not quoted:
            depth += char == "["
            depth -= char == "]"
    return depth


def _blobs(geometries: List[Any], srs_id: int) -> List[bytes]:
    """GeoPackage binary of each geometry: 'GP', version 0, flags (little-endian; xy envelope, or
    the empty flag), srs_id, envelope, then standard WKB. WKB and envelopes in one shapely call each."""
    if not geometries:
        return []
    array = np.asarray(geometries, dtype=object)
    wkbs = shapely.to_wkb(array, byte_order=1)
    bounds = shapely.bounds(array).tolist()
    empty = shapely.is_empty(array).tolist()
    blobs = []
    for wkb, (min_x, min_y, max_x, max_y), is_empty in zip(wkbs, bounds, empty):
        if is_empty:
            blobs.append(b"GP\x00\x11" + struct.pack("<i", srs_id) + wkb)
        else:
            blobs.append(b"GP\x00\x03" + struct.pack("<i4d", srs_id, min_x, max_x, min_y, max_y) + wkb)
    return blobs


def write_geopackage(path: Path, layers: Sequence[GpkgLayer], crs_wkt: Optional[str]) -> None:
    """Create ``path`` (must not exist) holding ``layers``, all in the CRS ``crs_wkt``."""
    srs_id, organization, code, name, definition = srs_of_wkt(crs_wkt)
    connection = sqlite3.connect(str(path), isolation_level=None)
    try:
        # A new file in a private staging folder, moved into place only when complete: no rollback
        # journal on disk and no fsync per commit (GDAL's own GeoPackage driver writes with
        # synchronous = OFF too).
        connection.execute("PRAGMA journal_mode = MEMORY")
        connection.execute("PRAGMA synchronous = OFF")
        connection.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
        connection.execute(f"PRAGMA user_version = {_USER_VERSION}")
        connection.execute("BEGIN")
        for statement in _SCHEMA.strip().split(";\n"):
            if statement.strip():
                connection.execute(statement)
        connection.executemany("INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, ?)", _REQUIRED_SRS)
        if srs_id not in (-1, 0, 4326):
            connection.execute("INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, ?)",
                               (name, srs_id, organization, code, definition, None))
        for layer in layers:
            try:
                _write_layer(connection, layer, srs_id)
            except (sqlite3.Error, ValueError) as exc:  # UnicodeEncodeError is a ValueError
                raise ValueError(f"the {layer.name} layer: {exc}") from exc
        connection.execute("COMMIT")
    except BaseException:
        try:
            connection.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        raise
    finally:
        connection.close()


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _write_layer(connection: sqlite3.Connection, layer: GpkgLayer, srs_id: int) -> None:
    table = _quote(layer.name)
    columns = ", ".join(f"{_quote(name)} {_SQL_TYPES[kind]}" for name, kind in layer.fields)
    connection.execute(f"CREATE TABLE {table} (fid INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, "
                       f"geom {layer.geometry_type}{', ' + columns if columns else ''})")
    bounds = None
    if layer.geometries:
        boxes = shapely.bounds(layer.geometries)
        bounds = (float(boxes[:, 0].min()), float(boxes[:, 1].min()), float(boxes[:, 2].max()), float(boxes[:, 3].max()))
    connection.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier, min_x, min_y, max_x, max_y, "
                       "srs_id) VALUES (?, 'features', ?, ?, ?, ?, ?, ?)",
                       (layer.name, layer.name, *(bounds or (None,) * 4), srs_id))
    connection.execute("INSERT INTO gpkg_geometry_columns VALUES (?, 'geom', ?, ?, 0, 0)",
                       (layer.name, layer.geometry_type, srs_id))
    names = ", ".join(["geom"] + [_quote(name) for name, _ in layer.fields])
    marks = ", ".join("?" * (len(layer.fields) + 1))
    connection.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})",
                           [(blob, *row) for blob, row in zip(_blobs(layer.geometries, srs_id), layer.rows)])
