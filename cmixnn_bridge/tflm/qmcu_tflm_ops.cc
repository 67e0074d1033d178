/* TFLM glue of the QMCU_* custom ops: Init parses the flexbuffer options (docs/qmcu_ops.md)
 * with qmcu_parse_<op>_options() (qmcu_options_parse.h), Prepare validates tensors and requests
 * scratch, Invoke only dispatches to qmcu_*(). */
#include "qmcu_tflm_ops.h"

#include <cstdint>
#include <initializer_list>

#include "qmcu/qmcu.h"
#include "qmcu/qmcu_stage.h"
#include "qmcu_options_parse.h"
#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/kernels/kernel_util.h"
#include "tensorflow/lite/micro/kernels/kernel_util.h"
#include "tensorflow/lite/micro/micro_context.h"
#include "tensorflow/lite/micro/micro_log.h"

namespace tflite {
namespace {

constexpr int kNoScratch = -1;

// Options bytes as the parsers take them; nullptr/0 make them return false.
const uint8_t* OptionBytes(const char* buffer) {
  return reinterpret_cast<const uint8_t*>(buffer);
}

// ---------------------------------------------------------------- tensor checks
TfLiteType ActivationType(int32_t bits) { return bits == 8 ? kTfLiteInt8 : kTfLiteUInt8; }

// The stored shape of a (possibly packed) NHWC tensor: innermost dim = C * bits / 8.
bool HasStoredShape(const TfLiteTensor* t, const qmcu_dims& d, int32_t bits) {
  if (t == nullptr || t->dims == nullptr || t->dims->size != 4) return false;
  return t->dims->data[0] == d.n && t->dims->data[1] == d.h && t->dims->data[2] == d.w &&
         t->dims->data[3] == d.c * bits / 8;
}

TfLiteStatus CheckActivation(TfLiteContext* context, const TfLiteTensor* t,
                             const qmcu_dims& d, int32_t bits) {
  TF_LITE_ENSURE(context, t != nullptr);
  TF_LITE_ENSURE_TYPES_EQ(context, t->type, ActivationType(bits));
  TF_LITE_ENSURE(context, HasStoredShape(t, d, bits));
  return kTfLiteOk;
}

// ---------------------------------------------------------------- conv and depthwise
enum { kConvInput = 0, kConvFilter = 1, kConvBias = 2, kConvRequant = 3 };

struct ConvData {
  bool parsed;
  bool depthwise;
  qmcu_conv_params params;
  int scratch_index;
};

void* ConvInitCommon(TfLiteContext* context, const char* buffer, size_t length,
                     bool depthwise) {
  auto* data = static_cast<ConvData*>(
      GetMicroContext(context)->AllocatePersistentBuffer(sizeof(ConvData)));
  if (data == nullptr) return nullptr;
  data->depthwise = depthwise;
  data->scratch_index = kNoScratch;
  data->parsed =
      depthwise ? qmcu_parse_depthwise_conv_2d_options(OptionBytes(buffer), length, &data->params)
                : qmcu_parse_conv_2d_options(OptionBytes(buffer), length, &data->params);
  return data;
}

void* ConvInit(TfLiteContext* context, const char* buffer, size_t length) {
  return ConvInitCommon(context, buffer, length, /*depthwise=*/false);
}

void* DepthwiseInit(TfLiteContext* context, const char* buffer, size_t length) {
  return ConvInitCommon(context, buffer, length, /*depthwise=*/true);
}

TfLiteStatus CheckConvTensors(TfLiteContext* context, const ConvData& data,
                              const TfLiteTensor* input, const TfLiteTensor* filter,
                              const TfLiteTensor* bias, const TfLiteTensor* requant,
                              const TfLiteTensor* output) {
  const qmcu_conv_params& p = data.params;
  TF_LITE_ENSURE_OK(context, CheckActivation(context, input, p.input, p.in_bits));
  TF_LITE_ENSURE_OK(context, CheckActivation(context, output, p.output, p.out_bits));
  TF_LITE_ENSURE(context, filter != nullptr);
  TF_LITE_ENSURE(context, filter->type == kTfLiteInt8 || filter->type == kTfLiteUInt8);
  TF_LITE_ENSURE(context, HasStoredShape(filter, p.filter, p.w_bits));
  TF_LITE_ENSURE(context, requant != nullptr);
  TF_LITE_ENSURE_TYPES_EQ(context, requant->type, kTfLiteInt32);
  TF_LITE_ENSURE_EQ(context, NumElements(requant), 2 * p.output.c);
  if (bias != nullptr) {
    TF_LITE_ENSURE_TYPES_EQ(context, bias->type, kTfLiteInt32);
    TF_LITE_ENSURE_EQ(context, NumElements(bias), p.output.c);
  }
  return kTfLiteOk;
}

TfLiteStatus ConvPrepare(TfLiteContext* context, TfLiteNode* node) {
  TFLITE_DCHECK(node->user_data != nullptr);
  auto* data = static_cast<ConvData*>(node->user_data);
  if (!data->parsed) {
    MicroPrintf("QMCU conv: custom options are not a version-%d QMCU map", QMCU_OPTIONS_VERSION);
    return kTfLiteError;
  }
  TF_LITE_ENSURE_EQ(context, NumInputs(node), 4);
  TF_LITE_ENSURE_EQ(context, NumOutputs(node), 1);
  const qmcu_status check = data->depthwise ? qmcu_depthwise_conv_2d_check(&data->params)
                                            : qmcu_conv_2d_check(&data->params);
  if (check != QMCU_STATUS_OK) {
    MicroPrintf("QMCU conv: options break docs/qmcu_ops.md (status %d)", check);
    return kTfLiteError;
  }
  MicroContext* micro_context = GetMicroContext(context);
  TfLiteTensor* input = micro_context->AllocateTempInputTensor(node, kConvInput);
  TfLiteTensor* filter = micro_context->AllocateTempInputTensor(node, kConvFilter);
  TfLiteTensor* bias = micro_context->AllocateTempInputTensor(node, kConvBias);
  TfLiteTensor* requant = micro_context->AllocateTempInputTensor(node, kConvRequant);
  TfLiteTensor* output = micro_context->AllocateTempOutputTensor(node, 0);
  const TfLiteStatus status =
      CheckConvTensors(context, *data, input, filter, bias, requant, output);
  for (TfLiteTensor* t : {input, filter, bias, requant, output}) {
    if (t != nullptr) micro_context->DeallocateTempTfLiteTensor(t);
  }
  TF_LITE_ENSURE_OK(context, status);
  const size_t scratch = data->depthwise ? qmcu_depthwise_conv_2d_scratch_size(&data->params)
                                         : qmcu_conv_2d_scratch_size(&data->params);
  data->scratch_index = kNoScratch;
  if (scratch > 0) {
    TF_LITE_ENSURE_OK(context, micro_context->RequestScratchBufferInArena(
                                   scratch, &data->scratch_index));
  }
  return kTfLiteOk;
}

TfLiteStatus ConvEval(TfLiteContext* context, TfLiteNode* node) {
  const auto* data = static_cast<const ConvData*>(node->user_data);
  const TfLiteEvalTensor* input = micro::GetEvalInput(context, node, kConvInput);
  const TfLiteEvalTensor* filter = micro::GetEvalInput(context, node, kConvFilter);
  const TfLiteEvalTensor* bias = micro::GetEvalInput(context, node, kConvBias);
  const TfLiteEvalTensor* requant = micro::GetEvalInput(context, node, kConvRequant);
  TfLiteEvalTensor* output = micro::GetEvalOutput(context, node, 0);
  const int32_t* requant_data = micro::GetTensorData<int32_t>(requant);
  qmcu_conv_buffers buffers;
  buffers.input = input->data.raw_const;
  buffers.filter = filter->data.raw_const;
  buffers.bias = bias != nullptr ? micro::GetTensorData<int32_t>(bias) : nullptr;
  buffers.multiplier = requant_data;
  buffers.shift = requant_data + data->params.output.c;
  buffers.output = output->data.raw;
  buffers.scratch = data->scratch_index == kNoScratch
                        ? nullptr
                        : GetMicroContext(context)->GetScratchBuffer(data->scratch_index);
  const qmcu_status status = data->depthwise
                                 ? qmcu_depthwise_conv_2d(&data->params, &buffers)
                                 : qmcu_conv_2d(&data->params, &buffers);
  return status == QMCU_STATUS_OK ? kTfLiteOk : kTfLiteError;
}

// ---------------------------------------------------------------- add
struct AddData {
  bool parsed;
  qmcu_add_params params;
};

void* AddInit(TfLiteContext* context, const char* buffer, size_t length) {
  auto* data = static_cast<AddData*>(
      GetMicroContext(context)->AllocatePersistentBuffer(sizeof(AddData)));
  if (data == nullptr) return nullptr;
  data->parsed = qmcu_parse_add_options(OptionBytes(buffer), length, &data->params);
  return data;
}

TfLiteStatus AddPrepare(TfLiteContext* context, TfLiteNode* node) {
  TFLITE_DCHECK(node->user_data != nullptr);
  const auto* data = static_cast<const AddData*>(node->user_data);
  TF_LITE_ENSURE(context, data->parsed);
  TF_LITE_ENSURE_EQ(context, NumInputs(node), 2);
  TF_LITE_ENSURE_EQ(context, NumOutputs(node), 1);
  TF_LITE_ENSURE_EQ(context, qmcu_add_check(&data->params), QMCU_STATUS_OK);
  MicroContext* micro_context = GetMicroContext(context);
  TfLiteTensor* in1 = micro_context->AllocateTempInputTensor(node, 0);
  TfLiteTensor* in2 = micro_context->AllocateTempInputTensor(node, 1);
  TfLiteTensor* out = micro_context->AllocateTempOutputTensor(node, 0);
  const qmcu_add_params& p = data->params;
  TfLiteStatus status = CheckActivation(context, in1, p.shape, p.in1_bits);
  if (status == kTfLiteOk) status = CheckActivation(context, in2, p.shape, p.in2_bits);
  if (status == kTfLiteOk) status = CheckActivation(context, out, p.shape, p.out_bits);
  for (TfLiteTensor* t : {in1, in2, out}) {
    if (t != nullptr) micro_context->DeallocateTempTfLiteTensor(t);
  }
  return status;
}

TfLiteStatus AddEval(TfLiteContext* context, TfLiteNode* node) {
  const auto* data = static_cast<const AddData*>(node->user_data);
  qmcu_add_buffers buffers;
  buffers.input1 = micro::GetEvalInput(context, node, 0)->data.raw_const;
  buffers.input2 = micro::GetEvalInput(context, node, 1)->data.raw_const;
  buffers.output = micro::GetEvalOutput(context, node, 0)->data.raw;
  return qmcu_add(&data->params, &buffers) == QMCU_STATUS_OK ? kTfLiteOk : kTfLiteError;
}

// ---------------------------------------------------------------- average pool
struct PoolData {
  bool parsed;
  qmcu_avg_pool_params params;
};

void* PoolInit(TfLiteContext* context, const char* buffer, size_t length) {
  auto* data = static_cast<PoolData*>(
      GetMicroContext(context)->AllocatePersistentBuffer(sizeof(PoolData)));
  if (data == nullptr) return nullptr;
  data->parsed = qmcu_parse_average_pool_2d_options(OptionBytes(buffer), length, &data->params);
  return data;
}

TfLiteStatus PoolPrepare(TfLiteContext* context, TfLiteNode* node) {
  TFLITE_DCHECK(node->user_data != nullptr);
  const auto* data = static_cast<const PoolData*>(node->user_data);
  TF_LITE_ENSURE(context, data->parsed);
  TF_LITE_ENSURE_EQ(context, NumInputs(node), 1);
  TF_LITE_ENSURE_EQ(context, NumOutputs(node), 1);
  TF_LITE_ENSURE_EQ(context, qmcu_average_pool_2d_check(&data->params), QMCU_STATUS_OK);
  MicroContext* micro_context = GetMicroContext(context);
  TfLiteTensor* in = micro_context->AllocateTempInputTensor(node, 0);
  TfLiteTensor* out = micro_context->AllocateTempOutputTensor(node, 0);
  const qmcu_avg_pool_params& p = data->params;
  TfLiteStatus status = CheckActivation(context, in, p.input, p.in_bits);
  if (status == kTfLiteOk) status = CheckActivation(context, out, p.output, p.out_bits);
  for (TfLiteTensor* t : {in, out}) {
    if (t != nullptr) micro_context->DeallocateTempTfLiteTensor(t);
  }
  return status;
}

TfLiteStatus PoolEval(TfLiteContext* context, TfLiteNode* node) {
  const auto* data = static_cast<const PoolData*>(node->user_data);
  qmcu_unary_buffers buffers;
  buffers.input = micro::GetEvalInput(context, node, 0)->data.raw_const;
  buffers.output = micro::GetEvalOutput(context, node, 0)->data.raw;
  return qmcu_average_pool_2d(&data->params, &buffers) == QMCU_STATUS_OK ? kTfLiteOk
                                                                          : kTfLiteError;
}

// ---------------------------------------------------------------- pack / unpack
struct RequantData {
  bool parsed;
  bool pack;
  qmcu_requant_params params;
};

void* RequantInitCommon(TfLiteContext* context, const char* buffer, size_t length, bool pack) {
  auto* data = static_cast<RequantData*>(
      GetMicroContext(context)->AllocatePersistentBuffer(sizeof(RequantData)));
  if (data == nullptr) return nullptr;
  data->pack = pack;
  data->parsed = pack ? qmcu_parse_pack_options(OptionBytes(buffer), length, &data->params)
                      : qmcu_parse_unpack_options(OptionBytes(buffer), length, &data->params);
  return data;
}

void* PackInit(TfLiteContext* context, const char* buffer, size_t length) {
  return RequantInitCommon(context, buffer, length, /*pack=*/true);
}

void* UnpackInit(TfLiteContext* context, const char* buffer, size_t length) {
  return RequantInitCommon(context, buffer, length, /*pack=*/false);
}

TfLiteStatus RequantPrepare(TfLiteContext* context, TfLiteNode* node) {
  TFLITE_DCHECK(node->user_data != nullptr);
  const auto* data = static_cast<const RequantData*>(node->user_data);
  TF_LITE_ENSURE(context, data->parsed);
  TF_LITE_ENSURE_EQ(context, NumInputs(node), 1);
  TF_LITE_ENSURE_EQ(context, NumOutputs(node), 1);
  const qmcu_requant_params& p = data->params;
  TF_LITE_ENSURE_EQ(context, qmcu_requant_check(&p), QMCU_STATUS_OK);
  TF_LITE_ENSURE(context, data->pack ? p.in_bits == 8 : p.out_bits == 8);
  MicroContext* micro_context = GetMicroContext(context);
  TfLiteTensor* in = micro_context->AllocateTempInputTensor(node, 0);
  TfLiteTensor* out = micro_context->AllocateTempOutputTensor(node, 0);
  TfLiteStatus status = CheckActivation(context, in, p.shape, p.in_bits);
  if (status == kTfLiteOk) status = CheckActivation(context, out, p.shape, p.out_bits);
  for (TfLiteTensor* t : {in, out}) {
    if (t != nullptr) micro_context->DeallocateTempTfLiteTensor(t);
  }
  return status;
}

TfLiteStatus RequantEval(TfLiteContext* context, TfLiteNode* node) {
  const auto* data = static_cast<const RequantData*>(node->user_data);
  qmcu_unary_buffers buffers;
  buffers.input = micro::GetEvalInput(context, node, 0)->data.raw_const;
  buffers.output = micro::GetEvalOutput(context, node, 0)->data.raw;
  const qmcu_status status = data->pack ? qmcu_pack(&data->params, &buffers)
                                        : qmcu_unpack(&data->params, &buffers);
  return status == QMCU_STATUS_OK ? kTfLiteOk : kTfLiteError;
}

// ---------------------------------------------------------------- patch stage
// One persistent block per op: qmcu_stage_op_data, then the int32 pool of the parsed options
// (tensors, patch parts, layers and every layer's multipliers and shifts: the requantization of
// each layer once, not per patch). Prepare checks and requests the one scratch buffer.
constexpr int kMaxStageOperands = 256;

void* StageInit(TfLiteContext* context, const char* buffer, size_t length) {
  size_t words = 0;
  const bool sized = qmcu_parse_patch_stage_words(OptionBytes(buffer), length, &words);
  const size_t bytes = sizeof(qmcu_stage_op_data) + (sized ? words : 0) * sizeof(int32_t);
  auto* data = static_cast<qmcu_stage_op_data*>(
      GetMicroContext(context)->AllocatePersistentBuffer(bytes));
  if (data == nullptr) return nullptr;
  data->scratch_index = kNoScratch;
  data->parsed = sized && qmcu_parse_patch_stage_options(
                              OptionBytes(buffer), length, reinterpret_cast<int32_t*>(data + 1),
                              words, &data->params);
  return data;
}

TfLiteStatus CheckStageTensors(TfLiteContext* context, const qmcu_stage_params& p,
                               const TfLiteTensor* input, const TfLiteTensor* output) {
  const int32_t* first = p.pool;
  const int32_t* last = p.pool + QMCU_STAGE_TENSOR_WORDS * (p.num_tensors - 1);
  const qmcu_dims in_dims = {first[0], first[1], first[2], first[3]};
  const qmcu_dims out_dims = {last[0], last[1], last[2], last[3]};
  TF_LITE_ENSURE_OK(context, CheckActivation(context, input, in_dims, 8));
  TF_LITE_ENSURE_OK(context, CheckActivation(context, output, out_dims, 8));
  return kTfLiteOk;
}

// Version 2's variant data: per layer with variants one INT32 constant holding every variant's
// requant (2 n words at its offset: n = C_out for conv/depthwise, 3 for ADD, 1 for a rescaling
// average pool) and rescaled bias (C_out words); each must lie inside the constant.
TfLiteStatus CheckStageVariantOperands(TfLiteContext* context, TfLiteNode* node,
                                       const qmcu_stage_params& p) {
  int32_t at = static_cast<int32_t>(qmcu_stage_pool_words_for(p.num_tensors, p.num_layers,
                                                              p.grid_rows, p.grid_cols, 0));
  const int32_t* layers = p.pool + at - QMCU_STAGE_LAYER_WORDS * p.num_layers;
  for (int32_t n = 0; n < p.num_layers; ++n) at += 2 * layers[QMCU_STAGE_LAYER_WORDS * n +
                                                              QMCU_STAGE_L_REQUANT_COUNT];
  if (at == p.pool_words) return kTfLiteOk;
  const int32_t patches = p.grid_rows * p.grid_cols;
  MicroContext* micro_context = GetMicroContext(context);
  for (int32_t n = 0; n < p.num_layers; ++n) {
    const int32_t* L = layers + QMCU_STAGE_LAYER_WORDS * n;
    const int32_t* e = p.pool + at + p.num_tensors + QMCU_STAGE_LAYER_EXT_WORDS * n;
    const int32_t count = e[0];
    const int32_t table = e[1];
    const int32_t kind = L[QMCU_STAGE_L_KIND];
    const int32_t channels = p.pool[QMCU_STAGE_TENSOR_WORDS * L[QMCU_STAGE_L_OUTPUT] + 3];
    const int32_t n_requant = kind == QMCU_STAGE_ADD ? 3
                              : kind == QMCU_STAGE_AVERAGE_POOL_2D ? 1 : channels;
    if (table < 0) continue;
    int64_t need = 0;  // words of the variant data the variants read
    for (int32_t v = 0; v < count; ++v) {
      const int32_t* r = p.pool + table + patches + QMCU_STAGE_VARIANT_WORDS * v;
      if (r[2] >= 0) need = need > int64_t{r[2]} + channels ? need : int64_t{r[2]} + channels;
      if (r[3] >= 0) {
        need = need > int64_t{r[3]} + 2 * n_requant ? need : int64_t{r[3]} + 2 * n_requant;
      }
    }
    TfLiteTensor* t = micro_context->AllocateTempInputTensor(node, e[2]);
    const bool ok = t != nullptr && t->type == kTfLiteInt32 &&
                    static_cast<int64_t>(t->bytes) >= need * static_cast<int64_t>(sizeof(int32_t));
    if (t != nullptr) micro_context->DeallocateTempTfLiteTensor(t);
    if (!ok) {
      MicroPrintf("QMCU_PATCH_STAGE: layer %d: variant data (input %d) is not INT32 of %d values",
                  static_cast<int>(n), static_cast<int>(e[2]), static_cast<int>(need));
      return kTfLiteError;
    }
  }
  return kTfLiteOk;
}

TfLiteStatus StagePrepare(TfLiteContext* context, TfLiteNode* node) {
  TFLITE_DCHECK(node->user_data != nullptr);
  auto* data = static_cast<qmcu_stage_op_data*>(node->user_data);
  if (!data->parsed) {
    MicroPrintf("QMCU_PATCH_STAGE: custom options are not a version-1 or version-2 stage map");
    return kTfLiteError;
  }
  TF_LITE_ENSURE(context, NumInputs(node) >= 1 && NumInputs(node) <= kMaxStageOperands);
  TF_LITE_ENSURE_EQ(context, NumOutputs(node), 1);
  if (qmcu_patch_stage_check(&data->params, NumInputs(node)) != QMCU_STATUS_OK) {
    MicroPrintf("QMCU_PATCH_STAGE: options break docs/qmcu_ops.md section 8");
    return kTfLiteError;
  }
  MicroContext* micro_context = GetMicroContext(context);
  TfLiteTensor* input = micro_context->AllocateTempInputTensor(node, 0);
  TfLiteTensor* output = micro_context->AllocateTempOutputTensor(node, 0);
  const TfLiteStatus status = CheckStageTensors(context, data->params, input, output);
  for (TfLiteTensor* t : {input, output}) {
    if (t != nullptr) micro_context->DeallocateTempTfLiteTensor(t);
  }
  TF_LITE_ENSURE_OK(context, status);
  TF_LITE_ENSURE_OK(context, CheckStageVariantOperands(context, node, data->params));
  const size_t scratch = qmcu_patch_stage_scratch_size(&data->params);
  int index = kNoScratch;
  if (scratch > 0) {
    TF_LITE_ENSURE_OK(context, micro_context->RequestScratchBufferInArena(scratch, &index));
  }
  data->scratch_index = index;
  return kTfLiteOk;
}

TfLiteStatus StageEval(TfLiteContext* context, TfLiteNode* node) {
  const auto* data = static_cast<const qmcu_stage_op_data*>(node->user_data);
  const void* operands[kMaxStageOperands];
  const int count = NumInputs(node);
  for (int k = 0; k < count; ++k) {
    const TfLiteEvalTensor* t = micro::GetEvalInput(context, node, k);
    operands[k] = t != nullptr ? t->data.raw_const : nullptr;
  }
  qmcu_stage_buffers buffers;
  buffers.input = operands[0];
  buffers.output = micro::GetEvalOutput(context, node, 0)->data.raw;
  buffers.scratch = data->scratch_index == kNoScratch
                        ? nullptr
                        : GetMicroContext(context)->GetScratchBuffer(
                              static_cast<int>(data->scratch_index));
  buffers.operands = operands;
  buffers.num_operands = count;
  return qmcu_patch_stage(&data->params, &buffers) == QMCU_STATUS_OK ? kTfLiteOk : kTfLiteError;
}

}  // namespace

TFLMRegistration* Register_QMCU_PATCH_STAGE() {
  static TFLMRegistration r = micro::RegisterOp(StageInit, StagePrepare, StageEval);
  return &r;
}

TFLMRegistration* Register_QMCU_CONV_2D() {
  static TFLMRegistration r = micro::RegisterOp(ConvInit, ConvPrepare, ConvEval);
  return &r;
}

TFLMRegistration* Register_QMCU_DEPTHWISE_CONV_2D() {
  static TFLMRegistration r = micro::RegisterOp(DepthwiseInit, ConvPrepare, ConvEval);
  return &r;
}

TFLMRegistration* Register_QMCU_ADD() {
  static TFLMRegistration r = micro::RegisterOp(AddInit, AddPrepare, AddEval);
  return &r;
}

TFLMRegistration* Register_QMCU_AVERAGE_POOL_2D() {
  static TFLMRegistration r = micro::RegisterOp(PoolInit, PoolPrepare, PoolEval);
  return &r;
}

TFLMRegistration* Register_QMCU_PACK() {
  static TFLMRegistration r = micro::RegisterOp(PackInit, RequantPrepare, RequantEval);
  return &r;
}

TFLMRegistration* Register_QMCU_UNPACK() {
  static TFLMRegistration r = micro::RegisterOp(UnpackInit, RequantPrepare, RequantEval);
  return &r;
}

}  // namespace tflite
