/* Fast path of QMCU_DEPTHWISE_CONV_2D (docs §3), depth_multiplier 1, any weights bit width.
 *
 * One 32-bit load brings F = 32 / in_bits channels of a tap. They are widened to 16-bit pairs
 * (8 bits: SXTB16 / SXTB16 ROR 8 give channels (0,2), (1,3); 4/2 bits: a byte mask after a
 * shift of j*b, then UXTB16 / UXTB16 ROR 8 give (j, j+2p) and (j+p, j+3p) with p = 8 / in_bits)
 * and multiplied with SMLABB / SMLATT by the weights, which are widened once per call into
 * scratch in the same order. The input zero point is folded into the bias (bias - zp * sum of
 * the channel's weights); a padded tap reads a scratch pixel whose fields all equal the zero
 * point, so it adds zp * w, which the folded bias cancels: padding stays a real zero, as the
 * reference does it. Needs C % F == 0. Results equal qmcu_depthwise_conv_2d_ref bit for bit.
 *
 * Two forms share that scheme:
 * - fused (every channel qualifies: multiplier >= 0, shift in [-r_max, -1], and the
 *   accumulator bound |bias - zp*sum(w)| + max|x| * sum|w| below 2^30): the weights and the
 *   folded bias are stored doubled, so the accumulator is x2 = 2 * acc, and, as in the conv
 *   fast path (qmcu_conv_opt.c), with r = -shift and c = 2^(r-1) + zp_out * 2^r:
 *     high = (x2 * multiplier + 2^31) >> 32   (SMMULR, exactly SRDHM(acc, multiplier))
 *     out  = (c + high + (x2 >> 31)) >> r     (RDBPOT, round half away from zero, + zp)
 *   Weights are laid out [channel group][pass][tap][2 words], a pass being 4 channels (1 pass
 *   at 8 bits, 2 at 4, 4 at 2), so each pass runs over the taps with 4 accumulators in
 *   registers and one running weight pointer; a 3x3 filter is unrolled.
 * - generic (any other requantization): weights [tap][group][F/2 words], exact MBQM per value.
 */
#include "qmcu/qmcu_ops.h"
#include "qmcu_opt_common.h"
#include "qmcu_simd.h"

#define QMCU_DW_MAX_F 16
#define QMCU_DW_MAX_TAPS 64 /* KH * KW of the fast path, e.g. 7x7 or 8x8 */

int qmcu_depthwise_conv_2d_opt_supported(const qmcu_conv_params *p) {
  if (qmcu_depthwise_conv_2d_check(p) != QMCU_STATUS_OK) return 0;
  return p->depth_multiplier == 1 && p->input.c % (32 / p->in_bits) == 0 &&
         p->filter.h * p->filter.w <= QMCU_DW_MAX_TAPS;
}

size_t qmcu_depthwise_conv_2d_opt_scratch_size(const qmcu_conv_params *p) {
  if (!qmcu_depthwise_conv_2d_opt_supported(p)) return 0;
  return qmcu_align4((size_t)p->filter.h * p->filter.w * p->output.c * 2u) +
         (size_t)p->output.c * sizeof(int32_t) + (size_t)p->input.c * p->in_bits / 8u;
}

typedef struct {
  const uint32_t *wexp; /* taps * groups * F/2 words */
  int32_t *bias;        /* C folded biases */
  const uint8_t *zp_pixel; /* one input pixel whose every value is the zero point */
  int32_t f;            /* channels per input word */
  int32_t groups;       /* C / f */
  uint32_t zp_word;     /* a word whose every field is the input zero point */
} qmcu_dw_setup;

/* Channel pair of word w (0 .. F/2-1) in a group: low and high halfword channel. */
static void pair_channels(int32_t in_bits, int32_t word, int32_t *lo, int32_t *hi) {
  const int32_t per = 8 / in_bits;
  const int32_t j = word / 2;
  *lo = j + (word % 2) * per;
  *hi = *lo + 2 * per;
}

