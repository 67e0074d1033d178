/* Fast path of QMCU_ADD (docs §4): the same TFLite arithmetic as qmcu_add_ref, bit for bit.
 *
 * - Both inputs sub-byte with in1_bits + in2_bits <= 8: the output is a function of the two
 *   input codes only, so a table of at most 256 output values (on the stack, built with the
 *   reference arithmetic) replaces the arithmetic; one lookup per element.
 * - Otherwise each input's term is qmcu_mbqm((a - zp) << L, m, s): a 16- or 4-entry table for a
 *   sub-byte input; for an 8-bit input with m >= 0 and s <= 0 (r = -s), the fused form
 *     x2 = 2 * ((a - zp) << L)                   (|x2| < 2^31: |a - zp| <= 255, L <= 22)
 *     term = (SMMULR(x2, m) + c + (x2 < 0 && r > 0 ? -1 : 0)) >> r,  c = r > 0 ? 2^(r-1) : 0
 *   (SMMULR(x2, m) is SRDHM((a - zp) << L, m); RDBPOT rounds half away from zero and the sign
 *   of x2 may stand for the sign of SRDHM's result: they differ only where that is 0, and
 *   there both give 0). The output requantization of the sum takes the same fused form when
 *   the sum is bounded by 2^30 (checked from the terms' extremes), m_out >= 0 and
 *   r_out = -s_out in [1, 30] with |2^(r-1) + zp_out * 2^r| < 2^30 - 2 (zp folded into c);
 *   else qmcu_mbqm. Loops specialized on the widths: both inputs 8-bit (fused88_loop), or one
 *   8-bit input in the fused form and one sub-byte input by its table (mixed_loop: whole bytes
 *   of the packed input and output per step); other cases one element at a time.
 */
#include "qmcu/qmcu_ops.h"
#include "qmcu_opt_common.h"
#include "qmcu_simd.h"

static int32_t add_term(int32_t a, int32_t zp, int32_t left, int32_t m, int32_t s) {
  return qmcu_mbqm((a - zp) * (1 << left), m, s);
}

static int32_t add_value(const qmcu_add_params *p, int32_t a1, int32_t a2) {
  const int32_t sum = add_term(a1, p->in1_zero_point, p->left_shift, p->in1_multiplier,
                               p->in1_shift) +
                      add_term(a2, p->in2_zero_point, p->left_shift, p->in2_multiplier,
                               p->in2_shift);
  return qmcu_clamp(qmcu_mbqm(sum, p->out_multiplier, p->out_shift) + p->out_zero_point,
                    p->act_min, p->act_max);
}

int qmcu_add_opt_supported(const qmcu_add_params *p) {
  return qmcu_add_check(p) == QMCU_STATUS_OK;
}

static int32_t count_of(const qmcu_dims *d) { return d->n * d->h * d->w * d->c; }

/* Writes the output element by element, whole bytes for sub-byte outputs. */
typedef struct {
  uint8_t *out;
  int32_t bits;
  int32_t fill; /* values in `byte` */
  uint32_t byte;
} qmcu_packer;

static void put(qmcu_packer *w, int32_t v) {
  if (w->bits == 8) {
    *w->out++ = (uint8_t)v;
    return;
  }
  w->byte |= ((uint32_t)v & ((1u << w->bits) - 1u)) << (w->fill * w->bits);
  if (++w->fill == 8 / w->bits) {
    *w->out++ = (uint8_t)w->byte;
    w->byte = 0;
    w->fill = 0;
  }
}

#if defined(__GNUC__)
#define QMCU_ADD_INLINE static inline __attribute__((always_inline))
#else
#define QMCU_ADD_INLINE static inline
#endif

/* Element i of a packed sub-byte input (b a constant after inlining). */
QMCU_ADD_INLINE uint32_t code_at(const uint8_t *in, int32_t i, int32_t b) {
  return ((uint32_t)in[i / (8 / b)] >> ((i % (8 / b)) * b)) & ((1u << b) - 1u);
}

