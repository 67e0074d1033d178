/* Fast path of QMCU_AVERAGE_POOL_2D (docs §5): the same arithmetic as
 * qmcu_average_pool_2d_ref, bit for bit.
 *
 * Per output pixel the window (its in-bounds pixels, `count` of them) is summed one channel
 * group at a time in 16-bit lanes held in registers: a group is two input words of int8 (8
 * channels, SXTAB16 adds two sign-extended bytes per instruction), two words of 4-bit codes
 * (16 channels) or one word of 2-bit codes (16 channels). Sub-byte codes are masked out of the
 * word with one AND per code position and added in byte lanes (up to 255 / (2^b - 1) pixels),
 * then moved to the 16-bit lanes with UXTAB16. Windows covering whole rows are one run of
 * pixels. The lane sums are exact while they fit 16 bits: |sum| <= 128 * window for int8
 * (window <= 255), sum <= (2^b - 1) * window for b-bit codes (window <= 65535 / (2^b - 1));
 * larger windows take the reference path. Then per channel: rescale = 0: round_div(sum, count)
 * (no sign test for unsigned codes); rescale = 1: round_div(MBQM(sum - count * in_zp), count)
 * + out_zp, MBQM in a fused SMMULR form (multiplier >= 0, shift >= -30, no overflow; else the
 * reference path); the clamp only where the activation range can cut the result; the group's
 * outputs written as whole bytes. Half groups (int8 4 channels, 4-bit 8, 2-bit 8) take the rest
 * where they fit; channels past them are computed one by one.
 */
#include "qmcu/qmcu_ops.h"
#include "qmcu_opt_common.h"
#include "qmcu_simd.h"

#include <string.h>

#if defined(__GNUC__)
#define QMCU_POOL_INLINE static inline __attribute__((always_inline))
#else
#define QMCU_POOL_INLINE static inline
#endif

/* Largest window (filter_h * filter_w) whose lane sums stay exact in 16 bits. */
static int32_t max_window(int32_t in_bits) {
  return in_bits == 8 ? 255 : 65535 / ((1 << in_bits) - 1);
}

/* rescale: MBQM(x, m, s) in the fused form below needs m >= 0, s >= -30 and
 * |x| * 2^(max(s, 0) + 1) < 2^31, where |x| = |sum of (q - in_zp)| <= 255 * window. */
static int fused_rescale(const qmcu_avg_pool_params *p) {
  const int32_t left = p->shift > 0 ? p->shift : 0;
  return p->multiplier >= 0 && p->shift >= -30 && left <= 20 &&
         (int64_t)255 * p->filter_h * p->filter_w * ((int64_t)2 << left) < ((int64_t)1 << 31);
}

int qmcu_average_pool_2d_opt_supported(const qmcu_avg_pool_params *p) {
  return qmcu_average_pool_2d_check(p) == QMCU_STATUS_OK && p->filter_h <= 65535 &&
         p->filter_w <= 65535 &&
         (int64_t)p->filter_h * p->filter_w <= (int64_t)max_window(p->in_bits) &&
         (!p->rescale || fused_rescale(p));
}

/* Everything the finishing step of one output pixel needs, as values (not read through a
 * pointer that an output store could alias). */
typedef struct {
  int32_t count;
  int32_t half;   /* count / 2 */
  int32_t offset2; /* rescale: count * in_zero_point * scale2 */
  int32_t act_min;
  int32_t act_max;
  int32_t multiplier;
  int32_t scale2; /* rescale: 2^(left + 1), left = max(shift, 0) */
  int32_t round;  /* 2^(r - 1) for r = max(-shift, 0) > 0, else 0 */
  int32_t neg;    /* -1 for r > 0, else 0 */
  int32_t right;  /* r */
  int32_t out_zero_point;
  int32_t out_bits;
} qmcu_pool_window;

