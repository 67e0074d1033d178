/* Fast path of QMCU_CONV_2D for every bit-width combination (docs §2).
 *
 * Tiles of T output pixels (T a multiple of 3, chosen from K = KH * KW * C_in): the receptive
 * fields of a tile are gathered once into 16-bit columns holding 2 * (x - zero point) (padding
 * -> 0), then every pair of output channels widens its weights to 16 bits (once per tile) and
 * runs a 2 x 3 block kernel over the tile: 2 channels x 3 pixels, 6 accumulators, every loaded
 * weight word feeds 3 SMLADs and every column word 2. Both operands come in the same pairing,
 * per 4 values of K: word 2g = (v[4g], v[4g+2]), word 2g+1 = (v[4g+1], v[4g+3]), laid out
 *   columns: [micro-tile of 3 pixels][k-pair][pixel]      weights: [k-pair][channel]
 * so one LDM brings the 3 pixels' words of a k-pair and one LDM the 2 channels' words.
 *
 * Requantization (the doc's MBQM, TFLM's double rounding) is fused into the kernel. The
 * accumulator is x2 = 2 * (bias + dot) (the columns are doubled), and for a channel whose
 * shift is in [-31, -1] (r = -shift) and whose accumulators cannot overflow (checked per
 * channel from the bias and the value ranges), with c = 2^(r-1) + zp_out * 2^r:
 *   high   = (x2 * multiplier + 2^31) >> 32        (SMMLAR: SRDHM's (x * m + 2^30) >> 31)
 *   out    = (c + high + (x2 >> 31)) >> r          (RDBPOT, round half away from zero, + zp)
 * RDBPOT's "+1 if negative" test uses the sign of x2 instead of high's: they differ only where
 * high == 0, and there both give zp. Other channels take the generic exact path.
 * Needs K to be a multiple of 32 / w_bits, or 8-bit weights: then K is padded with zeros
 * to a multiple of 4 (columns and weights), e.g. a first 3x3 layer on 3 channels (K = 27), and
 * its tile is the smallest (12 pixels: little scratch, the weights are cheap to re-widen).
 * Results equal qmcu_conv_2d_ref bit for bit.
 */
#include "qmcu/qmcu_ops.h"
#include "qmcu_opt_common.h"
#include "qmcu_simd.h"

#define QMCU_MT 3 /* pixels per micro-tile */

#if QMCU_HAVE_DSP
/* in the asm block below */
void qmcu_widen_w8_pair(const uint8_t *row0, const uint8_t *row1, uint32_t *dst, int32_t groups);
void qmcu_gather_s8_run(const uint8_t *src, uint32_t *dst, int32_t groups, uint32_t nz2);
#endif

typedef struct {
  int32_t k;       /* KH * KW * C_in, padded to a multiple of 4 */
  int32_t k_real;  /* KH * KW * C_in */
  int32_t kp;      /* k / 2 */
  int32_t tile;    /* pixels per tile, a multiple of QMCU_MT */
  uint32_t *cols;  /* tile * kp words */
  uint32_t *wts;   /* 2 * kp words */
  int16_t *lin;    /* k values of one pixel (generic gather) */
  int32_t *consts; /* 14 words, see pair_setup */
} qmcu_conv_tile;

/* Constants of one channel pair, in the order the block kernel loads them. */
enum {
  QMCU_C_BIAS = 0, /* 2 * bias of channel 0 (x3), channel 1 (x3) */
  QMCU_C_RQ = 6,   /* multiplier, c, r of channel 0, then of channel 1 */
  QMCU_C_LO = 12,  /* act_min in every byte */
  QMCU_C_HI = 13,  /* act_max in every byte */
  QMCU_C_WORDS = 14
};

static int32_t depth_k(const qmcu_conv_params *p) { return p->filter.h * p->filter.w * p->input.c; }

/* K as the kernel runs it: padded to a multiple of 4 (only 8-bit weights can need it). */
static int32_t padded_k(const qmcu_conv_params *p) { return (depth_k(p) + 3) / 4 * 4; }

int qmcu_conv_2d_opt_supported(const qmcu_conv_params *p) {
  if (qmcu_conv_2d_check(p) != QMCU_STATUS_OK) return 0;
  return depth_k(p) % (32 / p->w_bits) == 0 || p->w_bits == 8;
}

/* Bytes of 16-bit columns a tile aims at (build-time knob: less scratch, more instructions
 * per MAC, since every tile widens the weights again). */
#ifndef QMCU_CONV_COLS_BYTES
#define QMCU_CONV_COLS_BYTES 6144
#endif

/* Tile pixels: about QMCU_CONV_COLS_BYTES of columns, at least 12 and at most 96 pixels;
 * 12 when K was padded. */
static int32_t tile_pixels(int32_t k, int padded) {
  int32_t groups = padded ? 4 : QMCU_CONV_COLS_BYTES / (6 * k);
  if (groups < 4) groups = 4;
  if (groups > 32) groups = 32;
  return groups * QMCU_MT;
}