static qmcu_dw_setup prepare(const qmcu_conv_params *p, const qmcu_conv_buffers *b) {
  const int32_t taps = p->filter.h * p->filter.w;
  const int32_t c = p->output.c;
  const uint8_t *w = (const uint8_t *)b->filter;
  uint32_t *wexp = (uint32_t *)b->scratch;
  qmcu_dw_setup s;
  int32_t t, g, k, ch;
  s.f = 32 / p->in_bits;
  s.groups = c / s.f;
  s.wexp = wexp;
  s.bias = (int32_t *)((uint8_t *)b->scratch + qmcu_align4((size_t)taps * c * 2u));
  s.zp_word = p->in_bits == 8 ? 0x01010101u * (uint8_t)p->in_zero_point
                              : (p->in_bits == 4 ? 0x11111111u : 0x55555555u) *
                                    (uint32_t)p->in_zero_point;
  {
    uint8_t *zp_pixel = (uint8_t *)(s.bias + c);
    for (k = 0; k < p->input.c * p->in_bits / 8; ++k) zp_pixel[k] = (uint8_t)s.zp_word;
    s.zp_pixel = zp_pixel;
  }
  for (ch = 0; ch < c; ++ch) {
    int32_t sum = 0;
    for (t = 0; t < taps; ++t) sum += qmcu_load_weight(w, t * c + ch, p->w_bits);
    s.bias[ch] = (b->bias != NULL ? b->bias[ch] : 0) - p->in_zero_point * sum;
  }
  for (t = 0; t < taps; ++t) {
    for (g = 0; g < s.groups; ++g) {
      for (k = 0; k < s.f / 2; ++k) {
        int32_t lo, hi;
        pair_channels(p->in_bits, k, &lo, &hi);
        *wexp++ = qmcu_pack16(qmcu_load_weight(w, t * c + g * s.f + lo, p->w_bits),
                              qmcu_load_weight(w, t * c + g * s.f + hi, p->w_bits));
      }
    }
  }
  return s;
}

/* acc[k] for the F channels of one group, summed over the valid-or-padded taps. */
static void group_s8(const uint8_t *const *x, int32_t off, const uint32_t *w, int32_t taps,
                     int32_t stride, int32_t *acc) {
  int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  int32_t t;
  for (t = 0; t < taps; ++t, w += stride) {
    const uint32_t v = qmcu_read_u32(x[t] + off);
    const uint32_t e = qmcu_sxtb16(v), o = qmcu_sxtb16_ror8(v);
    a0 = qmcu_smlabb(e, w[0], a0);
    a2 = qmcu_smlatt(e, w[0], a2);
    a1 = qmcu_smlabb(o, w[1], a1);
    a3 = qmcu_smlatt(o, w[1], a3);
  }
  acc[0] = a0;
  acc[1] = a1;
  acc[2] = a2;
  acc[3] = a3;
}

static void group_u4(const uint8_t *const *x, int32_t off, const uint32_t *w, int32_t taps,
                     int32_t stride, int32_t *acc) {
  int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
  int32_t t;
  for (t = 0; t < taps; ++t, w += stride) {
    const uint32_t v = qmcu_read_u32(x[t] + off);
    const uint32_t v0 = v & 0x0f0f0f0fu;        /* bytes: ch 0 2 4 6 */
    const uint32_t v1 = (v >> 4) & 0x0f0f0f0fu; /* bytes: ch 1 3 5 7 */
    const uint32_t e0 = qmcu_uxtb16(v0), o0 = qmcu_uxtb16(v0 >> 8);
    const uint32_t e1 = qmcu_uxtb16(v1), o1 = qmcu_uxtb16(v1 >> 8);
    a0 = qmcu_smlabb(e0, w[0], a0); /* (0, 4) */
    a4 = qmcu_smlatt(e0, w[0], a4);
    a2 = qmcu_smlabb(o0, w[1], a2); /* (2, 6) */
    a6 = qmcu_smlatt(o0, w[1], a6);
    a1 = qmcu_smlabb(e1, w[2], a1); /* (1, 5) */
    a5 = qmcu_smlatt(e1, w[2], a5);
    a3 = qmcu_smlabb(o1, w[3], a3); /* (3, 7) */
    a7 = qmcu_smlatt(o1, w[3], a7);
  }
  acc[0] = a0;
  acc[1] = a1;
  acc[2] = a2;
  acc[3] = a3;
  acc[4] = a4;
  acc[5] = a5;
  acc[6] = a6;
  acc[7] = a7;
}