/* One channel's output from its window sum; in_bits / rescale / clamp constants. */
QMCU_POOL_INLINE int32_t finish(const qmcu_pool_window *w, int32_t sum, int32_t in_bits,
                                int32_t rescale, int32_t clamp) {
  int32_t y;
  if (rescale) {
    /* MBQM(sum - count * in_zp, m, s): x2 = 2 * (x << left); SMMULR(x2, m) is SRDHM(x << left,
     * m), and (h + 2^(r-1) - (x2 < 0)) >> r is RDBPOT(h, r) (the sign of x2 stands for that of
     * h: they differ only where h is 0, and there both give 0), as in qmcu_add_opt.c */
    const int32_t x2 = sum * w->scale2 - w->offset2;
    const int32_t v = (qmcu_smmulr(x2, w->multiplier) + w->round + ((x2 >> 31) & w->neg)) >>
                      w->right;
    y = (v > 0 ? v + w->half : v - w->half) / w->count + w->out_zero_point;
  } else if (in_bits == 8) {
    y = (sum > 0 ? sum + w->half : sum - w->half) / w->count; /* half away from zero */
  } else {
    y = (sum + w->half) / w->count; /* sum >= 0: the same without the sign test */
  }
  if (clamp) y = qmcu_clamp(y, w->act_min, w->act_max);
  return y;
}

/* Halfword lane sums of one channel group. int8: a0 = channels 0, 2 (low, high halfword),
 * a1 = 1, 3, a2 = 4, 6, a3 = 5, 7; 4-bit: a0 = 0, 4, a1 = 2, 6, a2 = 1, 5, a3 = 3, 7 and
 * a4..a7 the same for channels 8..15; 2-bit: a(2j) = j, 8 + j, a(2j+1) = 4 + j, 12 + j. */
typedef struct {
  uint32_t a0, a1, a2, a3, a4, a5, a6, a7;
} qmcu_pool_lanes;

QMCU_POOL_INLINE uint32_t lane_word(const qmcu_pool_lanes *l, int32_t k) {
  switch (k) {
    case 0: return l->a0;
    case 1: return l->a1;
    case 2: return l->a2;
    case 3: return l->a3;
    case 4: return l->a4;
    case 5: return l->a5;
    case 6: return l->a6;
    default: return l->a7;
  }
}

/* Window sum of channel i of the group (i a constant after inlining). */
QMCU_POOL_INLINE int32_t lane_sum(const qmcu_pool_lanes *l, int32_t i, int32_t n,
                                 int32_t in_bits) {
  uint32_t acc;
  int32_t top;
  if (in_bits == 8) {
    acc = lane_word(l, (i & 1) | ((i >> 2) << 1));
    top = (i >> 1) & 1;
    return top ? (int32_t)acc >> 16 : (int32_t)(int16_t)(uint16_t)(acc & 0xffffu);
  }
  if (in_bits == 4) {
    acc = lane_word(l, (((i & 1) << 1) | ((i >> 1) & 1)) + ((i >> 3) << 2));
    top = (i >> 2) & 1;
  } else if (n == 8) { /* 2-bit half group: a0 = 0, 1, a1 = 4, 5, a2 = 2, 3, a3 = 6, 7 */
    acc = lane_word(l, (((i >> 1) & 1) << 1) | ((i >> 2) & 1));
    top = i & 1;
  } else {
    acc = lane_word(l, ((i & 3) << 1) | ((i >> 2) & 1));
    top = (i >> 3) & 1;
  }
  return top ? (int32_t)(acc >> 16) : (int32_t)(acc & 0xffffu);
}

/* The group's input word at q; `bytes` 2: a halfword (the upper half zero). */
QMCU_POOL_INLINE uint32_t load_lo(const uint8_t *q, int32_t bytes) {
  if (bytes == 2) {
    uint16_t h;
    memcpy(&h, q, sizeof h);
    return h;
  }
  return qmcu_read_u32(q);
}

/* A constant the compiler keeps in a register, so that `(w >> k) & mask` is one AND with a
 * shifted operand rather than a shift and an AND with an immediate. */
QMCU_POOL_INLINE uint32_t in_register(uint32_t v) {
#if defined(__GNUC__)
  __asm__("" : "+r"(v));
#endif
  return v;
}