size_t qmcu_conv_2d_opt_scratch_size(const qmcu_conv_params *p) {
  size_t k;
  if (!qmcu_conv_2d_opt_supported(p)) return 0;
  k = (size_t)padded_k(p);
  return (size_t)tile_pixels((int32_t)k, depth_k(p) % 4 != 0) * k * 2u + 4u * k + qmcu_align4(k * 2u) +
         QMCU_C_WORDS * sizeof(int32_t);
}

/* ------------------------------------------------------------------ gather */

/* Word j of pixel slot s of the tile. */
static uint32_t *col_base(const qmcu_conv_tile *t, int32_t s) {
  return t->cols + (s / QMCU_MT) * t->kp * QMCU_MT + s % QMCU_MT;
}

/* Zero-point-corrected values of C_in channels of one input pixel into dst. */
static void expand_run(const qmcu_conv_params *p, const uint8_t *src, int16_t *dst) {
  const int32_t zp = p->in_zero_point;
  int32_t i;
  for (i = 0; i < p->input.c; ++i) dst[i] = (int16_t)(qmcu_load_act(src, i, p->in_bits) - zp);
}

/* Input pixel (n, iy, ix) of tap (ky, kx) for output pixel q, or NULL for padding. */
static const uint8_t *tap_src(const qmcu_conv_params *p, const uint8_t *in, int32_t q, int32_t ky,
                              int32_t kx) {
  const qmcu_geometry *g = &p->geometry;
  const int32_t ox = q % p->output.w;
  const int32_t oy = (q / p->output.w) % p->output.h;
  const int32_t n = q / (p->output.w * p->output.h);
  const int32_t iy = oy * g->stride_h - g->pad_top + ky * g->dilation_h;
  const int32_t ix = ox * g->stride_w - g->pad_left + kx * g->dilation_w;
  if (iy < 0 || iy >= p->input.h || ix < 0 || ix >= p->input.w) return NULL;
  return in + ((n * p->input.h + iy) * p->input.w + ix) * (p->input.c * p->in_bits / 8);
}

/* One tap (C_in values of one input pixel) to column words: dst[0], dst[QMCU_MT] per 4
 * values, dst advancing by 2 * QMCU_MT words per 4 values. */
typedef void (*qmcu_run_fn)(const qmcu_conv_params *p, const uint8_t *src, uint32_t *dst,
                            const qmcu_conv_tile *t);

/* Any input: values through t->lin, then paired and doubled. */
static void run_generic(const qmcu_conv_params *p, const uint8_t *src, uint32_t *dst,
                        const qmcu_conv_tile *t) {
  int16_t *v = t->lin;
  int32_t g;
  expand_run(p, src, v);
  for (g = 0; g < p->input.c / 4; ++g, dst += 2 * QMCU_MT, v += 4) {
    dst[0] = qmcu_pack16(2 * v[0], 2 * v[2]);
    dst[QMCU_MT] = qmcu_pack16(2 * v[1], 2 * v[3]);
  }
}

/* 8-bit input, C_in % 4 == 0: SXTAB16 twice adds the byte pair to -2 * zp twice. */
static void run_s8(const qmcu_conv_params *p, const uint8_t *src, uint32_t *dst,
                   const qmcu_conv_tile *t) {
  const uint32_t nz2 = qmcu_pack16(-2 * p->in_zero_point, -2 * p->in_zero_point);
  (void)t;
#if QMCU_HAVE_DSP
  qmcu_gather_s8_run(src, dst, p->input.c / 4, nz2);
#else
  {
    int32_t i;
    for (i = 0; i < p->input.c; i += 4, dst += 2 * QMCU_MT) {
      const uint32_t v = qmcu_read_u32(src + i);
      dst[0] = qmcu_sxtab16(qmcu_sxtab16(nz2, v), v);
      dst[QMCU_MT] = qmcu_sxtab16_ror8(qmcu_sxtab16_ror8(nz2, v), v);
    }
  }
#endif
}

/* 4-bit input, C_in % 8 == 0: doubled nibbles as bytes, UXTAB16 onto -2 * zp, re-paired. */
static void run_u4(const qmcu_conv_params *p, const uint8_t *src, uint32_t *dst,
                   const qmcu_conv_tile *t) {
  const uint32_t nz2 = qmcu_pack16(-2 * p->in_zero_point, -2 * p->in_zero_point);
  int32_t i;
  (void)t;
  for (i = 0; i < p->input.c; i += 8, dst += 4 * QMCU_MT) {
    const uint32_t v = qmcu_read_u32(src + i / 2);
    const uint32_t ev = (v << 1) & 0x1e1e1e1eu; /* 2 x0, 2 x2, 2 x4, 2 x6 */
    const uint32_t od = (v >> 3) & 0x1e1e1e1eu; /* 2 x1, 2 x3, 2 x5, 2 x7 */
    const uint32_t a = qmcu_uxtab16(nz2, ev);      /* x0 x4 */
    const uint32_t b = qmcu_uxtab16_ror8(nz2, ev); /* x2 x6 */
    const uint32_t c = qmcu_uxtab16(nz2, od);      /* x1 x5 */
    const uint32_t d = qmcu_uxtab16_ror8(nz2, od); /* x3 x7 */
    dst[0] = qmcu_pkhbt16(a, b);
    dst[QMCU_MT] = qmcu_pkhbt16(c, d);
    dst[2 * QMCU_MT] = qmcu_pkhtb16(b, a);
    dst[3 * QMCU_MT] = qmcu_pkhtb16(d, c);
  }
}