static void group_u2(const uint8_t *const *x, int32_t off, const uint32_t *w, int32_t taps,
                     int32_t stride, int32_t *acc) {
  int32_t t, j;
  for (j = 0; j < 16; ++j) acc[j] = 0;
  for (t = 0; t < taps; ++t, w += stride) {
    const uint32_t word = qmcu_read_u32(x[t] + off);
    for (j = 0; j < 4; ++j) {
      const uint32_t v = (word >> (2 * j)) & 0x03030303u; /* bytes: ch j, j+4, j+8, j+12 */
      const uint32_t e = qmcu_uxtb16(v), o = qmcu_uxtb16(v >> 8);
      acc[j] = qmcu_smlabb(e, w[2 * j], acc[j]);
      acc[j + 8] = qmcu_smlatt(e, w[2 * j], acc[j + 8]);
      acc[j + 4] = qmcu_smlabb(o, w[2 * j + 1], acc[j + 4]);
      acc[j + 12] = qmcu_smlatt(o, w[2 * j + 1], acc[j + 12]);
    }
  }
}

/* Requantize and store the F outputs of one group (locals only: byte stores alias). */
static void store_group(const qmcu_conv_params *p, const qmcu_conv_buffers *b,
                        const qmcu_dw_setup *s, int32_t out_base, int32_t c0,
                        const int32_t *acc) {
  const int32_t zp = p->out_zero_point, lo = p->act_min, hi = p->act_max;
  const int32_t out_bits = p->out_bits, f = s->f;
  int32_t v[QMCU_DW_MAX_F];
  int32_t k;
  if (out_bits == 8) {
    int8_t *out = (int8_t *)b->output + out_base + c0;
    for (k = 0; k < f; ++k) {
      const int32_t ch = c0 + k;
      const int32_t a = acc[k] + s->bias[ch];
      const int32_t mult = b->multiplier[ch], shift = b->shift[ch];
      int32_t y;
      if (shift <= 0 && mult != INT32_MIN) {
        const int32_t right = -shift, mask = (int32_t)(((int64_t)1 << right) - 1);
        y = qmcu_requant_right(a, mult, right, mask, mask >> 1) + zp;
      } else {
        y = qmcu_mbqm(a, mult, shift) + zp;
      }
      out[k] = (int8_t)(y < lo ? lo : (y > hi ? hi : y));
    }
    return;
  }
  for (k = 0; k < f; ++k) {
    const int32_t ch = c0 + k;
    const int32_t a = acc[k] + s->bias[ch];
    const int32_t mult = b->multiplier[ch], shift = b->shift[ch];
    int32_t m;
    if (mult == INT32_MIN) {
      m = qmcu_mbqm(a, mult, shift); /* SRDHM's saturating case */
    } else {
      const qmcu_requant_fast r = qmcu_requant_setup(mult, shift);
      m = qmcu_requant_apply(&r, a);
    }
    v[k] = qmcu_clamp(m + zp, lo, hi);
  }
  if (out_bits == 8) {
    int8_t *out = (int8_t *)b->output + out_base + c0;
    for (k = 0; k < f; ++k) out[k] = (int8_t)v[k];
  } else {
    for (k = 0; k < f; ++k) qmcu_store_act((uint8_t *)b->output, out_base + c0 + k, out_bits, v[k]);
  }
}