/* Sub-byte codes of the pixel at Q gathered per byte, added in byte lanes: m<j> holds in
 * byte k channel 2k + j (4-bit; m2, m3 the same for the second word: channels 8 + 2k + j),
 * or 4k + j (2-bit). A 2-bit half group (8 channels, 2 bytes h) first becomes
 * h | h << 14, whose bytes hold channels (0, 4, 1, 5) at bit 0 and (2, 6, 3, 7) at bit 4:
 * two byte-lane words instead of four. */
#define QMCU_POOL_CODES(Q)                           \
  do {                                               \
    const uint32_t w_ = load_lo((Q), bytes);         \
    if (in_bits == 4) {                              \
      m0 += w_ & mask;                               \
      m1 += (w_ >> 4) & mask;                        \
      if (bytes == 8) {                              \
        const uint32_t v_ = qmcu_read_u32((Q) + 4);  \
        m2 += v_ & mask;                             \
        m3 += (v_ >> 4) & mask;                      \
      }                                              \
    } else if (bytes == 2) {                         \
      const uint32_t t_ = w_ | (w_ << 14);           \
      m0 += t_ & mask;                               \
      m1 += (t_ >> 4) & mask;                        \
    } else {                                         \
      m0 += w_ & mask;                               \
      m1 += (w_ >> 2) & mask;                        \
      m2 += (w_ >> 4) & mask;                        \
      m3 += (w_ >> 6) & mask;                        \
    }                                                \
  } while (0)

/* Byte lanes into the halfword lanes (UXTAB16: bytes 0, 2 and, rotated, 1, 3). */
#define QMCU_POOL_FLUSH()                       \
  do {                                          \
    l.a0 = qmcu_uxtab16(l.a0, m0);              \
    l.a1 = qmcu_uxtab16_ror8(l.a1, m0);         \
    l.a2 = qmcu_uxtab16(l.a2, m1);              \
    l.a3 = qmcu_uxtab16_ror8(l.a3, m1);         \
    if (bytes == (in_bits == 2 ? 4 : 8)) {      \
      l.a4 = qmcu_uxtab16(l.a4, m2);            \
      l.a5 = qmcu_uxtab16_ror8(l.a5, m2);       \
      l.a6 = qmcu_uxtab16(l.a6, m3);            \
      l.a7 = qmcu_uxtab16_ror8(l.a7, m3);       \
    }                                           \
    m0 = m1 = m2 = m3 = 0;                      \
  } while (0)

/* int8: pixels [q, end) (`pixel` bytes apart) into the lanes, two per step. */
#define QMCU_POOL_RUN_S8(Q, END)                                                    \
  do {                                                                              \
    const uint8_t *const last_ = (END) - pixel;                                     \
    for (; (Q) < last_; (Q) += 2 * pixel) {                                         \
      const uint32_t w_ = qmcu_read_u32(Q), v_ = qmcu_read_u32((Q) + pixel);        \
      l.a0 = qmcu_sxtab16(qmcu_sxtab16(l.a0, w_), v_);                              \
      l.a1 = qmcu_sxtab16_ror8(qmcu_sxtab16_ror8(l.a1, w_), v_);                    \
      if (bytes == 8) {                                                             \
        const uint32_t w1_ = qmcu_read_u32((Q) + 4);                                \
        const uint32_t v1_ = qmcu_read_u32((Q) + pixel + 4);                        \
        l.a2 = qmcu_sxtab16(qmcu_sxtab16(l.a2, w1_), v1_);                          \
        l.a3 = qmcu_sxtab16_ror8(qmcu_sxtab16_ror8(l.a3, w1_), v1_);                \
      }                                                                             \
    }                                                                               \
    if ((Q) != (END)) {                                                             \
      const uint32_t w_ = qmcu_read_u32(Q);                                         \
      l.a0 = qmcu_sxtab16(l.a0, w_);                                                \
      l.a1 = qmcu_sxtab16_ror8(l.a1, w_);                                           \
      if (bytes == 8) {                                                             \
        const uint32_t w1_ = qmcu_read_u32((Q) + 4);                                \
        l.a2 = qmcu_sxtab16(l.a2, w1_);                                             \
        l.a3 = qmcu_sxtab16_ror8(l.a3, w1_);                                        \
      }                                                                             \
      (Q) += pixel;                                                                 \
    }                                                                               \
  } while (0)

