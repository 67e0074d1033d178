/* Fast path of QMCU_DEPTHWISE_CONV_2D (docs §3), depth_multiplier 1, any weights bit width.
 *
 * One 32-bit load brings F = 32 / in_bits channels of a tap. They are widened to 16-bit pairs
 * (8 bits: SXTB16 / SXTB16 ROR 8 give channels (0,2), (1,3); 4/2 bits: a byte mask after a
 * shift of j*b, then UXTB16 gives (j, j+2p) and (j+p, j+3p) with p = 8 / in_bits) and multiplied
 * with SMLABB / SMLATT by the weights, which are widened once per call into scratch in the same
 * order. The input zero point is folded into the bias (bias - zp * sum of the channel's weights);
 * a padded tap reads a scratch pixel whose fields all equal the zero point, so it adds zp * w, which the
 * folded bias cancels: padding stays a real zero, as the reference does it.
 * Needs C % F == 0. Results equal qmcu_depthwise_conv_2d_ref bit for bit.
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

qmcu_status qmcu_depthwise_conv_2d_opt(const qmcu_conv_params *p, const qmcu_conv_buffers *b) {
  const int32_t taps = p->filter.h * p->filter.w;
  const uint8_t *in;
  qmcu_dw_setup s;
  const uint8_t *tap_ptr[QMCU_DW_MAX_TAPS];
  int32_t acc[QMCU_DW_MAX_F];
  int32_t n, oy, ox, g;
  if (!qmcu_depthwise_conv_2d_opt_supported(p)) return QMCU_STATUS_UNSUPPORTED;
  if (b == NULL || b->scratch == NULL) return QMCU_STATUS_BAD_PARAMS;
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
