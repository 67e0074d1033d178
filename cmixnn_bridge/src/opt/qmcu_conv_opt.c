/* Fast path of QMCU_CONV_2D for every bit-width combination (docs §2).
 *
 * Tiles of QMCU_OPT_PIX output pixels: their receptive fields are gathered once into a
 * 16-bit, zero-point-corrected column buffer (padding -> 0) in an order that matches how a
 * 32-bit word of weights is widened, then every output channel is a run of SMLADs over it:
 *   8-bit weights: SXTB16 / SXTB16 ROR 8 give pairs (w0,w2), (w1,w3) of a word;
 *   4/2-bit weights: XOR with 0x88../0xAA.. makes every field unsigned (w + 2^(b-1)); a mask
 *   (after a shift of i*b) gives the pair (w_i, w_{i+F/2}); the bias 2^(b-1) * sum(x) is
 *   subtracted per pixel afterwards.
 * So a weight word of F = 32 / w_bits values is paired with the column words
 *   (x_j, x_{j + F/2}), j = 0 .. F/2 - 1, and the columns of the tile are interleaved per word
 *   group so that the inner loop reads them sequentially: [group][pixel][j] for 8-bit weights,
 *   [group][j][pixel] for 4/2-bit weights (one widened weight pair meets 4 pixels at once).
 * Needs K = KH * KW * C_in to be a multiple of F; results equal qmcu_conv_2d_ref bit for bit.
 */
#include "qmcu/qmcu_ops.h"
#include "qmcu_opt_common.h"
#include "qmcu_simd.h"

#define QMCU_OPT_PIX 4

typedef struct {
  int32_t k;       /* KH * KW * C_in */
  int32_t f;       /* weights per 32-bit word */
  int32_t groups;  /* k / f */
  uint32_t *cols;  /* groups * PIX * f / 2 words */
  int16_t *lin;    /* k values of one pixel */
  int32_t *colsum; /* PIX sums of the column values */
} qmcu_conv_tile;

static int32_t depth_k(const qmcu_conv_params *p) { return p->filter.h * p->filter.w * p->input.c; }

int qmcu_conv_2d_opt_supported(const qmcu_conv_params *p) {
  if (qmcu_conv_2d_check(p) != QMCU_STATUS_OK) return 0;
  return depth_k(p) % (32 / p->w_bits) == 0;
}

static size_t align4(size_t n) { return (n + 3u) & ~(size_t)3u; }

size_t qmcu_conv_2d_opt_scratch_size(const qmcu_conv_params *p) {
  size_t k;
  if (!qmcu_conv_2d_opt_supported(p)) return 0;
  k = (size_t)depth_k(p);
  return align4(QMCU_OPT_PIX * k * 2u) + align4(k * 2u) + QMCU_OPT_PIX * sizeof(int32_t);
}

/* Zero-point-corrected values of C_in channels of one input pixel into dst. */
static void expand_run(const qmcu_conv_params *p, const uint8_t *src, int16_t *dst) {
  const int32_t zp = p->in_zero_point;
  int32_t i;
  if (p->in_bits == 8) {
    for (i = 0; i < p->input.c; ++i) dst[i] = (int16_t)((int8_t)src[i] - zp);
  } else if (p->in_bits == 4) {
    for (i = 0; i < p->input.c / 2; ++i) {
      dst[2 * i] = (int16_t)((src[i] & 0x0f) - zp);
      dst[2 * i + 1] = (int16_t)((src[i] >> 4) - zp);
    }
  } else {
    for (i = 0; i < p->input.c / 4; ++i) {
      const int32_t b = src[i];
      dst[4 * i] = (int16_t)((b & 3) - zp);
      dst[4 * i + 1] = (int16_t)(((b >> 2) & 3) - zp);
      dst[4 * i + 2] = (int16_t)(((b >> 4) & 3) - zp);
      dst[4 * i + 3] = (int16_t)((b >> 6) - zp);
    }
  }
}