/* Sub-byte: pixels [q, end) into the byte lanes, two per step. */
#define QMCU_POOL_RUN_CODES(Q, END)                                                 \
  do {                                                                              \
    const uint8_t *const last_ = (END) - pixel;                                     \
    for (; (Q) < last_; (Q) += 2 * pixel) {                                         \
      QMCU_POOL_CODES(Q);                                                           \
      QMCU_POOL_CODES((Q) + pixel);                                                 \
    }                                                                               \
    if ((Q) != (END)) {                                                             \
      QMCU_POOL_CODES(Q);                                                           \
      (Q) += pixel;                                                                 \
    }                                                                               \
  } while (0)

/* Lane sums of one channel group (`bytes` of it per pixel) over a rows x cols window (rows
 * `row` bytes apart). Sub-byte codes add in byte lanes, moved to the halfword lanes after
 * at most 255 / (2^b - 1) pixels: every `chunk` rows, or (chunk 0: a row is longer) every
 * that many pixels of a row. */
QMCU_POOL_INLINE qmcu_pool_lanes window_sums(const uint8_t *base, int32_t rows, int32_t cols,
                                             int32_t row, int32_t pixel, int32_t bytes,
                                             int32_t chunk, int32_t in_bits) {
  qmcu_pool_lanes l = {0, 0, 0, 0, 0, 0, 0, 0};
  const int32_t run = cols * pixel;
  const uint8_t *const stop = base + rows * row;
  const uint8_t *r;
  if (in_bits == 8) {
    for (r = base; r != stop; r += row) {
      const uint8_t *q = r;
      QMCU_POOL_RUN_S8(q, r + run);
    }
  } else {
    const uint32_t mask = in_register(in_bits == 4 ? 0x0f0f0f0fu : 0x03030303u);
    uint32_t m0 = 0, m1 = 0, m2 = 0, m3 = 0;
    if (chunk > 0) {
      const int32_t step = chunk * row;
      for (r = base; r < stop;) {
        const uint8_t *const chunk_end = stop - r > step ? r + step : stop;
        for (; r != chunk_end; r += row) {
          const uint8_t *q = r;
          QMCU_POOL_RUN_CODES(q, r + run);
        }
        QMCU_POOL_FLUSH();
      }
    } else { /* rows longer than the byte lanes hold: flush every `limit` pixels of a row */
      const int32_t span = (255 / ((1 << in_bits) - 1)) * pixel;
      for (r = base; r != stop; r += row) {
        const uint8_t *q = r, *const row_end = r + run;
        while (q != row_end) {
          const uint8_t *const seg_end = row_end - q > span ? q + span : row_end;
          QMCU_POOL_RUN_CODES(q, seg_end);
          QMCU_POOL_FLUSH();
        }
      }
    }
  }
  return l;
}
#undef QMCU_POOL_RUN_S8
#undef QMCU_POOL_RUN_CODES
#undef QMCU_POOL_FLUSH
#undef QMCU_POOL_CODES

static inline void write_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, sizeof v); }

/* Finish channels [0, n) of a group into dst (the group's first output byte). out_bits is a
 * constant, or 0 for the rescaled paths: the width w->out_bits, decided at run time. */
