"""Reproduction studies: train small SSL runs and judge the papers' claims on them."""
