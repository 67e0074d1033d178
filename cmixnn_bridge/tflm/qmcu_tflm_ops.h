/* TensorFlow Lite Micro registrations of the QMCU_* custom ops (docs/qmcu_ops.md).
 *
 *   static tflite::MicroMutableOpResolver<N> resolver;
 *   resolver.AddCustom("QMCU_CONV_2D", tflite::Register_QMCU_CONV_2D());
 *   ...or tflite::AddQmcuOps(resolver) for all of them.
 */
#ifndef CMIXNN_BRIDGE_TFLM_QMCU_TFLM_OPS_H_
#define CMIXNN_BRIDGE_TFLM_QMCU_TFLM_OPS_H_

#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/micro/micro_common.h"

namespace tflite {

// Each returns a pointer to a static registration, as AddCustom() expects.
TFLMRegistration* Register_QMCU_CONV_2D();
TFLMRegistration* Register_QMCU_DEPTHWISE_CONV_2D();
TFLMRegistration* Register_QMCU_ADD();
TFLMRegistration* Register_QMCU_AVERAGE_POOL_2D();
TFLMRegistration* Register_QMCU_PACK();
TFLMRegistration* Register_QMCU_UNPACK();
TFLMRegistration* Register_QMCU_PATCH_STAGE();

// The number of QMCU_* ops AddQmcuOps() adds (count them in the resolver's capacity).
constexpr int kQmcuOpCount = 7;

// Adds every QMCU_* op to a MicroMutableOpResolver (or any type with AddCustom).
template <typename Resolver>
TfLiteStatus AddQmcuOps(Resolver& resolver) {
  struct Entry {
    const char* name;
    TFLMRegistration* (*registration)();
  };
  static const Entry kEntries[kQmcuOpCount] = {
      {"QMCU_CONV_2D", Register_QMCU_CONV_2D},
      {"QMCU_DEPTHWISE_CONV_2D", Register_QMCU_DEPTHWISE_CONV_2D},
      {"QMCU_ADD", Register_QMCU_ADD},
      {"QMCU_AVERAGE_POOL_2D", Register_QMCU_AVERAGE_POOL_2D},
      {"QMCU_PACK", Register_QMCU_PACK},
      {"QMCU_UNPACK", Register_QMCU_UNPACK},
      {"QMCU_PATCH_STAGE", Register_QMCU_PATCH_STAGE},
  };
  for (const Entry& entry : kEntries) {
    const TfLiteStatus status = resolver.AddCustom(entry.name, entry.registration());
    if (status != kTfLiteOk) return status;
  }
  return kTfLiteOk;
}

}  // namespace tflite

#endif  // CMIXNN_BRIDGE_TFLM_QMCU_TFLM_OPS_H_