/* 2-bit input, C_in % 16 == 0: the even and odd fields as doubled nibbles, then as run_u4. */
static void run_u2(const qmcu_conv_params *p, const uint8_t *src, uint32_t *dst,
                   const qmcu_conv_tile *t) {
  const uint32_t nz2 = qmcu_pack16(-2 * p->in_zero_point, -2 * p->in_zero_point);
  int32_t i, h;
  (void)t;
  for (i = 0; i < p->input.c; i += 16, dst += 8 * QMCU_MT) {
    const uint32_t v = qmcu_read_u32(src + i / 4);
    /* nibble n of f[h] holds 2 x_{2n+h} */
    const uint32_t f[2] = {(v << 1) & 0x66666666u, (v >> 1) & 0x66666666u};
    for (h = 0; h < 2; ++h) {
      const uint32_t ev = f[h] & 0x0f0f0f0fu;        /* x_h, x_{4+h}, x_{8+h}, x_{12+h} */
      const uint32_t od = (f[h] >> 4) & 0x0f0f0f0fu; /* x_{2+h}, x_{6+h}, x_{10+h}, x_{14+h} */
      const uint32_t a = qmcu_uxtab16(nz2, ev);      /* x_h, x_{8+h} */
      const uint32_t b = qmcu_uxtab16_ror8(nz2, ev); /* x_{4+h}, x_{12+h} */
      const uint32_t c = qmcu_uxtab16(nz2, od);      /* x_{2+h}, x_{10+h} */
      const uint32_t d = qmcu_uxtab16_ror8(nz2, od); /* x_{6+h}, x_{14+h} */
      dst[h * QMCU_MT] = qmcu_pkhbt16(a, c);       /* group 0: (x_h, x_{2+h}) */
      dst[(2 + h) * QMCU_MT] = qmcu_pkhbt16(b, d); /* group 1 */
      dst[(4 + h) * QMCU_MT] = qmcu_pkhtb16(c, a); /* group 2 */
      dst[(6 + h) * QMCU_MT] = qmcu_pkhtb16(d, b); /* group 3 */
    }
  }
}

static void gather_tile(const qmcu_conv_params *p, const uint8_t *in, int32_t q0, int32_t valid,
                        const qmcu_conv_tile *t) {
  const int32_t slots = (valid + QMCU_MT - 1) / QMCU_MT * QMCU_MT;
  const int32_t row_bytes = p->input.c * p->in_bits / 8;
  const int32_t tap_words = p->input.c / 2 * QMCU_MT; /* column words of one tap */
  const qmcu_geometry *g = &p->geometry;
  qmcu_run_fn run = run_generic;
  int32_t s, j, ky, kx;
  if (p->in_bits == 8 && p->input.c % 4 == 0) run = run_s8;
  if (p->in_bits == 4 && p->input.c % 8 == 0) run = run_u4;
  if (p->in_bits == 2 && p->input.c % 16 == 0) run = run_u2;
  if (p->input.c % 4 != 0) {
    /* groups of 4 cross taps: all K values of a pixel through t->lin, then paired */
    for (s = 0; s < valid; ++s) {
      uint32_t *dst = col_base(t, s);
      int16_t *v = t->lin;
      for (ky = 0; ky < p->filter.h; ++ky) {
        for (kx = 0; kx < p->filter.w; ++kx, v += p->input.c) {
          const uint8_t *src = tap_src(p, in, q0 + s, ky, kx);
          if (src != NULL) {
            expand_run(p, src, v);
          } else {
            for (j = 0; j < p->input.c; ++j) v[j] = 0;
          }
        }
      }
      for (j = t->k_real; j < t->k; ++j) t->lin[j] = 0;
      for (j = 0, v = t->lin; j < t->k / 4; ++j, dst += 2 * QMCU_MT, v += 4) {
        dst[0] = qmcu_pack16(2 * v[0], 2 * v[2]);
        dst[QMCU_MT] = qmcu_pack16(2 * v[1], 2 * v[3]);
      }
    }
  } else if (p->filter.h == 1 && p->filter.w == 1 && g->stride_h == 1 && g->stride_w == 1 &&
      g->pad_top == 0 && g->pad_left == 0 && p->output.h == p->input.h &&
      p->output.w == p->input.w) {
    /* pointwise: output pixel q reads input pixel q */
    for (s = 0; s < valid; ++s) run(p, in + (size_t)(q0 + s) * row_bytes, col_base(t, s), t);
  } else {
    for (s = 0; s < valid; ++s) {
      uint32_t *dst = col_base(t, s);
      for (ky = 0; ky < p->filter.h; ++ky) {
        for (kx = 0; kx < p->filter.w; ++kx, dst += tap_words) {
          const uint8_t *src = tap_src(p, in, q0 + s, ky, kx);
          if (src != NULL) {
            run(p, src, dst, t);
          } else {
            for (j = 0; j < p->input.c / 2; ++j) dst[j * QMCU_MT] = 0;
          }
        }
      }
    }
  }
  for (s = valid; s < slots; ++s) {
    uint32_t *dst = col_base(t, s);
    for (j = 0; j < t->kp; ++j) dst[j * QMCU_MT] = 0;
  }
}

