"""Sweeps: readable job folders, per-job status, the sweep summary, threads per job, and the run report.

Everything here is torch-free: `aelab report` and the CLI's start path import it.
"""