/* Input pixel of every tap of output pixel (n, oy, ox); padding reads the zero-point pixel. */
static void tap_pointers(const qmcu_conv_params *p, const uint8_t *in, const uint8_t *zp_pixel,
                         int32_t n, int32_t oy, int32_t ox, const uint8_t **taps) {
  const qmcu_geometry *g = &p->geometry;
  const int32_t row_bytes = p->input.c * p->in_bits / 8;
  int32_t ky, kx;
  for (ky = 0; ky < p->filter.h; ++ky) {
    const int32_t iy = oy * g->stride_h - g->pad_top + ky * g->dilation_h;
    for (kx = 0; kx < p->filter.w; ++kx) {
      const int32_t ix = ox * g->stride_w - g->pad_left + kx * g->dilation_w;
      const int inside = iy >= 0 && iy < p->input.h && ix >= 0 && ix < p->input.w;
      *taps++ = inside ? in + ((n * p->input.h + iy) * p->input.w + ix) * row_bytes : zp_pixel;
    }
  }
}


/* ------------------------------------------------------------------ fused form */

#if defined(__GNUC__)
#define QMCU_DW_INLINE static inline __attribute__((always_inline))
#define QMCU_DW_UNROLL _Pragma("GCC unroll 9")
#define QMCU_DW_UNROLL_F _Pragma("GCC unroll 16")
#else
#define QMCU_DW_UNROLL_F
#define QMCU_DW_INLINE static inline
#define QMCU_DW_UNROLL
#endif

typedef struct {
  const uint32_t *wexp;  /* [group][pass][tap][2 words], doubled weights */
  const int32_t *bias2;  /* C: 2 * (bias - zp * sum of the channel's weights) */
  const int32_t *mult;
  const int32_t *shift;
  int32_t zp2p1;         /* 2 * out_zero_point + 1: c = (zp2p1 << r) >> 1 */
  int32_t lo;
  int32_t hi;
  int32_t natural;       /* [lo, hi] is the whole out_bits range: one SSAT/USAT */
} qmcu_dwf;

static inline int32_t dw_weight(const uint8_t *w, int32_t index, int32_t bits) {
  return bits == 8 ? (int32_t)(int8_t)w[index] : qmcu_load_weight(w, index, bits);
}

/* Writes the doubled folded biases; 1 when every channel meets the fused form's bounds (see
 * the file comment), else 0 (the generic form then rewrites the scratch). */
static int fused_biases(const qmcu_conv_params *p, const qmcu_conv_buffers *b, int32_t *bias2) {
  const int32_t taps = p->filter.h * p->filter.w, c = p->output.c, bits = p->w_bits;
  const uint8_t *w = (const uint8_t *)b->filter;
  const int64_t dx = p->in_bits == 8 ? 128 : (1 << p->in_bits) - 1;
  const int64_t zo = p->out_zero_point < 0 ? -(int64_t)p->out_zero_point : p->out_zero_point;
  int32_t ch, t;
  for (ch = 0; ch < c; ++ch) {
    const int32_t r = -b->shift[ch];
    int32_t sum = 0, sum_abs = 0, idx = ch;
    int64_t folded;
    if (b->multiplier[ch] < 0 || r < 1 || r > 30) return 0;
    if (((int64_t)1 << (r - 1)) + zo * ((int64_t)1 << r) >= ((int64_t)1 << 30) - 2) return 0;
    for (t = 0; t < taps; ++t, idx += c) {
      const int32_t v = dw_weight(w, idx, bits);
      sum += v;
      sum_abs += v < 0 ? -v : v;
    }
    folded = (b->bias != NULL ? b->bias[ch] : 0) - (int64_t)p->in_zero_point * sum;
    if ((folded < 0 ? -folded : folded) + dx * sum_abs >= ((int64_t)1 << 30)) return 0;
    bias2[ch] = (int32_t)(2 * folded);
  }
  return 1;
}