/* The output bytes from the table; bit widths are constants after inlining. */
QMCU_ADD_INLINE void table_loop(const uint8_t *table, const uint8_t *in1, const uint8_t *in2,
                                uint8_t *out, int32_t count, int32_t b1, int32_t b2,
                                int32_t bo) {
  const int32_t per = 8 / bo;
  int32_t i, k;
  for (i = 0; i < count; i += per) {
    uint32_t byte = 0;
    for (k = 0; k < per; ++k) {
      const uint32_t idx = (code_at(in1, i + k, b1) << b2) | code_at(in2, i + k, b2);
      byte |= ((uint32_t)table[idx] & ((1u << (bo == 8 ? 8 : bo)) - 1u)) << (k * bo);
    }
    *out++ = (uint8_t)byte;
  }
}

#define QMCU_ADD_TABLE(B1, B2, BO)                                                         \
  static void table_##B1##_##B2##_##BO(const uint8_t *t, const uint8_t *a, const uint8_t *b, \
                                       uint8_t *o, int32_t n) {                            \
    table_loop(t, a, b, o, n, B1, B2, BO);                                                \
  }
QMCU_ADD_TABLE(4, 4, 8)
QMCU_ADD_TABLE(4, 4, 4)
QMCU_ADD_TABLE(4, 4, 2)
QMCU_ADD_TABLE(4, 2, 8)
QMCU_ADD_TABLE(4, 2, 4)
QMCU_ADD_TABLE(4, 2, 2)
QMCU_ADD_TABLE(2, 4, 8)
QMCU_ADD_TABLE(2, 4, 4)
QMCU_ADD_TABLE(2, 4, 2)
QMCU_ADD_TABLE(2, 2, 8)
QMCU_ADD_TABLE(2, 2, 4)
QMCU_ADD_TABLE(2, 2, 2)

typedef void (*qmcu_add_table_fn)(const uint8_t *, const uint8_t *, const uint8_t *, uint8_t *,
                                  int32_t);

/* in1_bits + in2_bits <= 8: one table lookup per element. */
static void add_by_table(const qmcu_add_params *p, const qmcu_add_buffers *b) {
  static const qmcu_add_table_fn fns[2][2][3] = {
      {{table_4_4_8, table_4_4_4, table_4_4_2}, {table_4_2_8, table_4_2_4, table_4_2_2}},
      {{table_2_4_8, table_2_4_4, table_2_4_2}, {table_2_2_8, table_2_2_4, table_2_2_2}}};
  uint8_t table[256];
  const int32_t b1 = p->in1_bits, b2 = p->in2_bits;
  int32_t a1, a2;
  for (a1 = 0; a1 < (1 << b1); ++a1) {
    for (a2 = 0; a2 < (1 << b2); ++a2) table[(a1 << b2) | a2] = (uint8_t)add_value(p, a1, a2);
  }
  fns[b1 == 4 ? 0 : 1][b2 == 4 ? 0 : 1][p->out_bits == 8 ? 0 : (p->out_bits == 4 ? 1 : 2)](
      table, (const uint8_t *)b->input1, (const uint8_t *)b->input2, (uint8_t *)b->output,
      count_of(&p->shape));
}

/* One input's term: a table (sub-byte input), the fused form, or qmcu_mbqm. */
typedef struct {
  int32_t table[16];
  int32_t bits;
  int32_t fused;
  int32_t scale2; /* 2^(L+1) */
  int32_t bias2;  /* -zp * 2^(L+1) */
  int32_t mult;
  int32_t c;
  int32_t neg;    /* -1 when r > 0, else 0 */
  int32_t r;
  int32_t zp;
  int32_t left;
  int32_t shift;
} qmcu_add_term;

static qmcu_add_term term_setup(const qmcu_add_params *p, int32_t bits, int32_t zp, int32_t m,
                                int32_t s) {
  qmcu_add_term t;
  int32_t a;
  t.bits = bits;
  t.zp = zp;
  t.left = p->left_shift;
  t.mult = m;
  t.shift = s;
  t.fused = bits == 8 && m >= 0 && s <= 0 && s >= -30;
  t.r = t.fused ? -s : 0;
  t.scale2 = 1 << (p->left_shift + 1);
  t.bias2 = -zp * t.scale2;
  t.c = t.r > 0 ? 1 << (t.r - 1) : 0;
  t.neg = t.r > 0 ? -1 : 0;
  for (a = 0; a < 16; ++a) {
    t.table[a] = bits < 8 && a < (1 << bits) ? add_term(a, zp, t.left, m, s) : 0;
  }
  return t;
}

