// Stub: TFLM kernel helpers the QMCU glue uses (declarations only).
#ifndef QMCU_STUB_TFLITE_MICRO_KERNELS_KERNEL_UTIL_H_
#define QMCU_STUB_TFLITE_MICRO_KERNELS_KERNEL_UTIL_H_
#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/micro/micro_common.h"
namespace tflite {
namespace micro {
TFLMRegistration RegisterOp(void* (*init)(TfLiteContext*, const char*, size_t),
                            TfLiteStatus (*prepare)(TfLiteContext*, TfLiteNode*),
                            TfLiteStatus (*invoke)(TfLiteContext*, TfLiteNode*),
                            void (*free)(TfLiteContext*, void*) = nullptr,
                            void (*reset)(TfLiteContext*, void*) = nullptr);
const TfLiteEvalTensor* GetEvalInput(const TfLiteContext* context, const TfLiteNode* node, int index);
TfLiteEvalTensor* GetEvalOutput(const TfLiteContext* context, const TfLiteNode* node, int index);
template <typename T>
const T* GetTensorData(const TfLiteEvalTensor* tensor) {
  return tensor != nullptr ? static_cast<const T*>(tensor->data.raw_const) : nullptr;
}
template <typename T>
T* GetTensorData(TfLiteEvalTensor* tensor) {
  return tensor != nullptr ? static_cast<T*>(tensor->data.data) : nullptr;
}
}  // namespace micro
}  // namespace tflite
#endif
