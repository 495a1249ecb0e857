from muni.modalities.base import KINDS, PAD_ID, Modality, check_modality_names

__all__ = ["KINDS", "PAD_ID", "Modality", "check_modality_names"]
