"""GAN losses: hinge and non-saturating (vanilla) for D and G, LeCam regularisation, the disc_start warm-up helper."""

__all__ = []
