"""Errors meant for people: the CLI prints their message (no traceback) and exits 2."""


class MuniError(Exception):
    """Base class for every user-facing error (bad input, missing data, foreign files)."""


class DataMissingError(MuniError):
    """A raw data file is absent and cannot be downloaded."""


class DataIntegrityError(MuniError):
    """A raw data file or a cache fails its checksum."""


class CheckpointError(MuniError):
    """A checkpoint is missing, corrupt, truncated, pickled or from another method."""


class ConfigError(MuniError):
    """An unknown config key, or a value of the wrong type."""


class InputError(MuniError):
    """A bad argument to `generate` or `muni sample`: wrong modality name, shape, value."""
