"""tflite-quantmcu: fit int8 TFLite models onto microcontrollers."""
