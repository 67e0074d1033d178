// Runs a model converted by tflite-quantmcu in TensorFlow Lite Micro with the files
// `convert` writes: <stem>_model_data.{h,cc} (the model as a C array) and
// <stem>_op_resolver.h (OpResolver, RegisterOps, kTensorArenaSize).
//
// Defaults to the demo model (`make demo`); for your own model define
//   -DQMCU_MODEL_DATA_H='"<stem>_model_data.h"' -DQMCU_OP_RESOLVER_H='"<stem>_op_resolver.h"'
//   -DQMCU_MODEL_NS=<stem>_model
// The input is a fixed pattern (byte i = (i * 7) % 256, as int8), so the printed outputs
// can be compared with `tflite-quantmcu run MODEL --data pattern.npy` (see README.md).
#include <cstdint>
#include <cstdio>

#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/schema/schema_generated.h"

#ifndef QMCU_MODEL_DATA_H
#define QMCU_MODEL_DATA_H "fashion_mnv2_r96_int8_model_data.h"
#define QMCU_OP_RESOLVER_H "fashion_mnv2_r96_int8_op_resolver.h"
#define QMCU_MODEL_NS fashion_mnv2_r96_int8_model
#endif
#include QMCU_MODEL_DATA_H
#include QMCU_OP_RESOLVER_H

namespace model = QMCU_MODEL_NS;

namespace {

alignas(16) uint8_t tensor_arena[model::kTensorArenaSize];

void FillPattern(TfLiteTensor* input) {
  for (size_t i = 0; i < input->bytes; ++i) {
    input->data.uint8[i] = static_cast<uint8_t>((i * 7) % 256);
  }
}

void PrintOutput(const TfLiteTensor* output) {
  std::printf("output");
  for (size_t i = 0; i < output->bytes; ++i) {
    std::printf(" %d", output->type == kTfLiteUInt8 ? static_cast<int>(output->data.uint8[i])
                                                    : static_cast<int>(output->data.int8[i]));
  }
  std::printf("\n");
}

}  // namespace

int main() {
  const tflite::Model* tflite_model = tflite::GetModel(model::kModelData);
  if (tflite_model->version() != TFLITE_SCHEMA_VERSION) {
    std::printf("error: model schema %lu, expected %d\n",
                static_cast<unsigned long>(tflite_model->version()), TFLITE_SCHEMA_VERSION);
    return 1;
  }
  static model::OpResolver resolver;
  if (model::RegisterOps(resolver) != kTfLiteOk) {
    std::printf("error: RegisterOps failed\n");
    return 1;
  }
  tflite::MicroInterpreter interpreter(tflite_model, resolver, tensor_arena,
                                       sizeof(tensor_arena));
  if (interpreter.AllocateTensors() != kTfLiteOk) {
    std::printf("error: AllocateTensors failed with a %u B arena\n",
                static_cast<unsigned>(sizeof(tensor_arena)));
    return 1;
  }
  FillPattern(interpreter.input(0));
  if (interpreter.Invoke() != kTfLiteOk) {
    std::printf("error: Invoke failed\n");
    return 1;
  }
  PrintOutput(interpreter.output(0));
  std::printf("arena_used_bytes %u of kTensorArenaSize %u\n",
              static_cast<unsigned>(interpreter.arena_used_bytes()),
              static_cast<unsigned>(sizeof(tensor_arena)));
  return 0;
}