/* Linear receptive field of output pixel q (flat over N*OH*OW) into t->lin. */
static void gather_linear(const qmcu_conv_params *p, const uint8_t *in, int32_t q,
                          const qmcu_conv_tile *t) {
  const qmcu_geometry *g = &p->geometry;
  const int32_t ox = q % p->output.w;
  const int32_t oy = (q / p->output.w) % p->output.h;
  const int32_t n = q / (p->output.w * p->output.h);
  const int32_t row_bytes = p->input.c * p->in_bits / 8;
  int16_t *dst = t->lin;
  int32_t ky, kx, i;
  for (ky = 0; ky < p->filter.h; ++ky) {
    const int32_t iy = oy * g->stride_h - g->pad_top + ky * g->dilation_h;
    for (kx = 0; kx < p->filter.w; ++kx, dst += p->input.c) {
      const int32_t ix = ox * g->stride_w - g->pad_left + kx * g->dilation_w;
      if (iy < 0 || iy >= p->input.h || ix < 0 || ix >= p->input.w) {
        for (i = 0; i < p->input.c; ++i) dst[i] = 0;
      } else {
        expand_run(p, in + ((n * p->input.h + iy) * p->input.w + ix) * row_bytes, dst);
      }
    }
  }
}

/* Interleave t->lin as column `slot` of the tile; returns the column sum. */
/* Word j of column `slot` inside a group (see the layouts above). */
static int32_t word_index(const qmcu_conv_tile *t, int32_t slot, int32_t j) {
  return t->f == 4 ? slot * 2 + j : j * QMCU_OPT_PIX + slot;
}

static int32_t scatter_column(const qmcu_conv_tile *t, int32_t slot) {
  const int32_t half = t->f / 2;
  const int32_t stride = QMCU_OPT_PIX * half;
  uint32_t *dst = t->cols;
  const int16_t *src = t->lin;
  int32_t sum = 0;
  int32_t g, j;
  if (t->f == 4) { /* [group][pixel][j] */
    for (g = 0; g < t->groups; ++g, dst += stride, src += 4) {
      dst[slot * 2] = qmcu_pack16(src[0], src[2]);
      dst[slot * 2 + 1] = qmcu_pack16(src[1], src[3]);
      sum += src[0] + src[1] + src[2] + src[3];
    }
    return sum;
  }
  for (g = 0; g < t->groups; ++g, dst += stride, src += t->f) { /* [group][j][pixel] */
    for (j = 0; j < half; ++j) {
      dst[j * QMCU_OPT_PIX + slot] = qmcu_pack16(src[j], src[j + half]);
      sum += src[j] + src[j + half];
    }
  }
  return sum;
}

/* 8-bit input, 4-bit weights, C_in % 8 == 0: 8 bytes -> pairs (x_j, x_{j+4}) into the
 * [group][j][pixel] layout; returns the column sum (for the unsigned-weight correction). */
static int32_t gather_s8_w4_direct(const qmcu_conv_params *p, const uint8_t *in, int32_t q,
                                   const qmcu_conv_tile *t, int32_t slot) {
  const qmcu_geometry *g = &p->geometry;
  const int32_t ox = q % p->output.w;
  const int32_t oy = (q / p->output.w) % p->output.h;
  const int32_t n = q / (p->output.w * p->output.h);
  const uint32_t zp2 = qmcu_pack16(p->in_zero_point, p->in_zero_point);
  uint32_t *dst = t->cols + slot;
  int32_t sum = 0;
  int32_t ky, kx, i;
  for (ky = 0; ky < p->filter.h; ++ky) {
    const int32_t iy = oy * g->stride_h - g->pad_top + ky * g->dilation_h;
    for (kx = 0; kx < p->filter.w; ++kx) {
      const int32_t ix = ox * g->stride_w - g->pad_left + kx * g->dilation_w;
      if (iy < 0 || iy >= p->input.h || ix < 0 || ix >= p->input.w) {
        for (i = 0; i < p->input.c; i += 8, dst += 4 * QMCU_OPT_PIX) {
          dst[0] = dst[QMCU_OPT_PIX] = dst[2 * QMCU_OPT_PIX] = dst[3 * QMCU_OPT_PIX] = 0;
        }
      } else {
        const uint8_t *src = in + ((n * p->input.h + iy) * p->input.w + ix) * p->input.c;
        for (i = 0; i < p->input.c; i += 8, dst += 4 * QMCU_OPT_PIX) {
          const uint32_t v0 = qmcu_read_u32(src + i), v1 = qmcu_read_u32(src + i + 4);
          const uint32_t e0 = qmcu_sxtb16(v0), o0 = qmcu_sxtb16_ror8(v0);
          const uint32_t e1 = qmcu_sxtb16(v1), o1 = qmcu_sxtb16_ror8(v1);
          const uint32_t p0 = qmcu_ssub16((e0 & 0xffffu) | (e1 << 16), zp2);         /* x0 x4 */
          const uint32_t p1 = qmcu_ssub16((o0 & 0xffffu) | (o1 << 16), zp2);         /* x1 x5 */
          const uint32_t p2 = qmcu_ssub16((e0 >> 16) | (e1 & 0xffff0000u), zp2);     /* x2 x6 */
          const uint32_t p3 = qmcu_ssub16((o0 >> 16) | (o1 & 0xffff0000u), zp2);     /* x3 x7 */
          dst[0] = p0;
          dst[QMCU_OPT_PIX] = p1;
          dst[2 * QMCU_OPT_PIX] = p2;
          dst[3 * QMCU_OPT_PIX] = p3;
          sum = qmcu_smlad(p0, 0x00010001u, sum);
          sum = qmcu_smlad(p1, 0x00010001u, sum);
          sum = qmcu_smlad(p2, 0x00010001u, sum);
          sum = qmcu_smlad(p3, 0x00010001u, sum);
        }
      }
    }
  }
  return sum;
}