QMCU_POOL_INLINE void finish_group(const qmcu_pool_window *w, const qmcu_pool_lanes *l,
                                   uint8_t *dst, int32_t n, int32_t in_bits, int32_t out_bits,
                                   int32_t rescale, int32_t clamp) {
  uint32_t word[2] = {0, 0}; /* values are in range: clamped, or averages of in-range codes */
  int32_t v[16];
#define QMCU_POOL_STEP(I)                                                              \
  if ((I) < n) {                                                                       \
    const int32_t y_ = finish(w, lane_sum(l, (I), n, in_bits), in_bits, rescale, clamp);  \
    if (out_bits == 0) {                                                               \
      v[I] = y_;                                                                       \
    } else if (out_bits == 8) {                                                        \
      dst[I] = (uint8_t)y_;                                                            \
    } else {                                                                           \
      word[((I) * out_bits) >> 5] |= (uint32_t)y_ << (((I) * out_bits) & 31);          \
    }                                                                                  \
  }
  QMCU_POOL_STEP(0) QMCU_POOL_STEP(1) QMCU_POOL_STEP(2) QMCU_POOL_STEP(3)
  QMCU_POOL_STEP(4) QMCU_POOL_STEP(5) QMCU_POOL_STEP(6) QMCU_POOL_STEP(7)
  QMCU_POOL_STEP(8) QMCU_POOL_STEP(9) QMCU_POOL_STEP(10) QMCU_POOL_STEP(11)
  QMCU_POOL_STEP(12) QMCU_POOL_STEP(13) QMCU_POOL_STEP(14) QMCU_POOL_STEP(15)
#undef QMCU_POOL_STEP
  if (out_bits == 0) {
    const int32_t ob = w->out_bits, per = 8 / ob;
    int32_t i, k;
    for (i = 0; i < n; i += per) {
      uint32_t byte = 0;
      for (k = 0; k < per; ++k) byte |= (uint32_t)v[i + k] << (k * ob);
      dst[i / per] = (uint8_t)byte;
    }
  } else if (out_bits != 8) {
    const int32_t out_bytes = n * out_bits / 8; /* 1, 2, 4 or 8 */
    if (out_bytes >= 4) {
      write_u32(dst, word[0]);
      if (out_bytes == 8) write_u32(dst + 4, word[1]);
    } else {
      dst[0] = (uint8_t)word[0];
      if (out_bytes == 2) dst[1] = (uint8_t)(word[0] >> 8);
    }
  }
  (void)v;
}

/* One group of n channels of one output pixel. */
QMCU_POOL_INLINE void pool_group(const qmcu_pool_window *w, const uint8_t *first, int32_t rows,
                                 int32_t cols, int32_t row, int32_t pixel, int32_t chunk,
                                 uint8_t *dst, int32_t n, int32_t in_bits, int32_t out_bits,
                                 int32_t rescale, int32_t clamp) {
  const qmcu_pool_lanes l =
      window_sums(first, rows, cols, row, pixel, n * in_bits / 8, chunk, in_bits);
  finish_group(w, &l, dst, n, in_bits, out_bits, rescale, clamp);
}

/* The whole op for constant in_bits, out_bits (0: decided at run time), rescale, clamp. */
QMCU_POOL_INLINE void pool_loop(const qmcu_avg_pool_params *p, const uint8_t *in, uint8_t *out,
                                int32_t in_bits, int32_t out_bits, int32_t rescale,
                                int32_t clamp) {
  const int32_t group = in_bits == 8 ? 8 : 16, half_group = group / 2;
  const int32_t C = p->input.c, H = p->input.h, W = p->input.w;
  const int32_t pixel = C * in_bits / 8, row = W * pixel;
  const int32_t ob = p->out_bits, groups = C / group;
  const int32_t halves = C % group >= half_group ? 1 : 0;
  const int32_t OH = p->output.h, OW = p->output.w, FH = p->filter_h, FW = p->filter_w;
  const int32_t SH = p->geometry.stride_h, SW = p->geometry.stride_w;
  const int32_t PT = p->geometry.pad_top, PL = p->geometry.pad_left;
  qmcu_pool_window w;
  int32_t n, oy, ox, g, c;
  w.act_min = p->act_min;
  w.act_max = p->act_max;
  w.multiplier = p->multiplier;
  w.scale2 = 2 << (p->shift > 0 ? p->shift : 0);
  w.right = p->shift < 0 ? -p->shift : 0;
  w.round = w.right > 0 ? 1 << (w.right - 1) : 0;
  w.neg = w.right > 0 ? -1 : 0;
  w.out_zero_point = p->out_zero_point;
  w.out_bits = ob;
  for (n = 0; n < p->output.n; ++n) {
    const uint8_t *image = in + (size_t)n * H * row;
    for (oy = 0; oy < OH; ++oy) {
      const int32_t y0 = oy * SH - PT;
      const int32_t ys = y0 < 0 ? 0 : y0;
      const int32_t ye = y0 + FH < H ? y0 + FH : H;
      for (ox = 0; ox < OW; ++ox) {
        const int32_t x0 = ox * SW - PL;
        const int32_t xs = x0 < 0 ? 0 : x0;
        const int32_t xe = x0 + FW < W ? x0 + FW : W;
        const int32_t index = (n * OH + oy) * OW + ox;
        uint8_t *dst = out + (size_t)index * C * ob / 8;
        const uint8_t *first = image + ys * row + xs * pixel;
        int32_t rows = ye - ys, cols = xe - xs, chunk;
        w.count = rows * cols;
        w.half = w.count / 2;
        w.offset2 = w.count * p->in_zero_point * w.scale2;
        if (cols * pixel == row) { /* whole rows: one run of pixels */
          cols *= rows;
          rows = 1;
        }
        /* rows between byte-lane flushes (sub-byte), 0: a row is longer than they hold */
        chunk = in_bits == 8 ? 0 : (255 / ((1 << in_bits) - 1)) / cols;
        for (g = 0; g < groups; ++g) {
          pool_group(&w, first + g * (group * in_bits / 8), rows, cols, row, pixel, chunk,
                     dst + g * group * ob / 8, group, in_bits, out_bits, rescale, clamp);
        }
        c = groups * group;
        if (halves) {
          pool_group(&w, first + c * in_bits / 8, rows, cols, row, pixel, chunk,
                     dst + c * ob / 8, half_group, in_bits, out_bits, rescale, clamp);
          c += half_group;
        }
        for (; c < C; ++c) { /* channels past the last whole or half group */
          int32_t sum = 0, y, x;
          for (y = ys; y < ye; ++y) {
            for (x = xs; x < xe; ++x) sum += qmcu_load_act(image, (y * W + x) * C + c, in_bits);
          }
          qmcu_store_act(out, index * C + c, ob, finish(&w, sum, in_bits, rescale, clamp));
        }
      }
    }
  }
}

