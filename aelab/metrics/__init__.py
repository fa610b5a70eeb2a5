"""Measurements of trained models: likelihood bounds, reconstruction quality, ..."""