static int32_t term_value(const qmcu_add_term *t, const uint8_t *in, int32_t i) {
  if (t->bits < 8) return t->table[qmcu_load_act(in, i, t->bits)];
  {
    const int32_t a = (int32_t)(int8_t)in[i];
    if (t->fused) {
      const int32_t x2 = a * t->scale2 + t->bias2;
      return (qmcu_smmulr(x2, t->mult) + t->c + ((x2 >> 31) & t->neg)) >> t->r;
    }
    return add_term(a, t->zp, t->left, t->mult, t->shift);
  }
}

/* Largest |term| over the input's codes (terms are monotone in the code). */
static int64_t term_bound(const qmcu_add_term *t) {
  const int32_t lo = t->bits == 8 ? -128 : 0, hi = t->bits == 8 ? 127 : (1 << t->bits) - 1;
  const int64_t a = add_term(lo, t->zp, t->left, t->mult, t->shift);
  const int64_t c = add_term(hi, t->zp, t->left, t->mult, t->shift);
  const int64_t aa = a < 0 ? -a : a, cc = c < 0 ? -c : c;
  return aa > cc ? aa : cc;
}

/* Both inputs 8-bit and every requantization fused; out_bits a constant after inlining. */
QMCU_ADD_INLINE void fused88_loop(const qmcu_add_term *t1, const qmcu_add_term *t2,
                                  const int8_t *in1, const int8_t *in2, uint8_t *out,
                                  int32_t count, int32_t mo, int32_t c, int32_t r, int32_t lo,
                                  int32_t hi, int32_t bo) {
  const int32_t s1 = t1->scale2, z1 = t1->bias2, m1 = t1->mult, c1 = t1->c, n1 = t1->neg;
  const int32_t r1 = t1->r, s2 = t2->scale2, z2 = t2->bias2, m2 = t2->mult, c2 = t2->c;
  const int32_t n2 = t2->neg, r2 = t2->r, per = 8 / bo;
  int32_t i, k;
  for (i = 0; i < count; i += per) {
    uint32_t byte = 0;
    for (k = 0; k < per; ++k) {
      const int32_t x1 = in1[i + k] * s1 + z1, x2 = in2[i + k] * s2 + z2;
      const int32_t sum = ((qmcu_smmulr(x1, m1) + c1 + ((x1 >> 31) & n1)) >> r1) +
                          ((qmcu_smmulr(x2, m2) + c2 + ((x2 >> 31) & n2)) >> r2);
      const int32_t d = 2 * sum;
      int32_t y = (int32_t)((uint32_t)c + (uint32_t)qmcu_smmulr(d, mo) + (uint32_t)(d >> 31)) >> r;
      y = y < lo ? lo : (y > hi ? hi : y);
      byte |= ((uint32_t)y & (bo == 8 ? 0xffu : (1u << bo) - 1u)) << (k * bo);
    }
    if (bo == 8) {
      out[i] = (uint8_t)byte;
    } else {
      out[i / per] = (uint8_t)byte;
    }
  }
}

static void fused88_8(const qmcu_add_term *t1, const qmcu_add_term *t2, const int8_t *a,
                      const int8_t *b, uint8_t *o, int32_t n, int32_t mo, int32_t c, int32_t r,
                      int32_t lo, int32_t hi) {
  fused88_loop(t1, t2, a, b, o, n, mo, c, r, lo, hi, 8);
}

static void fused88_4(const qmcu_add_term *t1, const qmcu_add_term *t2, const int8_t *a,
                      const int8_t *b, uint8_t *o, int32_t n, int32_t mo, int32_t c, int32_t r,
                      int32_t lo, int32_t hi) {
  fused88_loop(t1, t2, a, b, o, n, mo, c, r, lo, hi, 4);
}

