// Stub of the TFLite C types the QMCU glue uses (declarations only; see tests/tflm_api_stub).
#ifndef QMCU_STUB_TFLITE_C_COMMON_H_
#define QMCU_STUB_TFLITE_C_COMMON_H_
#include <cstddef>
#include <cstdint>

typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;
typedef enum { kTfLiteNoType = 0, kTfLiteInt32 = 2, kTfLiteUInt8 = 3, kTfLiteInt8 = 9 } TfLiteType;
typedef struct { int size; int data[1]; } TfLiteIntArray;
typedef union { void* data; const void* raw_const; char* raw; int32_t* i32; int8_t* int8; } TfLitePtrUnion;
typedef struct { TfLitePtrUnion data; TfLiteIntArray* dims; TfLiteType type; } TfLiteEvalTensor;
typedef struct { TfLiteType type; TfLitePtrUnion data; TfLiteIntArray* dims; size_t bytes; } TfLiteTensor;
typedef struct { TfLiteIntArray* inputs; TfLiteIntArray* outputs; void* user_data; void* builtin_data; } TfLiteNode;
struct TfLiteContext;
typedef struct TfLiteContext TfLiteContext;
void TfLiteContextReport(TfLiteContext* context, const char* format, ...);

#define TFLITE_DCHECK(condition) ((void)(condition))
#define TF_LITE_ENSURE(context, a) \
  do { if (!(a)) { TfLiteContextReport((context), "%s", #a); return kTfLiteError; } } while (0)
#define TF_LITE_ENSURE_EQ(context, a, b) \
  do { if ((a) != (b)) { TfLiteContextReport((context), "%s != %s", #a, #b); return kTfLiteError; } } while (0)
#define TF_LITE_ENSURE_TYPES_EQ(context, a, b) TF_LITE_ENSURE_EQ(context, a, b)
#define TF_LITE_ENSURE_OK(context, status) \
  do { const TfLiteStatus s_ = (status); if (s_ != kTfLiteOk) return s_; } while (0)
#define TF_LITE_ENSURE_STATUS(status) \
  do { const TfLiteStatus s_ = (status); if (s_ != kTfLiteOk) return s_; } while (0)
#endif
