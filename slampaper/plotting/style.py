"""Shared figure conventions."""

from __future__ import annotations

__all__ = ["annotate_source"]


def annotate_source(figure, source_label: str) -> None:
    """Write the data source in the figure's lower right corner."""
    figure.text(0.995, -0.01, f"data: {source_label}", ha="right", va="top", fontsize=8, color="0.35")