/* 1 and the fused form's scratch when the layer qualifies, else 0. */
static int fused_prepare(const qmcu_conv_params *p, const qmcu_conv_buffers *b,
                         const uint8_t **zp_pixel, qmcu_dwf *s) {
  const int32_t taps = p->filter.h * p->filter.w;
  const int32_t c = p->output.c, bits = p->w_bits;
  const int32_t f = 32 / p->in_bits, per = 8 / p->in_bits;
  const uint8_t *w = (const uint8_t *)b->filter;
  uint32_t *wexp = (uint32_t *)b->scratch;
  int32_t *bias2 = (int32_t *)((uint8_t *)b->scratch + qmcu_align4((size_t)taps * c * 2u));
  uint8_t *zpp = (uint8_t *)(bias2 + c);
  const uint32_t zp_word = p->in_bits == 8 ? 0x01010101u * (uint8_t)p->in_zero_point
                           : (p->in_bits == 4 ? 0x11111111u : 0x55555555u) *
                                 (uint32_t)p->in_zero_point;
  const int32_t lo = p->out_bits == 8 ? -128 : 0, hi = p->out_bits == 8 ? 127 : (1 << p->out_bits) - 1;
  int32_t g, j, t;
  if (!fused_biases(p, b, bias2)) return 0;
  for (j = 0; j < p->input.c * p->in_bits / 8; ++j) zpp[j] = (uint8_t)zp_word;
  *zp_pixel = zpp;
  for (g = 0; g < c / f; ++g) {
    for (j = 0; j < f / 4; ++j) {
      /* pass j: e = channels (j, j + 2p), o = (j + p, j + 3p) of the group */
      int32_t idx = g * f + j;
      for (t = 0; t < taps; ++t, idx += c) {
        *wexp++ = qmcu_pack16(2 * dw_weight(w, idx, bits), 2 * dw_weight(w, idx + 2 * per, bits));
        *wexp++ = qmcu_pack16(2 * dw_weight(w, idx + per, bits),
                              2 * dw_weight(w, idx + 3 * per, bits));
      }
    }
  }
  s->wexp = (const uint32_t *)b->scratch;
  s->bias2 = bias2;
  s->mult = b->multiplier;
  s->shift = b->shift;
  s->zp2p1 = 2 * p->out_zero_point + 1;
  s->lo = p->act_min;
  s->hi = p->act_max;
  s->natural = p->act_min == lo && p->act_max == hi;
  return 1;
}

QMCU_DW_INLINE int32_t dw_saturate(int32_t y, int32_t out_bits) {
#if QMCU_HAVE_DSP
  if (out_bits == 8) return __ssat(y, 8);
  if (out_bits == 4) return (int32_t)__usat(y, 4);
  return (int32_t)__usat(y, 2);
#else
  const int32_t lo = out_bits == 8 ? -128 : 0, hi = out_bits == 8 ? 127 : (1 << out_bits) - 1;
  return y < lo ? lo : (y > hi ? hi : y);
#endif
}