/* 8-bit input and weights with C_in % 4 == 0: widen 4 bytes straight into 2 column words. */
static void gather_s8_direct(const qmcu_conv_params *p, const uint8_t *in, int32_t q,
                             const qmcu_conv_tile *t, int32_t slot) {
  const qmcu_geometry *g = &p->geometry;
  const int32_t ox = q % p->output.w;
  const int32_t oy = (q / p->output.w) % p->output.h;
  const int32_t n = q / (p->output.w * p->output.h);
  const uint32_t zp2 = qmcu_pack16(p->in_zero_point, p->in_zero_point);
  uint32_t *dst = t->cols + slot * 2;
  int32_t ky, kx, i;
  for (ky = 0; ky < p->filter.h; ++ky) {
    const int32_t iy = oy * g->stride_h - g->pad_top + ky * g->dilation_h;
    for (kx = 0; kx < p->filter.w; ++kx) {
      const int32_t ix = ox * g->stride_w - g->pad_left + kx * g->dilation_w;
      if (iy < 0 || iy >= p->input.h || ix < 0 || ix >= p->input.w) {
        for (i = 0; i < p->input.c; i += 4, dst += 2 * QMCU_OPT_PIX) dst[0] = dst[1] = 0;
      } else {
        const uint8_t *src = in + ((n * p->input.h + iy) * p->input.w + ix) * p->input.c;
        for (i = 0; i < p->input.c; i += 4, dst += 2 * QMCU_OPT_PIX) {
          const uint32_t v = qmcu_read_u32(src + i);
          dst[0] = qmcu_ssub16(qmcu_sxtb16(v), zp2);
          dst[1] = qmcu_ssub16(qmcu_sxtb16_ror8(v), zp2);
        }
      }
    }
  }
}

