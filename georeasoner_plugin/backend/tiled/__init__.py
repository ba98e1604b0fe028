"""Tiled reasoning over whole rasters: windowed reads, a bounded pipeline, merge, resume journal.

The plan (which windows) is pure geometry in ``core.tiling``; this package reads, asks, segments
and merges. See ``engine.TiledEngine``.
"""
