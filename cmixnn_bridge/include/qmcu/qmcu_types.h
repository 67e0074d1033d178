/* Common types and integer arithmetic of the QMCU kernels (docs/qmcu_ops.md §1). C99. */
#ifndef QMCU_TYPES_H
#define QMCU_TYPES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  QMCU_STATUS_OK = 0,
  QMCU_STATUS_BAD_PARAMS = 1,  /* parameters break docs/qmcu_ops.md */
  QMCU_STATUS_UNSUPPORTED = 2  /* a fast path was called with parameters it does not take */
} qmcu_status;

/* Logical (unpacked) NHWC dimensions; for conv filters n = C_out (OHWI). */
typedef struct {
  int32_t n;
  int32_t h;
  int32_t w;
  int32_t c;
} qmcu_dims;

/* Explicit, authoritative padding plus strides and dilations (docs §1.7). */
typedef struct {
  int32_t stride_h;
  int32_t stride_w;
  int32_t dilation_h;
  int32_t dilation_w;
  int32_t pad_top;
  int32_t pad_bottom;
  int32_t pad_left;
  int32_t pad_right;
} qmcu_geometry;

/* TFLM reference MultiplyByQuantizedMultiplier (docs §1.3). */
static inline int32_t qmcu_mbqm(int32_t x, int32_t multiplier, int32_t shift) {
  const int32_t left = shift > 0 ? shift : 0;
  const int32_t right = shift > 0 ? 0 : -shift;
  const int32_t xs = (int32_t)((uint32_t)x << left);
  int32_t high;
  int32_t mask;
  int32_t threshold;
  if (xs == INT32_MIN && multiplier == INT32_MIN) {
    high = INT32_MAX;
  } else {
    const int64_t prod = (int64_t)xs * (int64_t)multiplier;
    high = (int32_t)((prod + ((int64_t)1 << 30)) >> 31);
  }
  mask = (int32_t)(((int64_t)1 << right) - 1);
  threshold = (mask >> 1) + (high < 0 ? 1 : 0);
  return (high >> right) + ((high & mask) > threshold ? 1 : 0);
}

static inline int32_t qmcu_clamp(int32_t v, int32_t lo, int32_t hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

/* Element `index` (logical, flat) of an activation: int8 for 8 bits, unsigned packed else. */
static inline int32_t qmcu_load_act(const uint8_t *base, int32_t index, int32_t bits) {
  if (bits == 8) {
    return (int32_t)(int8_t)base[index];
  } else {
    const int32_t per_byte = 8 / bits;
    const uint32_t byte = base[index / per_byte];
    return (int32_t)((byte >> ((index % per_byte) * bits)) & ((1u << bits) - 1u));
  }
}

/* Element `index` of a weight tensor: signed, packed for 4 and 2 bits. */
static inline int32_t qmcu_load_weight(const uint8_t *base, int32_t index, int32_t bits) {
  if (bits == 8) {
    return (int32_t)(int8_t)base[index];
  } else {
    const int32_t sign = 1 << (bits - 1);
    return (qmcu_load_act(base, index, bits) ^ sign) - sign;
  }
}

/* Store an activation value (already clamped to its range). */
static inline void qmcu_store_act(uint8_t *base, int32_t index, int32_t bits, int32_t value) {
  if (bits == 8) {
    base[index] = (uint8_t)(value & 0xff);
  } else {
    const int32_t per_byte = 8 / bits;
    const uint32_t pos = (uint32_t)((index % per_byte) * bits);
    const uint32_t mask = ((1u << bits) - 1u) << pos;
    uint8_t *byte = &base[index / per_byte];
    *byte = (uint8_t)((*byte & ~mask) | (((uint32_t)value << pos) & mask));
  }
}

#ifdef __cplusplus
}
#endif

#endif /* QMCU_TYPES_H */