/* 4-bit input, 8-bit weights, C_in % 8 == 0: 8 nibbles -> (x0,x2) (x1,x3) (x4,x6) (x5,x7). */
static void gather_u4_direct(const qmcu_conv_params *p, const uint8_t *in, int32_t q,
                             const qmcu_conv_tile *t, int32_t slot) {
  const qmcu_geometry *g = &p->geometry;
  const int32_t ox = q % p->output.w;
  const int32_t oy = (q / p->output.w) % p->output.h;
  const int32_t n = q / (p->output.w * p->output.h);
  const uint32_t zp2 = qmcu_pack16(p->in_zero_point, p->in_zero_point);
  uint32_t *dst = t->cols + slot * 2;
  int32_t ky, kx, i;
  for (ky = 0; ky < p->filter.h; ++ky) {
    const int32_t iy = oy * g->stride_h - g->pad_top + ky * g->dilation_h;
    for (kx = 0; kx < p->filter.w; ++kx) {
      const int32_t ix = ox * g->stride_w - g->pad_left + kx * g->dilation_w;
      if (iy < 0 || iy >= p->input.h || ix < 0 || ix >= p->input.w) {
        for (i = 0; i < p->input.c; i += 4, dst += 2 * QMCU_OPT_PIX) dst[0] = dst[1] = 0;
      } else {
        const uint8_t *src = in + ((n * p->input.h + iy) * p->input.w + ix) * (p->input.c / 2);
        for (i = 0; i < p->input.c; i += 8, dst += 4 * QMCU_OPT_PIX) {
          const uint32_t v = qmcu_read_u32(src + i / 2);
          const uint32_t ev = v & 0x0f0f0f0fu;        /* bytes x0 x2 x4 x6 */
          const uint32_t od = (v >> 4) & 0x0f0f0f0fu; /* bytes x1 x3 x5 x7 */
          dst[0] = qmcu_ssub16((ev & 0xffu) | ((ev & 0xff00u) << 8), zp2);
          dst[1] = qmcu_ssub16((od & 0xffu) | ((od & 0xff00u) << 8), zp2);
          dst[2 * QMCU_OPT_PIX] = qmcu_ssub16(((ev >> 16) & 0xffu) | ((ev >> 8) & 0xff0000u), zp2);
          dst[2 * QMCU_OPT_PIX + 1] =
              qmcu_ssub16(((od >> 16) & 0xffu) | ((od >> 8) & 0xff0000u), zp2);
        }
      }
    }
  }
}

static void gather_tile(const qmcu_conv_params *p, const uint8_t *in, int32_t q0, int32_t valid,
                        const qmcu_conv_tile *t) {
  const int direct = p->in_bits == 8 && p->w_bits == 8 && p->input.c % 4 == 0;
  const int direct_u4 = p->in_bits == 4 && p->w_bits == 8 && p->input.c % 8 == 0;
  const int direct_s8_w4 = p->in_bits == 8 && p->w_bits == 4 && p->input.c % 8 == 0;
  int32_t s, g, j;
  for (s = 0; s < QMCU_OPT_PIX; ++s) {
    t->colsum[s] = 0;
    if (s >= valid) {
      uint32_t *dst = t->cols;
      for (g = 0; g < t->groups; ++g, dst += QMCU_OPT_PIX * (t->f / 2)) {
        for (j = 0; j < t->f / 2; ++j) dst[word_index(t, s, j)] = 0;
      }
    } else if (direct) {
      gather_s8_direct(p, in, q0 + s, t, s);
    } else if (direct_u4) {
      gather_u4_direct(p, in, q0 + s, t, s);
    } else if (direct_s8_w4) {
      t->colsum[s] = gather_s8_w4_direct(p, in, q0 + s, t, s);
    } else {
      gather_linear(p, in, q0 + s, t);
      t->colsum[s] = scatter_column(t, s);
    }
  }
}

/* acc[s] = sum over k of column s times an 8-bit weight row. */
#if QMCU_HAVE_DSP
/* Cortex-M: one group (4 weights x 4 pixels) = LDR, 2 LDM, 2 SXTB16, 8 SMLAD; two groups per
 * iteration (SUBS, BNE), an odd first group in C. */
