"""Placeholder until the VILA-U converters land (vilaconv owns this file)."""
