"""Dock widget and settings page."""
