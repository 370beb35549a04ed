"""Converters of published VILA-U checkpoints onto mmu.models.vila_u (placeholder: the vilaconv slice writes this file)."""
