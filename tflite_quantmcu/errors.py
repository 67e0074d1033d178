"""The typed errors of tflite-quantmcu.

Every failure a user can cause ends in one of these. The CLI prints
`error: <message>` on one line and exits with status 2. Messages name the
file, op or tensor at fault and say what was expected and what was found.
"""


class QuantMCUError(Exception):
    """Base class of every error this tool raises on purpose."""


class ModelFileError(QuantMCUError):
    """The model file cannot be opened (missing, a directory, unreadable)."""


class InvalidModelError(QuantMCUError):
    """The bytes are not a valid TFLite flatbuffer (identifier, truncation, bad indices)."""


class ModelLimitError(InvalidModelError):
    """The model exceeds a reader limit (`ir/limits.py`, docs/limits.md): file size, tensors,
    ops, subgraphs or buffer bytes; raised before the memory is spent."""


class UnsupportedModelError(QuantMCUError):
    """A valid model that this tool does not handle (float model, unknown op code, shape)."""


class UnsupportedOpError(UnsupportedModelError):
    """An op (named in the message) that a pass or the executor cannot handle."""


class BudgetError(QuantMCUError):
    """The SRAM or flash budget cannot be met; the message gives the best achievable figure."""


class ConfigError(QuantMCUError):
    """A command-line option or configuration value is malformed or out of range."""


class CalibrationDataError(QuantMCUError):
    """Calibration or evaluation data is empty, mis-shaped, NaN or of the wrong dtype."""


class OutputError(QuantMCUError):
    """An output path cannot be written."""


class RuntimeCheckError(QuantMCUError):
    """A runtime used as a check (LiteRT in the verify step) rejected or failed on a model."""


class OutputBusyError(OutputError):
    """Another `convert` holds the lock of the output directory."""


class CalibrationDataWarning(UserWarning):
    """Calibration data that works but gives poor statistics (e.g. too few samples).

    Not an error: the CLI prints it as `warning: <message>` on stderr and goes on.
    """
