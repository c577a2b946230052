"""Errors a user can act on. Each message names the thing that is wrong and what to do."""


class UnetSegError(ValueError):
    """Base class of every error napari-unetseg raises on purpose."""


class ConfigError(UnetSegError):
    """A setting is out of range or inconsistent."""


class InputError(UnetSegError):
    """An image or a painted labels array cannot be used as given."""


class WeightsFileError(UnetSegError):
    """A weights file is missing, damaged, of an unknown format, or does not fit."""


class UnsafeWeightsError(WeightsFileError):
    """A weights file holds Python objects that would run code when loaded; it was refused."""


class TrustRequiredError(UnsafeWeightsError):
    """A file holds code (TorchScript); it is loaded only when the user says they trust it."""