/* ------------------------------------------------------------------ weights */

/* The last, partial group of 4 of an 8-bit weight row (k_real % 4 values, zeros after). */
static void widen_tail_s8(const uint8_t *row, int32_t k_real, uint32_t *dst) {
  const int32_t i = k_real / 4 * 4;
  int32_t v[4], j;
  for (j = 0; j < 4; ++j) v[j] = i + j < k_real ? (int32_t)(int8_t)row[i + j] : 0;
  dst[0] = qmcu_pack16(v[0], v[2]);
  dst[2] = qmcu_pack16(v[1], v[3]);
}

/* Weights of channel `co` as words j = 0 .. kp-1 at dst[2 * j] (paired like the columns);
 * k_real values per row, k (padded) in the words. */
static void widen_row(const qmcu_conv_params *p, const uint8_t *w, int32_t co, int32_t k_real,
                      int32_t k, uint32_t *dst) {
  int32_t i;
  if (co < 0) {
    for (i = 0; i < k / 2; ++i) dst[2 * i] = 0;
  } else if (p->w_bits == 8) {
    const uint8_t *row = w + (size_t)co * k_real;
    for (i = 0; i + 4 <= k_real; i += 4, dst += 4) {
      const uint32_t v = qmcu_read_u32(row + i);
      dst[0] = qmcu_sxtb16(v);
      dst[2] = qmcu_sxtb16_ror8(v);
    }
    if (i < k) widen_tail_s8(row, k_real, dst);
  } else if (p->w_bits == 4) {
    const uint8_t *row = w + (size_t)co * k / 2;
    const uint32_t m8 = qmcu_pack16(-8, -8);
    for (i = 0; i < k; i += 8, dst += 8) {
      const uint32_t u = qmcu_read_u32(row + i / 2) ^ 0x88888888u; /* w + 8 per nibble */
      const uint32_t ev = u & 0x0f0f0f0fu, od = (u >> 4) & 0x0f0f0f0fu;
      const uint32_t a = qmcu_uxtab16(m8, ev), b = qmcu_uxtab16_ror8(m8, ev); /* w0 w4, w2 w6 */
      const uint32_t c = qmcu_uxtab16(m8, od), d = qmcu_uxtab16_ror8(m8, od); /* w1 w5, w3 w7 */
      dst[0] = qmcu_pkhbt16(a, b);
      dst[2] = qmcu_pkhbt16(c, d);
      dst[4] = qmcu_pkhtb16(b, a);
      dst[6] = qmcu_pkhtb16(d, c);
    }
  } else {
    const uint8_t *row = w + (size_t)co * k / 4;
    for (i = 0; i < k; i += 4, dst += 4) {
      dst[0] = qmcu_pack16(qmcu_load_weight(row, i, 2), qmcu_load_weight(row, i + 2, 2));
      dst[2] = qmcu_pack16(qmcu_load_weight(row, i + 1, 2), qmcu_load_weight(row, i + 3, 2));
    }
  }
}

/* ------------------------------------------------------------------ requantization */

typedef struct {
  int32_t co[2];    /* output channels (co[1] < 0: none) */
  int32_t fast[2];  /* the fused requantization is exact for this channel */
  int32_t bias[2];
  int32_t mult[2];
  int32_t shift[2];
} qmcu_pair;

/* Per-call limits of the fused form (see the file comment): a channel takes it when
 * multiplier >= 0, 1 <= r <= r_max and |bias| < bias_lim. Then |acc| <= |bias| + K * dx * wmax
 * < 2^30 (so 2 * acc fits) and |high| + |c| + 1 < 2^31 (no overflow in the rounding). */
typedef struct {
  int32_t bias_lim; /* 0: no channel qualifies */
  int32_t r_max;
} qmcu_fused_limits;

static qmcu_fused_limits fused_limits(const qmcu_conv_params *p, int32_t k) {
  const int32_t zx = p->in_zero_point;
  const int32_t x_hi = p->in_bits == 8 ? 127 : (1 << p->in_bits) - 1;
  const int32_t x_lo = p->in_bits == 8 ? -128 : 0;
  const int64_t dx = (x_hi - zx) > (zx - x_lo) ? (x_hi - zx) : (zx - x_lo);
  const int64_t dot = (int64_t)k * dx * ((int64_t)1 << (p->w_bits - 1));
  const int64_t zo = p->out_zero_point < 0 ? -(int64_t)p->out_zero_point : p->out_zero_point;
  qmcu_fused_limits l;
  int32_t r;
  l.bias_lim = dot < ((int64_t)1 << 30) ? (int32_t)(((int64_t)1 << 30) - dot) : 0;
  l.r_max = 0;
  for (r = 1; r <= 31; ++r) { /* |c| = |2^(r-1) + zp * 2^r| < 2^30 - 2 */
    if (((int64_t)1 << (r - 1)) + zo * ((int64_t)1 << r) < ((int64_t)1 << 30) - 2) l.r_max = r;
  }
  return l;
}

