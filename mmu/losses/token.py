"""Token objectives: next-token (shifted) and masked-token cross-entropy helpers."""

__all__ = []
