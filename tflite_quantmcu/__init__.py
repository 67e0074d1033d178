"""tflite-quantmcu: fit int8 TFLite models onto microcontrollers."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`tflite_quantmcu.convert` and `.analyze` (tflite_quantmcu.api), imported on first use."""
    if name in ("convert", "analyze"):
        from tflite_quantmcu import api

        return getattr(api, name)
    raise AttributeError(f"module 'tflite_quantmcu' has no attribute {name!r}")
