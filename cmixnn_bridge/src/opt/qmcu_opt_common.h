/* Private helpers shared by the fast paths. */
#ifndef QMCU_OPT_COMMON_H
#define QMCU_OPT_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* MBQM split into per-channel constants (docs §1.3, same result for every int32 input). */
typedef struct {
  int32_t multiplier;
  int32_t left;
  int32_t right;
  int32_t mask;
  int32_t half;
} qmcu_requant_fast;

static inline qmcu_requant_fast qmcu_requant_setup(int32_t multiplier, int32_t shift) {
  qmcu_requant_fast r;
  r.multiplier = multiplier;
  r.left = shift > 0 ? shift : 0;
  r.right = shift > 0 ? 0 : -shift;
  r.mask = (int32_t)(((int64_t)1 << r.right) - 1);
  r.half = r.mask >> 1;
  return r;
}

static inline int32_t qmcu_requant_apply(const qmcu_requant_fast *r, int32_t x) {
  const int32_t xs = (int32_t)((uint32_t)x << r->left);
  const int64_t prod = (int64_t)xs * (int64_t)r->multiplier;
  const int32_t high = (int32_t)((prod + ((int64_t)1 << 30)) >> 31);
  const int32_t threshold = r->half - (high >> 31); /* +1 for negative values */
  return (high >> r->right) + ((high & r->mask) > threshold ? 1 : 0);
}

/* The common case of MBQM: shift <= 0 and multiplier != INT32_MIN (no left shift, no
 * saturation); exactly TFLite's SRDHM then RDBPOT. */
static inline int32_t qmcu_requant_right(int32_t x, int32_t multiplier, int32_t right,
                                         int32_t mask, int32_t half) {
  const int32_t high = (int32_t)(((int64_t)x * multiplier + ((int64_t)1 << 30)) >> 31);
  return (high >> right) + ((high & mask) > half - (high >> 31) ? 1 : 0);
}

static inline size_t qmcu_align4(size_t n) { return (n + 3u) & ~(size_t)3u; }

#endif /* QMCU_OPT_COMMON_H */