/* All C channels of one output pixel: x[t] is the input pixel of tap t, out its output. */
QMCU_DW_INLINE void fused_pixel(const qmcu_dwf *s, const uint8_t *const *x, int32_t groups,
                                int32_t taps, int32_t in_bits, int32_t out_bits, int32_t natural,
                                uint8_t *out) {
  const int32_t f = 32 / in_bits, per = 8 / in_bits, out_per = 8 / out_bits;
  const uint32_t *w = s->wexp;
  const int32_t *bias = s->bias2;
  const int32_t *mult = s->mult, *shift = s->shift;
  const int32_t zp2p1 = s->zp2p1, lo = s->lo, hi = s->hi;
  int32_t g;
  for (g = 0; g < groups; ++g) {
    int32_t acc[QMCU_DW_MAX_F];
    int32_t j, k;
    uint32_t byte = 0;
    for (j = 0; j < f / 4; ++j) {
      int32_t a0 = bias[j], a1 = bias[j + per], a2 = bias[j + 2 * per], a3 = bias[j + 3 * per];
      int32_t t;
      QMCU_DW_UNROLL
      for (t = 0; t < taps; ++t, w += 2) {
        const uint32_t v = qmcu_read_u32(x[t] + 4 * g);
        uint32_t e, o;
        if (in_bits == 8) {
          e = qmcu_sxtb16(v);
          o = qmcu_sxtb16_ror8(v);
        } else {
          const uint32_t u = (v >> (j * in_bits)) & (in_bits == 4 ? 0x0f0f0f0fu : 0x03030303u);
          e = qmcu_uxtb16(u);
          o = qmcu_uxtb16_ror8(u);
        }
        a0 = qmcu_smlabb(e, w[0], a0);
        a2 = qmcu_smlatt(e, w[0], a2);
        a1 = qmcu_smlabb(o, w[1], a1);
        a3 = qmcu_smlatt(o, w[1], a3);
      }
      acc[j] = a0;
      acc[j + per] = a1;
      acc[j + 2 * per] = a2;
      acc[j + 3 * per] = a3;
    }
    QMCU_DW_UNROLL_F
    for (k = 0; k < f; ++k) {
      const int32_t x2 = acc[k];
      const int32_t r = -shift[k];
      const int32_t c = (int32_t)((uint32_t)zp2p1 << r) >> 1;
      int32_t y = (c + qmcu_smmulr(x2, mult[k]) + (x2 >> 31)) >> r;
      if (natural) {
        y = dw_saturate(y, out_bits);
      } else {
        y = y < lo ? lo : (y > hi ? hi : y);
      }
      if (out_bits == 8) {
        out[k] = (uint8_t)y;
      } else {
        byte |= (uint32_t)y << ((k % out_per) * out_bits);
        if (k % out_per == out_per - 1) {
          out[k / out_per] = (uint8_t)byte;
          byte = 0;
        }
      }
    }
    bias += f;
    mult += f;
    shift += f;
    out += f * out_bits / 8;
  }
}

#define QMCU_DWF_VARIANTS(IB, OB)                                                             \
  static void fused_##IB##_##OB##_9(const qmcu_dwf *s, const uint8_t *const *x, int32_t groups, \
                                    int32_t taps, uint8_t *out) {                             \
    (void)taps;                                                                               \
    fused_pixel(s, x, groups, 9, IB, OB, 1, out);                                             \
  }                                                                                           \
  static void fused_##IB##_##OB##_n(const qmcu_dwf *s, const uint8_t *const *x, int32_t groups, \
                                    int32_t taps, uint8_t *out) {                             \
    fused_pixel(s, x, groups, taps, IB, OB, s->natural, out);                                 \
  }

QMCU_DWF_VARIANTS(8, 8)
QMCU_DWF_VARIANTS(8, 4)
QMCU_DWF_VARIANTS(8, 2)
QMCU_DWF_VARIANTS(4, 8)
QMCU_DWF_VARIANTS(4, 4)
QMCU_DWF_VARIANTS(4, 2)
QMCU_DWF_VARIANTS(2, 8)
QMCU_DWF_VARIANTS(2, 4)
QMCU_DWF_VARIANTS(2, 2)

typedef void (*qmcu_dwf_fn)(const qmcu_dwf *, const uint8_t *const *, int32_t, int32_t,
                            uint8_t *);