/* rescale = 0 (in_bits == out_bits), with and without the clamp; rescale = 1, any out_bits. */
#define QMCU_POOL_VARIANT(IN)                                                                \
  static void pool_##IN(const qmcu_avg_pool_params *p, const uint8_t *i, uint8_t *o) {       \
    pool_loop(p, i, o, IN, IN, 0, 0);                                                        \
  }                                                                                          \
  static void pool_##IN##_clamp(const qmcu_avg_pool_params *p, const uint8_t *i,             \
                                uint8_t *o) {                                                \
    pool_loop(p, i, o, IN, IN, 0, 1);                                                        \
  }                                                                                          \
  static void pool_##IN##_rescale(const qmcu_avg_pool_params *p, const uint8_t *i,           \
                                  uint8_t *o) {                                              \
    pool_loop(p, i, o, IN, 0, 1, 1);                                                         \
  }
QMCU_POOL_VARIANT(8)
QMCU_POOL_VARIANT(4)
QMCU_POOL_VARIANT(2)
#undef QMCU_POOL_VARIANT

typedef void (*qmcu_pool_fn)(const qmcu_avg_pool_params *, const uint8_t *, uint8_t *);

qmcu_status qmcu_average_pool_2d_opt(const qmcu_avg_pool_params *p,
                                     const qmcu_unary_buffers *b) {
  static const qmcu_pool_fn fns[3][3] = {{pool_8, pool_8_clamp, pool_8_rescale},
                                         {pool_4, pool_4_clamp, pool_4_rescale},
                                         {pool_2, pool_2_clamp, pool_2_rescale}};
  int32_t lo, hi, kind;
  if (!qmcu_average_pool_2d_opt_supported(p)) return QMCU_STATUS_UNSUPPORTED;
  if (b == NULL || b->input == NULL || b->output == NULL) return QMCU_STATUS_BAD_PARAMS;
  /* without rescale the average lies in the input range: clamp only if the range cuts it */
  lo = p->in_bits == 8 ? -128 : 0;
  hi = p->in_bits == 8 ? 127 : (1 << p->in_bits) - 1;
  kind = p->rescale ? 2 : (p->act_min > lo || p->act_max < hi ? 1 : 0);
  fns[p->in_bits == 8 ? 0 : (p->in_bits == 4 ? 1 : 2)][kind](p, (const uint8_t *)b->input,
                                                             (uint8_t *)b->output);
  return QMCU_STATUS_OK;
}
