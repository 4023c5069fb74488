"""Thin Prefect tasks around the kocap library: one per stage, built from the stage table."""