static void dot_w8(const uint8_t *w, const uint32_t *x, int32_t groups, int32_t *acc) {
  int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  uint32_t wv, wo;
  if (groups & 1) {
    const uint32_t v = qmcu_read_u32(w);
    const uint32_t e = qmcu_sxtb16(v), o = qmcu_sxtb16_ror8(v);
    a0 = qmcu_smlad(o, x[1], qmcu_smlad(e, x[0], a0));
    a1 = qmcu_smlad(o, x[3], qmcu_smlad(e, x[2], a1));
    a2 = qmcu_smlad(o, x[5], qmcu_smlad(e, x[4], a2));
    a3 = qmcu_smlad(o, x[7], qmcu_smlad(e, x[6], a3));
    w += 4;
    x += 8;
  }
  groups >>= 1;
  if (groups == 0) {
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
    return;
  }
  __asm__ volatile(
      "1:\n\t"
      "ldr %[wv], [%[w]], #4\n\t"
      "ldmia %[x]!, {r8, r9, r10, r11}\n\t"
      "sxtb16 %[wo], %[wv], ror #8\n\t"
      "sxtb16 %[wv], %[wv]\n\t"
      "smlad %[a0], %[wv], r8, %[a0]\n\t"
      "smlad %[a0], %[wo], r9, %[a0]\n\t"
      "smlad %[a1], %[wv], r10, %[a1]\n\t"
      "smlad %[a1], %[wo], r11, %[a1]\n\t"
      "ldmia %[x]!, {r8, r9, r10, r11}\n\t"
      "smlad %[a2], %[wv], r8, %[a2]\n\t"
      "smlad %[a2], %[wo], r9, %[a2]\n\t"
      "smlad %[a3], %[wv], r10, %[a3]\n\t"
      "smlad %[a3], %[wo], r11, %[a3]\n\t"
      "ldr %[wv], [%[w]], #4\n\t"
      "ldmia %[x]!, {r8, r9, r10, r11}\n\t"
      "sxtb16 %[wo], %[wv], ror #8\n\t"
      "sxtb16 %[wv], %[wv]\n\t"
      "smlad %[a0], %[wv], r8, %[a0]\n\t"
      "smlad %[a0], %[wo], r9, %[a0]\n\t"
      "smlad %[a1], %[wv], r10, %[a1]\n\t"
      "smlad %[a1], %[wo], r11, %[a1]\n\t"
      "ldmia %[x]!, {r8, r9, r10, r11}\n\t"
      "smlad %[a2], %[wv], r8, %[a2]\n\t"
      "smlad %[a2], %[wo], r9, %[a2]\n\t"
      "smlad %[a3], %[wv], r10, %[a3]\n\t"
      "smlad %[a3], %[wo], r11, %[a3]\n\t"
      "subs %[n], %[n], #1\n\t"
      "bne 1b\n\t"
      : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [w] "+r"(w), [x] "+r"(x),
        [n] "+r"(groups), [wv] "=&r"(wv), [wo] "=&r"(wo)
      :
      : "r8", "r9", "r10", "r11", "cc", "memory");
  acc[0] = a0;
  acc[1] = a1;
  acc[2] = a2;
  acc[3] = a3;
}
#else
static void dot_w8(const uint8_t *w, const uint32_t *x, int32_t groups, int32_t *acc) {
  int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  int32_t g;
  for (g = 0; g < groups; ++g, w += 4, x += 8) {
    const uint32_t v = qmcu_read_u32(w);
    const uint32_t e = qmcu_sxtb16(v), o = qmcu_sxtb16_ror8(v);
    a0 = qmcu_smlad(o, x[1], qmcu_smlad(e, x[0], a0));
    a1 = qmcu_smlad(o, x[3], qmcu_smlad(e, x[2], a1));
    a2 = qmcu_smlad(o, x[5], qmcu_smlad(e, x[4], a2));
    a3 = qmcu_smlad(o, x[7], qmcu_smlad(e, x[6], a3));
  }
  acc[0] = a0;
  acc[1] = a1;
  acc[2] = a2;
  acc[3] = a3;
}
#endif

/* 4-bit weights: fields made unsigned (w + 8); the caller subtracts 8 * column sum.
 * Column words of a group: [j][pixel], j = 0..3 pairs (w_j, w_{j+4}). */