static uint32_t bytes4(int32_t v) { return ((uint32_t)v & 0xffu) * 0x01010101u; }

static void pair_setup(const qmcu_conv_params *p, const qmcu_conv_buffers *b,
                       const qmcu_fused_limits *l, int32_t co, qmcu_pair *pr, int32_t *consts) {
  int32_t i;
  for (i = 0; i < 2; ++i) {
    const int32_t c = co + i < p->output.c ? co + i : -1;
    const int32_t bias = c >= 0 && b->bias != NULL ? b->bias[c] : 0;
    const int32_t mult = c >= 0 ? b->multiplier[c] : 0;
    const int32_t shift = c >= 0 ? b->shift[c] : -1;
    const int32_t r = -shift;
    const int32_t b2 = (int32_t)((uint32_t)bias * 2u);
    const int fast = c >= 0 && mult >= 0 && r >= 1 && r <= l->r_max && bias < l->bias_lim &&
                     bias > -l->bias_lim;
    int32_t *k = consts + QMCU_C_RQ + 3 * i;
    pr->co[i] = c;
    pr->bias[i] = bias;
    pr->mult[i] = mult;
    pr->shift[i] = shift;
    pr->fast[i] = fast;
    consts[QMCU_C_BIAS + 3 * i] = consts[QMCU_C_BIAS + 3 * i + 1] = b2;
    consts[QMCU_C_BIAS + 3 * i + 2] = b2;
    k[0] = mult;
    k[1] = fast ? (int32_t)(((uint32_t)1 << (r - 1)) + (uint32_t)p->out_zero_point * (1u << r)) : 0;
    k[2] = fast ? r : 0;
  }
}

/* The fused form (only for fused_ok channels). */
static int32_t fused_requant(int32_t x2, int32_t mult, int32_t c, int32_t r) {
  const int32_t high = (int32_t)(((int64_t)x2 * mult + ((int64_t)1 << 31)) >> 32);
  const int32_t t = (int32_t)((uint32_t)c + (uint32_t)high + (uint32_t)(x2 >> 31));
  return t >> r;
}

/* ------------------------------------------------------------------ block kernel, C */

/* Output channel co of pixel q (flat), any output width (read-modify-write for sub-byte). */
static void store_one(const qmcu_conv_params *p, const qmcu_conv_buffers *b, int32_t q,
                      int32_t co, int32_t v) {
  qmcu_store_act((uint8_t *)b->output, q * p->output.c + co, p->out_bits, v);
}

/* Pixels q .. q + npix - 1 (npix <= 3) of one micro-tile, channel pair pr; portable. */
static void block_c(const qmcu_conv_params *p, const qmcu_conv_buffers *b, const qmcu_conv_tile *t,
                    const uint32_t *cols, const qmcu_pair *pr, const int32_t *consts, int32_t q,
                    int32_t npix) {
  int32_t i, s, j;
  for (i = 0; i < 2; ++i) {
    if (pr->co[i] < 0) continue;
    for (s = 0; s < npix; ++s) {
      int32_t v;
      if (pr->fast[i]) {
        int32_t acc = consts[QMCU_C_BIAS + 3 * i];
        for (j = 0; j < t->kp; ++j) acc = qmcu_smlad(t->wts[2 * j + i], cols[j * QMCU_MT + s], acc);
        v = fused_requant(acc, consts[QMCU_C_RQ + 3 * i], consts[QMCU_C_RQ + 3 * i + 1],
                          consts[QMCU_C_RQ + 3 * i + 2]);
        v = qmcu_clamp(v, p->act_min, p->act_max);
      } else {
        /* exact generic path: the columns hold even values, halve them */
        uint32_t acc = (uint32_t)pr->bias[i];
        for (j = 0; j < t->kp; ++j) {
          const uint32_t w = t->wts[2 * j + i], x = cols[j * QMCU_MT + s];
          const int32_t xl = (int32_t)(int16_t)(uint16_t)(x & 0xffffu) / 2;
          const int32_t xh = (int32_t)(int16_t)(uint16_t)(x >> 16) / 2;
          acc += (uint32_t)(xl * (int32_t)(int16_t)(uint16_t)(w & 0xffffu));
          acc += (uint32_t)(xh * (int32_t)(int16_t)(uint16_t)(w >> 16));
        }
        v = qmcu_clamp(qmcu_mbqm((int32_t)acc, pr->mult[i], pr->shift[i]) + p->out_zero_point,
                       p->act_min, p->act_max);
      }
      store_one(p, b, q + s, pr->co[i], v);
    }
  }
}

/* ------------------------------------------------------------------ block kernel, Cortex-M */
#if QMCU_HAVE_DSP
typedef struct {
  const int32_t *consts;
  const uint32_t *wts;
  int32_t kp;
  uint8_t *out;   /* byte of the channel pair in the first pixel */
  int32_t stride; /* bytes per output pixel */
  int32_t tiles;  /* micro-tiles (>= 1) */
  const uint32_t *cols;
} qmcu_block_args;

