// Stub: the MicroContext calls the QMCU glue makes (declarations only).
#ifndef QMCU_STUB_TFLITE_MICRO_MICRO_CONTEXT_H_
#define QMCU_STUB_TFLITE_MICRO_MICRO_CONTEXT_H_
#include "tensorflow/lite/c/common.h"
namespace tflite {
class MicroContext {
 public:
  virtual ~MicroContext();
  virtual void* AllocatePersistentBuffer(size_t bytes) = 0;
  virtual TfLiteStatus RequestScratchBufferInArena(size_t bytes, int* buffer_idx) = 0;
  virtual void* GetScratchBuffer(int buffer_idx) = 0;
  virtual TfLiteTensor* AllocateTempInputTensor(const TfLiteNode* node, int index);
  virtual TfLiteTensor* AllocateTempOutputTensor(const TfLiteNode* node, int index);
  virtual void DeallocateTempTfLiteTensor(TfLiteTensor* tensor);
};
MicroContext* GetMicroContext(const TfLiteContext* context);
}  // namespace tflite
#endif
