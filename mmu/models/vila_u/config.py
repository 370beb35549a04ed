"""Placeholder until the VILA-U AR model lands (vilaar owns this file): see tower.py for the tower config."""