static void fused88_2(const qmcu_add_term *t1, const qmcu_add_term *t2, const int8_t *a,
                      const int8_t *b, uint8_t *o, int32_t n, int32_t mo, int32_t c, int32_t r,
                      int32_t lo, int32_t hi) {
  fused88_loop(t1, t2, a, b, o, n, mo, c, r, lo, hi, 2);
}

/* One 8-bit input (fused term) and one sub-byte input (its 16- or 4-entry term table), the
 * output requantization fused; bs (the sub-byte width) and bo constants after inlining. Steps
 * of `chunk` elements: whole bytes of the packed input and of the packed output. */
QMCU_ADD_INLINE void mixed_loop(const qmcu_add_term *t8, const int32_t *table, const int8_t *a,
                                const uint8_t *sub, uint8_t *out, int32_t count, int32_t mo,
                                int32_t c, int32_t r, int32_t lo, int32_t hi, int32_t bs,
                                int32_t bo) {
  const int32_t s1 = t8->scale2, z1 = t8->bias2, m1 = t8->mult, c1 = t8->c, n1 = t8->neg;
  const int32_t r1 = t8->r;
  const int32_t chunk = bo == 8 || bs <= bo ? 8 / bs : 8 / bo;
  const uint32_t code_mask = (1u << bs) - 1u;
  int32_t i;
  for (i = 0; i < count; i += chunk, a += chunk) {
    const uint32_t codes = chunk * bs > 8 ? (uint32_t)sub[0] | ((uint32_t)sub[1] << 8)
                                          : (uint32_t)sub[0];
    uint32_t packed = 0;
#define QMCU_ADD_MIXED_STEP(K)                                                               \
  if ((K) < chunk) {                                                                         \
    const int32_t x1 = a[K] * s1 + z1;                                                       \
    const int32_t sum = ((qmcu_smmulr(x1, m1) + c1 + ((x1 >> 31) & n1)) >> r1) +             \
                        table[(codes >> ((K) * bs)) & code_mask];                            \
    const int32_t d = 2 * sum;                                                               \
    int32_t y = (int32_t)((uint32_t)c + (uint32_t)qmcu_smmulr(d, mo) + (uint32_t)(d >> 31)) >> r; \
    y = y < lo ? lo : (y > hi ? hi : y);                                                     \
    if (bo == 8) {                                                                           \
      out[K] = (uint8_t)y;                                                                   \
    } else {                                                                                 \
      packed |= (uint32_t)y << ((K) * bo); /* y is in [lo, hi], inside the output range */   \
    }                                                                                        \
  }
    QMCU_ADD_MIXED_STEP(0)
    QMCU_ADD_MIXED_STEP(1)
    QMCU_ADD_MIXED_STEP(2)
    QMCU_ADD_MIXED_STEP(3)
#undef QMCU_ADD_MIXED_STEP
    sub += chunk * bs / 8;
    if (bo == 8) {
      out += chunk;
    } else {
      out[0] = (uint8_t)packed;
      if (chunk * bo > 8) out[1] = (uint8_t)(packed >> 8);
      out += chunk * bo / 8;
    }
  }
}

#define QMCU_ADD_MIXED(BS, BO)                                                               \
  static void mixed_##BS##_##BO(const qmcu_add_term *t8, const int32_t *table, const int8_t *a, \
                                const uint8_t *sub, uint8_t *out, int32_t count, int32_t mo,  \
                                int32_t c, int32_t r, int32_t lo, int32_t hi) {               \
    mixed_loop(t8, table, a, sub, out, count, mo, c, r, lo, hi, BS, BO);                      \
  }
QMCU_ADD_MIXED(4, 8)
QMCU_ADD_MIXED(4, 4)
QMCU_ADD_MIXED(4, 2)
QMCU_ADD_MIXED(2, 8)
QMCU_ADD_MIXED(2, 4)
QMCU_ADD_MIXED(2, 2)
#undef QMCU_ADD_MIXED

typedef void (*qmcu_add_mixed_fn)(const qmcu_add_term *, const int32_t *, const int8_t *,
                                  const uint8_t *, uint8_t *, int32_t, int32_t, int32_t, int32_t,
                                  int32_t, int32_t);

