"""muni: any-to-any multimodal generation.

One model generates any missing modality from any observed subset, and samples all of
them jointly from nothing. See the README for the two commands that get you started.
"""

__version__ = "0.1.0"