#if QMCU_HAVE_DSP
/* Cortex-M: one group (8 weights x 4 pixels) = LDR, EOR, 7 for the 4 pairs, 4 LDM, 16 SMLAD. */
static void dot_w4(const uint8_t *w, const uint32_t *x, int32_t groups, int32_t *acc) {
  int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  uint32_t u, t;
  __asm__ volatile(
      "1:\n\t"
      "ldr %[u], [%[w]], #4\n\t"
      "eor %[u], %[u], #0x88888888\n\t"
      "and %[t], %[u], #0x000f000f\n\t"
      "ldmia %[x]!, {r8, r9, r10, r11}\n\t"
      "smlad %[a0], %[t], r8, %[a0]\n\t"
      "smlad %[a1], %[t], r9, %[a1]\n\t"
      "smlad %[a2], %[t], r10, %[a2]\n\t"
      "smlad %[a3], %[t], r11, %[a3]\n\t"
      "lsr %[t], %[u], #4\n\t"
      "and %[t], %[t], #0x000f000f\n\t"
      "ldmia %[x]!, {r8, r9, r10, r11}\n\t"
      "smlad %[a0], %[t], r8, %[a0]\n\t"
      "smlad %[a1], %[t], r9, %[a1]\n\t"
      "smlad %[a2], %[t], r10, %[a2]\n\t"
      "smlad %[a3], %[t], r11, %[a3]\n\t"
      "lsr %[t], %[u], #8\n\t"
      "and %[t], %[t], #0x000f000f\n\t"
      "ldmia %[x]!, {r8, r9, r10, r11}\n\t"
      "smlad %[a0], %[t], r8, %[a0]\n\t"
      "smlad %[a1], %[t], r9, %[a1]\n\t"
      "smlad %[a2], %[t], r10, %[a2]\n\t"
      "smlad %[a3], %[t], r11, %[a3]\n\t"
      "lsr %[t], %[u], #12\n\t"
      "and %[t], %[t], #0x000f000f\n\t"
      "ldmia %[x]!, {r8, r9, r10, r11}\n\t"
      "smlad %[a0], %[t], r8, %[a0]\n\t"
      "smlad %[a1], %[t], r9, %[a1]\n\t"
      "smlad %[a2], %[t], r10, %[a2]\n\t"
      "smlad %[a3], %[t], r11, %[a3]\n\t"
      "subs %[n], %[n], #1\n\t"
      "bne 1b\n\t"
      : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [w] "+r"(w), [x] "+r"(x),
        [n] "+r"(groups), [u] "=&r"(u), [t] "=&r"(t)
      :
      : "r8", "r9", "r10", "r11", "cc", "memory");
  acc[0] = a0;
  acc[1] = a1;
  acc[2] = a2;
  acc[3] = a3;
}
#else
static void dot_w4(const uint8_t *w, const uint32_t *x, int32_t groups, int32_t *acc) {
  int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  int32_t g, j;
  for (g = 0; g < groups; ++g, w += 4) {
    const uint32_t u = qmcu_read_u32(w) ^ 0x88888888u;
    for (j = 0; j < 4; ++j, x += 4) {
      const uint32_t pair = (u >> (4 * j)) & 0x000f000fu;
      a0 = qmcu_smlad(pair, x[0], a0);
      a1 = qmcu_smlad(pair, x[1], a1);
      a2 = qmcu_smlad(pair, x[2], a2);
      a3 = qmcu_smlad(pair, x[3], a3);
    }
  }
  acc[0] = a0;
  acc[1] = a1;
  acc[2] = a2;
  acc[3] = a3;
}
#endif

/* 2-bit weights: fields made unsigned (w + 2); the caller subtracts 2 * column sum.
 * Column words of a group: [j][pixel], j = 0..7 pairs (w_j, w_{j+8}). */
static void dot_w2(const uint8_t *w, const uint32_t *x, int32_t groups, int32_t *acc) {
  int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  int32_t g, j;
  for (g = 0; g < groups; ++g, w += 4) {
    const uint32_t u = qmcu_read_u32(w) ^ 0xaaaaaaaau;
    for (j = 0; j < 8; ++j, x += 4) {
      const uint32_t pair = (u >> (2 * j)) & 0x00030003u;
      a0 = qmcu_smlad(pair, x[0], a0);
      a1 = qmcu_smlad(pair, x[1], a1);
      a2 = qmcu_smlad(pair, x[2], a2);
      a3 = qmcu_smlad(pair, x[3], a3);
    }
  }
  acc[0] = a0;
  acc[1] = a1;
  acc[2] = a2;
  acc[3] = a3;
}

