"""Learning towers: `avid` aligns an audio tower to a frozen image tower (AVID, optional CMA)."""
