"""Activation patching and the chain-of-thought mechanism analyses of Dutta et al. (TMLR 2024)."""
