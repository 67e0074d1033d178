"""tflite-quantmcu: fit int8 TFLite models onto microcontrollers."""

__version__ = "0.1.0"
