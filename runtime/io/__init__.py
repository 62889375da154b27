"""Frames in and results out: sources (files, cameras, streams), writers, overlays, crash-safe files."""
