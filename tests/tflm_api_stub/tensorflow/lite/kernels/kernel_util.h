// Stub: tensor helpers the QMCU glue uses (declarations only).
#ifndef QMCU_STUB_TFLITE_KERNELS_KERNEL_UTIL_H_
#define QMCU_STUB_TFLITE_KERNELS_KERNEL_UTIL_H_
#include "tensorflow/lite/c/common.h"
namespace tflite {
int NumInputs(const TfLiteNode* node);
int NumOutputs(const TfLiteNode* node);
int64_t NumElements(const TfLiteTensor* t);
}  // namespace tflite
#endif