/* void qmcu_block23_<kind>(const qmcu_block_args *a): a->tiles micro-tiles of 3 pixels for a
 * channel pair whose both channels take the fused requantization.
 * Registers in the k loop: r0-r2 channel 0 x pixels 0-2, r3-r5 channel 1, r6 r7 weights,
 * r8-r10 columns, r11 columns pointer, r12 weights pointer, lr iterations. The loop body is
 * 16 k-pairs of 8 instructions (32 bytes); K/2 not a multiple of 16 enters it part way.
 * Frame: [sp] the 6 accumulator start values (2 * bias), [24] entry, [28] weights,
 * [32] iterations, [36] &consts[6], [40] out, [44] stride, [48] end of out.
 * kind: 0 int8, 1 int8 clamped to [act_min, act_max], 2 4-bit, 3 2-bit in bits 0-3 of the
 * byte (writes the whole byte), 4 2-bit in bits 4-7 (read-modify-write), 5 int8 clamped
 * below only (act_max 127). */
__asm__(
    "  .pushsection .text.qmcu_block23,\"ax\",%progbits\n"
    "  .syntax unified\n"
    "  .thumb\n"
    "  .macro QMCU_KPAIR\n"
    "  ldmia.w r12!, {r6, r7}\n"
    "  ldmia.w r11!, {r8, r9, r10}\n"
    "  smlad r0, r6, r8, r0\n"
    "  smlad r1, r6, r9, r1\n"
    "  smlad r2, r6, r10, r2\n"
    "  smlad r3, r7, r8, r3\n"
    "  smlad r4, r7, r9, r4\n"
    "  smlad r5, r7, r10, r5\n"
    "  .endm\n"
    "  .macro QMCU_RQ acc, bits\n"
    "  smmlar r9, \\acc, r6, r7\n"
    "  add r9, r9, \\acc, asr #31\n"
    "  asr r9, r9, r8\n"
    "  .if \\bits == 8\n"
    "  ssat \\acc, #8, r9\n"
    "  .else\n"
    "  usat \\acc, #\\bits, r9\n"
    "  .endif\n"
    "  .endm\n"
    "  .macro QMCU_CLAMP v, kind\n"
    "  ssub8 r9, \\v, r6\n"
    "  sel \\v, \\v, r6\n"
    "  .if \\kind != 5\n"
    "  ssub8 r9, \\v, r7\n"
    "  sel \\v, r7, \\v\n"
    "  .endif\n"
    "  .endm\n"
    /* store channel 0 value a and channel 1 value b of a pixel at [r10] (off 0) or [r10, lr] */
    "  .macro QMCU_STORE kind, a, b, off\n"
    "  bfi \\a, \\b, #8, #8\n"
    "  .if \\kind >= 1\n"
    "  QMCU_CLAMP \\a, \\kind\n"
    "  .endif\n"
    "  .if \\kind == 2\n"
    "  orr \\a, \\a, \\a, lsr #4\n"
    "  .endif\n"
    "  .if \\kind == 3 || \\kind == 4\n"
    "  orr \\a, \\a, \\a, lsr #6\n"
    "  .endif\n"
    "  .if \\kind == 4\n"
    "  .if \\off == 0\n"
    "  ldrb r9, [r10]\n"
    "  .else\n"
    "  ldrb r9, [r10, lr]\n"
    "  .endif\n"
    "  bfi r9, \\a, #4, #4\n"
    "  mov \\a, r9\n"
    "  .endif\n"
    "  .if \\kind <= 1 || \\kind == 5\n"
    "  .if \\off == 0\n"
    "  strh \\a, [r10]\n"
    "  .else\n"
    "  strh \\a, [r10, lr]\n"
    "  .endif\n"
    "  .else\n"
    "  .if \\off == 0\n"
    "  strb \\a, [r10]\n"
    "  .else\n"
    "  strb \\a, [r10, lr]\n"
    "  .endif\n"
    "  .endif\n"
    "  .endm\n"
    "  .macro QMCU_BLOCK23 name, kind, bits\n"
    "  .balign 4\n"
    "  .global \\name\n"
    "  .type \\name, %function\n"
    "  .thumb_func\n"
    "\\name:\n"
    "  push {r4-r11, lr}\n"
    "  sub sp, sp, #52\n"
    "  ldm r0, {r1-r7}\n"
    "  ldm r1, {r8, r9, r10, r11, r12, lr}\n"
    "  stm sp, {r8-r12, lr}\n"
    "  add r8, r1, #24\n"
    "  str r8, [sp, #36]\n"
    "  str r2, [sp, #28]\n"
    "  add r8, r3, #15\n"
    "  lsr r8, r8, #4\n"
    "  str r8, [sp, #32]\n"
    "  rsb r8, r3, #0\n"
    "  and r8, r8, #15\n"
    "  adr.w r9, 2f\n"
    "  add r9, r9, r8, lsl #5\n"
    "  orr r9, r9, #1\n"
    "  str r9, [sp, #24]\n"
    "  strd r4, r5, [sp, #40]\n"
    "  add r8, r5, r5, lsl #1\n"
    "  mul r8, r8, r6\n"
    "  add r8, r8, r4\n"
    "  str r8, [sp, #48]\n"
    "  mov r11, r7\n"
    "1:\n"
    "  ldm sp, {r0-r5, r7, r12, lr}\n"
    "  bx r7\n"
    "  .balign 4\n"
    "2:\n"
    "  .rept 16\n"
    "  QMCU_KPAIR\n"
    "  .endr\n"
    "  subs lr, lr, #1\n"
    "  bne 2b\n"
    "  ldr r12, [sp, #36]\n"
    "  ldm r12!, {r6, r7, r8}\n"
    "  QMCU_RQ r0, \\bits\n"
    "  QMCU_RQ r1, \\bits\n"
    "  QMCU_RQ r2, \\bits\n"
    "  ldm r12!, {r6, r7, r8}\n"
    "  QMCU_RQ r3, \\bits\n"
    "  QMCU_RQ r4, \\bits\n"
    "  QMCU_RQ r5, \\bits\n"
    "  .if \\kind >= 1\n"
    "  ldm r12, {r6, r7}\n"
    "  .endif\n"
    "  ldrd r10, lr, [sp, #40]\n"
    "  QMCU_STORE \\kind, r0, r3, 0\n"
    "  QMCU_STORE \\kind, r1, r4, 1\n"
    "  add r10, r10, lr\n"
    "  QMCU_STORE \\kind, r2, r5, 1\n"
    "  add r10, r10, lr, lsl #1\n"
    "  str r10, [sp, #40]\n"
    "  ldr r8, [sp, #48]\n"
    "  cmp r10, r8\n"
    "  bne 1b\n"
    "  add sp, sp, #52\n"
    "  pop {r4-r11, pc}\n"
    "  .size \\name, . - \\name\n"
    "  .endm\n"
    "  QMCU_BLOCK23 qmcu_block23_s8, 0, 8\n"
    "  QMCU_BLOCK23 qmcu_block23_s8c, 1, 8\n"
    "  QMCU_BLOCK23 qmcu_block23_u4, 2, 4\n"
    "  QMCU_BLOCK23 qmcu_block23_u2lo, 3, 2\n"
    "  QMCU_BLOCK23 qmcu_block23_u2hi, 4, 2\n"
    "  QMCU_BLOCK23 qmcu_block23_s8lo, 5, 8\n"
    /* qmcu_widen_w8_pair(row0, row1, dst, groups): dst[4g .. 4g+3] = SXTB16(a), SXTB16(b),
     * SXTB16(a, ROR 8), SXTB16(b, ROR 8) of word g of each row */
    "  .macro QMCU_WIDEN2\n"
    "  ldr r6, [r0], #4\n"
    "  ldr r7, [r1], #4\n"
    "  sxtb16 r4, r6\n"
    "  sxtb16 r5, r7\n"
    "  sxtb16 r6, r6, ror #8\n"
    "  sxtb16 r7, r7, ror #8\n"
    "  stmia r2!, {r4-r7}\n"
    "  .endm\n"
    "  .balign 4\n"
    "  .global qmcu_widen_w8_pair\n"
    "  .type qmcu_widen_w8_pair, %function\n"
    "  .thumb_func\n"
    "qmcu_widen_w8_pair:\n"
    "  push {r4-r7, lr}\n"
    "  tst r3, #1\n"
    "  beq 2f\n"
    "  QMCU_WIDEN2\n"
    "2:\n"
    "  lsrs r3, r3, #1\n"
    "  beq 3f\n"
    "1:\n"
    "  QMCU_WIDEN2\n"
    "  QMCU_WIDEN2\n"
    "  subs r3, r3, #1\n"
    "  bne 1b\n"
    "3:\n"
    "  pop {r4-r7, pc}\n"
    "  .size qmcu_widen_w8_pair, . - qmcu_widen_w8_pair\n"
    /* qmcu_gather_s8_run(src, dst, groups, nz2): 4 channels per group to the column words
     * dst[0] = 2 * (x0, x2) + nz2, dst[3] = 2 * (x1, x3) + nz2; dst += 6 per group */
    "  .macro QMCU_GATHER4\n"
    "  ldr r4, [r0], #4\n"
    "  sxtab16 r5, r3, r4\n"
    "  sxtab16 r5, r5, r4\n"
    "  sxtab16 r6, r3, r4, ror #8\n"
    "  sxtab16 r6, r6, r4, ror #8\n"
    "  str r6, [r1, #12]\n"
    "  str r5, [r1], #24\n"
    "  .endm\n"
    "  .balign 4\n"
    "  .global qmcu_gather_s8_run\n"
    "  .type qmcu_gather_s8_run, %function\n"
    "  .thumb_func\n"
    "qmcu_gather_s8_run:\n"
    "  push {r4-r6, lr}\n"
    "  tst r2, #1\n"
    "  beq 2f\n"
    "  QMCU_GATHER4\n"
    "2:\n"
    "  lsrs r2, r2, #1\n"
    "  beq 3f\n"
    "1:\n"
    "  QMCU_GATHER4\n"
    "  QMCU_GATHER4\n"
    "  subs r2, r2, #1\n"
    "  bne 1b\n"
    "3:\n"
    "  pop {r4-r6, pc}\n"
    "  .size qmcu_gather_s8_run, . - qmcu_gather_s8_run\n"
    "  .popsection\n");

