/* Private: the few Armv7E-M DSP operations the fast paths use, with portable C equivalents
 * when __ARM_FEATURE_DSP is not defined (host builds run the same algorithm). */
#ifndef QMCU_SIMD_H
#define QMCU_SIMD_H

#include <stdint.h>
#include <string.h>

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>
#define QMCU_HAVE_DSP 1
#else
#define QMCU_HAVE_DSP 0
#endif

/* Unaligned little-endian 32-bit load (one LDR on Cortex-M4/M7). */
static inline uint32_t qmcu_read_u32(const void *p) {
  uint32_t v;
  memcpy(&v, p, sizeof v);
  return v;
}

static inline uint32_t qmcu_pack16(int32_t lo, int32_t hi) {
  return ((uint32_t)lo & 0xffffu) | ((uint32_t)hi << 16);
}

#if QMCU_HAVE_DSP
/* bytes 0 and 2, sign-extended to two halfwords */
static inline uint32_t qmcu_sxtb16(uint32_t x) { return (uint32_t)__sxtb16((int32_t)x); }

/* bytes 1 and 3, sign-extended (SXTB16 with ROR #8) */
static inline uint32_t qmcu_sxtb16_ror8(uint32_t x) {
  uint32_t r;
  __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
  return r;
}

static inline int32_t qmcu_smlad(uint32_t a, uint32_t b, int32_t acc) {
  return __smlad((int32_t)a, (int32_t)b, acc);
}

static inline uint32_t qmcu_ssub16(uint32_t a, uint32_t b) {
  return (uint32_t)__ssub16((int32_t)a, (int32_t)b);
}

/* bytes 0 and 2, zero-extended to two halfwords */
static inline uint32_t qmcu_uxtb16(uint32_t x) { return (uint32_t)__uxtb16(x); }

/* acc + bottom(a) * bottom(b), acc + top(a) * top(b) (16-bit signed halves) */
static inline int32_t qmcu_smlabb(uint32_t a, uint32_t b, int32_t acc) {
  return __smlabb((int32_t)a, (int32_t)b, acc);
}

static inline int32_t qmcu_smlatt(uint32_t a, uint32_t b, int32_t acc) {
  return __smlatt((int32_t)a, (int32_t)b, acc);
}

/* zero-extended bytes 1 and 3 (UXTB16 with ROR 8) */
static inline uint32_t qmcu_uxtb16_ror8(uint32_t x) {
  uint32_t r;
  __asm__("uxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
  return r;
}

/* (a * b + 2^31) >> 32, the rounded high word of the product */
static inline int32_t qmcu_smmulr(int32_t a, int32_t b) {
  int32_t r;
  __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
  return r;
}

/* a + sign-extended bytes 0 and 2 of x, per halfword */
static inline uint32_t qmcu_sxtab16(uint32_t a, uint32_t x) {
  return (uint32_t)__sxtab16((int32_t)a, (int32_t)x);
}

/* a + sign-extended bytes 1 and 3 of x, per halfword */
static inline uint32_t qmcu_sxtab16_ror8(uint32_t a, uint32_t x) {
  uint32_t r;
  __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
  return r;
}

/* a + zero-extended bytes 0 and 2 of x, per halfword */
static inline uint32_t qmcu_uxtab16(uint32_t a, uint32_t x) { return (uint32_t)__uxtab16(a, x); }

/* a + zero-extended bytes 1 and 3 of x, per halfword */
static inline uint32_t qmcu_uxtab16_ror8(uint32_t a, uint32_t x) {
  uint32_t r;
  __asm__("uxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
  return r;
}

/* low halfword of a, low halfword of b on top */
static inline uint32_t qmcu_pkhbt16(uint32_t a, uint32_t b) {
  uint32_t r;
  __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(a), "r"(b));
  return r;
}

/* high halfword of b, high halfword of a on top */
static inline uint32_t qmcu_pkhtb16(uint32_t a, uint32_t b) {
  uint32_t r;
  __asm__("pkhtb %0, %1, %2, asr #16" : "=r"(r) : "r"(a), "r"(b));
  return r;
}
#else
static inline int32_t qmcu_lo16(uint32_t x) { return (int32_t)(int16_t)(uint16_t)(x & 0xffffu); }

static inline int32_t qmcu_hi16(uint32_t x) { return (int32_t)(int16_t)(uint16_t)(x >> 16); }

static inline uint32_t qmcu_sxtb16(uint32_t x) {
  return qmcu_pack16((int8_t)(uint8_t)(x & 0xffu), (int8_t)(uint8_t)((x >> 16) & 0xffu));
}

static inline uint32_t qmcu_sxtb16_ror8(uint32_t x) {
  return qmcu_pack16((int8_t)(uint8_t)((x >> 8) & 0xffu), (int8_t)(uint8_t)(x >> 24));
}

static inline int32_t qmcu_smlad(uint32_t a, uint32_t b, int32_t acc) {
  return (int32_t)((uint32_t)acc + (uint32_t)(qmcu_lo16(a) * qmcu_lo16(b)) +
                   (uint32_t)(qmcu_hi16(a) * qmcu_hi16(b)));
}

static inline uint32_t qmcu_ssub16(uint32_t a, uint32_t b) {
  return qmcu_pack16(qmcu_lo16(a) - qmcu_lo16(b), qmcu_hi16(a) - qmcu_hi16(b));
}

static inline uint32_t qmcu_uxtb16(uint32_t x) { return x & 0x00ff00ffu; }

static inline uint32_t qmcu_uxtb16_ror8(uint32_t x) { return (x >> 8) & 0x00ff00ffu; }

static inline int32_t qmcu_smmulr(int32_t a, int32_t b) {
  return (int32_t)(((int64_t)a * b + ((int64_t)1 << 31)) >> 32);
}

static inline int32_t qmcu_smlabb(uint32_t a, uint32_t b, int32_t acc) {
  return (int32_t)((uint32_t)acc + (uint32_t)(qmcu_lo16(a) * qmcu_lo16(b)));
}

static inline int32_t qmcu_smlatt(uint32_t a, uint32_t b, int32_t acc) {
  return (int32_t)((uint32_t)acc + (uint32_t)(qmcu_hi16(a) * qmcu_hi16(b)));
}

static inline uint32_t qmcu_sxtab16(uint32_t a, uint32_t x) {
  return qmcu_pack16(qmcu_lo16(a) + (int8_t)(uint8_t)(x & 0xffu),
                     qmcu_hi16(a) + (int8_t)(uint8_t)((x >> 16) & 0xffu));
}

static inline uint32_t qmcu_sxtab16_ror8(uint32_t a, uint32_t x) {
  return qmcu_pack16(qmcu_lo16(a) + (int8_t)(uint8_t)((x >> 8) & 0xffu),
                     qmcu_hi16(a) + (int8_t)(uint8_t)(x >> 24));
}

static inline uint32_t qmcu_uxtab16(uint32_t a, uint32_t x) {
  return qmcu_pack16((int32_t)((a + (x & 0xffu)) & 0xffffu),
                     (int32_t)(((a >> 16) + ((x >> 16) & 0xffu)) & 0xffffu));
}

static inline uint32_t qmcu_uxtab16_ror8(uint32_t a, uint32_t x) { return qmcu_uxtab16(a, x >> 8); }

static inline uint32_t qmcu_pkhbt16(uint32_t a, uint32_t b) {
  return (a & 0xffffu) | (b << 16);
}

static inline uint32_t qmcu_pkhtb16(uint32_t a, uint32_t b) {
  return (a & 0xffff0000u) | (b >> 16);
}
#endif

#endif /* QMCU_SIMD_H */