static void add_by_terms(const qmcu_add_params *p, const qmcu_add_buffers *b) {
  const qmcu_add_term t1 = term_setup(p, p->in1_bits, p->in1_zero_point, p->in1_multiplier,
                                      p->in1_shift);
  const qmcu_add_term t2 = term_setup(p, p->in2_bits, p->in2_zero_point, p->in2_multiplier,
                                      p->in2_shift);
  const int32_t r = -p->out_shift, count = count_of(&p->shape);
  const int64_t zo = p->out_zero_point < 0 ? -(int64_t)p->out_zero_point : p->out_zero_point;
  const int fused = p->out_multiplier >= 0 && r >= 1 && r <= 30 &&
                    ((int64_t)1 << (r - 1)) + zo * ((int64_t)1 << r) < ((int64_t)1 << 30) - 2 &&
                    term_bound(&t1) + term_bound(&t2) < ((int64_t)1 << 30);
  const int32_t c = fused ? (int32_t)(((uint32_t)1 << (r - 1)) +
                                      (uint32_t)p->out_zero_point * (1u << r))
                          : 0;
  const int32_t lo = p->act_min, hi = p->act_max;
  qmcu_packer w;
  int32_t i;
  if (fused && t1.fused && t2.fused) {
    const int8_t *a = (const int8_t *)b->input1, *bb = (const int8_t *)b->input2;
    uint8_t *o = (uint8_t *)b->output;
    const int32_t mo = p->out_multiplier;
    if (p->out_bits == 8) {
      fused88_8(&t1, &t2, a, bb, o, count, mo, c, r, lo, hi);
    } else if (p->out_bits == 4) {
      fused88_4(&t1, &t2, a, bb, o, count, mo, c, r, lo, hi);
    } else {
      fused88_2(&t1, &t2, a, bb, o, count, mo, c, r, lo, hi);
    }
    return;
  }
  if (fused && (t1.bits == 8) != (t2.bits == 8) && (t1.bits == 8 ? t1.fused : t2.fused)) {
    static const qmcu_add_mixed_fn fns[2][3] = {{mixed_4_8, mixed_4_4, mixed_4_2},
                                                {mixed_2_8, mixed_2_4, mixed_2_2}};
    const qmcu_add_term *t8 = t1.bits == 8 ? &t1 : &t2, *ts = t1.bits == 8 ? &t2 : &t1;
    const void *in8 = t1.bits == 8 ? b->input1 : b->input2;
    const void *insub = t1.bits == 8 ? b->input2 : b->input1;
    fns[ts->bits == 4 ? 0 : 1][p->out_bits == 8 ? 0 : (p->out_bits == 4 ? 1 : 2)](
        t8, ts->table, (const int8_t *)in8, (const uint8_t *)insub, (uint8_t *)b->output, count,
        p->out_multiplier, c, r, lo, hi);
    return;
  }
  w.out = (uint8_t *)b->output;
  w.bits = p->out_bits;
  w.fill = 0;
  w.byte = 0;
  for (i = 0; i < count; ++i) {
    const int32_t sum = term_value(&t1, (const uint8_t *)b->input1, i) +
                        term_value(&t2, (const uint8_t *)b->input2, i);
    int32_t y;
    if (fused) {
      const int32_t x2 = 2 * sum;
      y = (int32_t)((uint32_t)c + (uint32_t)qmcu_smmulr(x2, p->out_multiplier) +
                    (uint32_t)(x2 >> 31)) >> r;
    } else {
      y = qmcu_mbqm(sum, p->out_multiplier, p->out_shift) + p->out_zero_point;
    }
    put(&w, y < lo ? lo : (y > hi ? hi : y));
  }
}

qmcu_status qmcu_add_opt(const qmcu_add_params *p, const qmcu_add_buffers *b) {
  if (!qmcu_add_opt_supported(p)) return QMCU_STATUS_UNSUPPORTED;
  if (b == NULL) return QMCU_STATUS_BAD_PARAMS;
  if (p->in1_bits + p->in2_bits <= 8) {
    add_by_table(p, b);
  } else {
    add_by_terms(p, b);
  }
  return QMCU_STATUS_OK;
}