/* The 3x3 variants are unrolled and clamp with one SSAT/USAT (natural range only). */
static qmcu_dwf_fn fused_kernel(int32_t in_bits, int32_t out_bits, int32_t taps, int32_t natural) {
  static const qmcu_dwf_fn table[3][3][2] = {
      {{fused_8_8_9, fused_8_8_n}, {fused_8_4_9, fused_8_4_n}, {fused_8_2_9, fused_8_2_n}},
      {{fused_4_8_9, fused_4_8_n}, {fused_4_4_9, fused_4_4_n}, {fused_4_2_9, fused_4_2_n}},
      {{fused_2_8_9, fused_2_8_n}, {fused_2_4_9, fused_2_4_n}, {fused_2_2_9, fused_2_2_n}}};
  const int32_t i = in_bits == 8 ? 0 : (in_bits == 4 ? 1 : 2);
  const int32_t o = out_bits == 8 ? 0 : (out_bits == 4 ? 1 : 2);
  return table[i][o][taps == 9 && natural ? 0 : 1];
}

/* The fused form; 0 (nothing written to the output) when the layer does not qualify. */
static int fused_run(const qmcu_conv_params *p, const qmcu_conv_buffers *b) {
  const int32_t taps = p->filter.h * p->filter.w;
  const int32_t groups = p->output.c / (32 / p->in_bits);
  const int32_t out_row = p->output.c * p->out_bits / 8;
  const uint8_t *zp_pixel;
  qmcu_dwf s;
  qmcu_dwf_fn fn;
  const uint8_t *tap_ptr[QMCU_DW_MAX_TAPS];
  uint8_t *out = (uint8_t *)b->output;
  int32_t n, oy, ox;
  if (!fused_prepare(p, b, &zp_pixel, &s)) return 0;
  fn = fused_kernel(p->in_bits, p->out_bits, taps, s.natural);
  for (n = 0; n < p->output.n; ++n) {
    for (oy = 0; oy < p->output.h; ++oy) {
      for (ox = 0; ox < p->output.w; ++ox, out += out_row) {
        tap_pointers(p, (const uint8_t *)b->input, zp_pixel, n, oy, ox, tap_ptr);
        fn(&s, tap_ptr, groups, taps, out);
      }
    }
  }
  return 1;
}

qmcu_status qmcu_depthwise_conv_2d_opt(const qmcu_conv_params *p, const qmcu_conv_buffers *b) {
  const int32_t taps = p->filter.h * p->filter.w;
  const uint8_t *in;
  qmcu_dw_setup s;
  const uint8_t *tap_ptr[QMCU_DW_MAX_TAPS];
  int32_t acc[QMCU_DW_MAX_F];
  int32_t n, oy, ox, g;
  if (!qmcu_depthwise_conv_2d_opt_supported(p)) return QMCU_STATUS_UNSUPPORTED;
  if (b == NULL || b->scratch == NULL) return QMCU_STATUS_BAD_PARAMS;
  if (fused_run(p, b)) return QMCU_STATUS_OK;
  s = prepare(p, b);
  in = (const uint8_t *)b->input;
  for (n = 0; n < p->output.n; ++n) {
    for (oy = 0; oy < p->output.h; ++oy) {
      for (ox = 0; ox < p->output.w; ++ox) {
        const int32_t out_base = ((n * p->output.h + oy) * p->output.w + ox) * p->output.c;
        tap_pointers(p, in, s.zp_pixel, n, oy, ox, tap_ptr);
        for (g = 0; g < s.groups; ++g) {
          const uint32_t *w = s.wexp + g * (s.f / 2);
          if (p->in_bits == 8) {
            group_s8(tap_ptr, 4 * g, w, taps, s.groups * 2, acc);
          } else if (p->in_bits == 4) {
            group_u4(tap_ptr, 4 * g, w, taps, s.groups * 4, acc);
          } else {
            group_u2(tap_ptr, 4 * g, w, taps, s.groups * 8, acc);
          }
          store_group(p, b, &s, out_base, g * s.f, acc);
        }
      }
    }
  }
  return QMCU_STATUS_OK;
}