static void store_outputs(const qmcu_conv_params *p, const qmcu_conv_buffers *b, int32_t q0,
                          int32_t valid, int32_t co, const int32_t *acc, const int32_t *colsum) {
  const int32_t bias = b->bias != NULL ? b->bias[co] : 0;
  const int32_t corr = p->w_bits == 8 ? 0 : 1 << (p->w_bits - 1);
  const int32_t multiplier = b->multiplier[co];
  const int32_t shift = b->shift[co];
  const int32_t zp = p->out_zero_point, lo = p->act_min, hi = p->act_max;
  const int32_t channels = p->output.c, out_bits = p->out_bits;
  const qmcu_requant_fast r = qmcu_requant_setup(multiplier, shift);
  int32_t v[QMCU_OPT_PIX];
  int32_t s;
  if (shift <= 0 && multiplier != INT32_MIN) {
    /* the common case, kept short: no left shift, no saturation */
    const int32_t right = r.right, mask = r.mask, half = r.half;
    int32_t a0 = acc[0] + bias, a1 = acc[1] + bias, a2 = acc[2] + bias, a3 = acc[3] + bias;
    if (corr != 0) { /* sub-byte weights: remove the 2^(b-1) * sum(x) of the unsigned fields */
      a0 -= corr * colsum[0];
      a1 -= corr * colsum[1];
      a2 -= corr * colsum[2];
      a3 -= corr * colsum[3];
    }
    v[0] = qmcu_clamp(qmcu_requant_right(a0, multiplier, right, mask, half) + zp, lo, hi);
    v[1] = qmcu_clamp(qmcu_requant_right(a1, multiplier, right, mask, half) + zp, lo, hi);
    v[2] = qmcu_clamp(qmcu_requant_right(a2, multiplier, right, mask, half) + zp, lo, hi);
    v[3] = qmcu_clamp(qmcu_requant_right(a3, multiplier, right, mask, half) + zp, lo, hi);
  } else {
    for (s = 0; s < valid; ++s) {
      const int32_t a = acc[s] - corr * colsum[s] + bias;
      /* multiplier INT32_MIN is SRDHM's saturating case: keep the generic form for it */
      v[s] = qmcu_clamp((multiplier == INT32_MIN ? qmcu_mbqm(a, multiplier, shift)
                                                 : qmcu_requant_apply(&r, a)) + zp,
                        lo, hi);
    }
  }
  if (out_bits == 8) {
    int8_t *out = (int8_t *)b->output + q0 * channels + co;
    for (s = 0; s < valid; ++s) out[s * channels] = (int8_t)v[s];
  } else {
    /* C is a multiple of 8 / out_bits: channel co sits at the same bit position in every pixel */
    const int32_t per = 8 / out_bits, stride = channels / per;
    const uint32_t pos = (uint32_t)((co % per) * out_bits);
    const uint32_t field = ((1u << out_bits) - 1u) << pos;
    uint8_t *out = (uint8_t *)b->output + q0 * stride + co / per;
    for (s = 0; s < valid; ++s, out += stride) {
      *out = (uint8_t)((*out & ~field) | (((uint32_t)v[s] << pos) & field));
    }
  }
}

qmcu_status qmcu_conv_2d_opt(const qmcu_conv_params *p, const qmcu_conv_buffers *b) {
  const int32_t pixels = p->output.n * p->output.h * p->output.w;
  const uint8_t *w;
  qmcu_conv_tile t;
  int32_t row_bytes, q0, co;
  if (!qmcu_conv_2d_opt_supported(p)) return QMCU_STATUS_UNSUPPORTED;
  if (b == NULL || b->scratch == NULL) return QMCU_STATUS_BAD_PARAMS;
  t.k = depth_k(p);
  t.f = 32 / p->w_bits;
  t.groups = t.k / t.f;
  t.cols = (uint32_t *)b->scratch;
  t.lin = (int16_t *)((uint8_t *)b->scratch + align4(QMCU_OPT_PIX * (size_t)t.k * 2u));
  t.colsum = (int32_t *)((uint8_t *)t.lin + align4((size_t)t.k * 2u));
  w = (const uint8_t *)b->filter;
  row_bytes = t.k * p->w_bits / 8;
  for (q0 = 0; q0 < pixels; q0 += QMCU_OPT_PIX) {
    const int32_t valid = pixels - q0 < QMCU_OPT_PIX ? pixels - q0 : QMCU_OPT_PIX;
    gather_tile(p, (const uint8_t *)b->input, q0, valid, &t);
    for (co = 0; co < p->output.c; ++co) {
      int32_t acc[QMCU_OPT_PIX];
      const uint8_t *row = w + co * row_bytes;
      if (p->w_bits == 8) {
        dot_w8(row, t.cols, t.groups, acc);
      } else if (p->w_bits == 4) {
        dot_w4(row, t.cols, t.groups, acc);
      } else {
        dot_w2(row, t.cols, t.groups, acc);
      }
      store_outputs(p, b, q0, valid, co, acc, t.colsum);
    }
  }
  return QMCU_STATUS_OK;
}