void qmcu_block23_s8(const qmcu_block_args *a);
void qmcu_block23_s8c(const qmcu_block_args *a);
void qmcu_block23_u4(const qmcu_block_args *a);
void qmcu_block23_u2lo(const qmcu_block_args *a);
void qmcu_block23_u2hi(const qmcu_block_args *a);
void qmcu_block23_s8lo(const qmcu_block_args *a);

typedef void (*qmcu_block_fn)(const qmcu_block_args *);

static qmcu_block_fn block_fn(const qmcu_conv_params *p, int32_t co) {
  if (p->out_bits == 8) {
    if (p->act_max != 127) return qmcu_block23_s8c;
    return p->act_min == -128 ? qmcu_block23_s8 : qmcu_block23_s8lo;
  }
  if (p->out_bits == 4) return qmcu_block23_u4;
  return co % 4 == 0 ? qmcu_block23_u2lo : qmcu_block23_u2hi;
}
#endif

/* ------------------------------------------------------------------ driver */

qmcu_status qmcu_conv_2d_opt(const qmcu_conv_params *p, const qmcu_conv_buffers *b) {
  const int32_t pixels = p->output.n * p->output.h * p->output.w;
  const int32_t channels = p->output.c;
  qmcu_conv_tile t;
  qmcu_pair pr;
  qmcu_fused_limits lim;
  int32_t q0, co;
  if (!qmcu_conv_2d_opt_supported(p)) return QMCU_STATUS_UNSUPPORTED;
  if (b == NULL || b->scratch == NULL) return QMCU_STATUS_BAD_PARAMS;
  t.k_real = depth_k(p);
  t.k = padded_k(p);
  t.kp = t.k / 2;
  t.tile = tile_pixels(t.k, t.k != t.k_real);
  t.cols = (uint32_t *)b->scratch;
  t.wts = t.cols + (size_t)t.tile * t.kp;
  t.lin = (int16_t *)(t.wts + 2 * (size_t)t.kp);
  t.consts = (int32_t *)((uint8_t *)t.lin + qmcu_align4((size_t)t.k * 2u));
  lim = fused_limits(p, t.k);
  t.consts[QMCU_C_LO] = (int32_t)bytes4(p->act_min);
  t.consts[QMCU_C_HI] = (int32_t)bytes4(p->act_max);
  for (q0 = 0; q0 < pixels; q0 += t.tile) {
    const int32_t valid = pixels - q0 < t.tile ? pixels - q0 : t.tile;
    gather_tile(p, (const uint8_t *)b->input, q0, valid, &t);
    for (co = 0; co < channels; co += 2) {
      int32_t m = 0;
#if QMCU_HAVE_DSP
      if (p->w_bits == 8 && co + 1 < channels) {
        const uint8_t *row = (const uint8_t *)b->filter + (size_t)co * t.k_real;
        if (t.k_real / 4 > 0) qmcu_widen_w8_pair(row, row + t.k_real, t.wts, t.k_real / 4);
        if (t.k != t.k_real) {
          widen_tail_s8(row, t.k_real, t.wts + t.k_real / 4 * 4);
          widen_tail_s8(row + t.k_real, t.k_real, t.wts + t.k_real / 4 * 4 + 1);
        }
      } else
#endif
      {
        widen_row(p, (const uint8_t *)b->filter, co, t.k_real, t.k, t.wts);
        widen_row(p, (const uint8_t *)b->filter, co + 1 < channels ? co + 1 : -1, t.k_real, t.k,
                  t.wts + 1);
      }
      pair_setup(p, b, &lim, co, &pr, t.consts);
#if QMCU_HAVE_DSP
      if (valid >= QMCU_MT && pr.fast[0] && pr.fast[1]) { /* full micro-tiles in asm */
        const int32_t full = valid / QMCU_MT;
        qmcu_block_args a;
        a.consts = t.consts;
        a.wts = t.wts;
        a.kp = t.kp;
        a.stride = channels * p->out_bits / 8;
        a.out = (uint8_t *)b->output + (size_t)q0 * a.stride + co * p->out_bits / 8;
        a.tiles = full;
        a.cols = t.cols;
        block_fn(p, co)(&a);
        m = full;
      }
#endif
      for (; m * QMCU_MT < valid; ++m) {
        const int32_t npix = valid - m * QMCU_MT < QMCU_MT ? valid - m * QMCU_MT : QMCU_MT;
        block_c(p, b, &t, t.cols + (size_t)m * t.kp * QMCU_MT, &pr, t.consts,
                q0 + m * QMCU_MT, npix);
      }
    }
  }
  return QMCU_STATUS_OK;
}
