// Stub: TFLM logging (declaration only).
#ifndef QMCU_STUB_TFLITE_MICRO_MICRO_LOG_H_
#define QMCU_STUB_TFLITE_MICRO_MICRO_LOG_H_
void MicroPrintf(const char* format, ...);
#endif
