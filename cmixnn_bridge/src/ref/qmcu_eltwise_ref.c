/* Reference QMCU_ADD, QMCU_AVERAGE_POOL_2D, QMCU_PACK, QMCU_UNPACK (docs §4-§6). */
#include "qmcu/qmcu_ops.h"

static int32_t element_count(const qmcu_dims *d) { return d->n * d->h * d->w * d->c; }

qmcu_status qmcu_add_ref(const qmcu_add_params *p, const qmcu_add_buffers *b) {
  const uint8_t *in1;
  const uint8_t *in2;
  uint8_t *out;
  int32_t i, count;
  if (qmcu_add_check(p) != QMCU_STATUS_OK || b == NULL) return QMCU_STATUS_BAD_PARAMS;
  in1 = (const uint8_t *)b->input1;
  in2 = (const uint8_t *)b->input2;
  out = (uint8_t *)b->output;
  count = element_count(&p->shape);
  for (i = 0; i < count; ++i) {
    const int32_t x1 = (qmcu_load_act(in1, i, p->in1_bits) - p->in1_zero_point) *
                       (1 << p->left_shift);
    const int32_t x2 = (qmcu_load_act(in2, i, p->in2_bits) - p->in2_zero_point) *
                       (1 << p->left_shift);
    const int32_t sum = qmcu_mbqm(x1, p->in1_multiplier, p->in1_shift) +
                        qmcu_mbqm(x2, p->in2_multiplier, p->in2_shift);
    const int32_t y = qmcu_mbqm(sum, p->out_multiplier, p->out_shift) + p->out_zero_point;
    qmcu_store_act(out, i, p->out_bits, qmcu_clamp(y, p->act_min, p->act_max));
  }
  return QMCU_STATUS_OK;
}

/* TFLite's average-pool rounding: half away from zero. */
static int32_t round_div(int32_t value, int32_t count) {
  return value > 0 ? (value + count / 2) / count : (value - count / 2) / count;
}

static int32_t pool_one(const qmcu_avg_pool_params *p, const uint8_t *in, int32_t n, int32_t oy,
                        int32_t ox, int32_t c) {
  const int32_t y0 = oy * p->geometry.stride_h - p->geometry.pad_top;
  const int32_t x0 = ox * p->geometry.stride_w - p->geometry.pad_left;
  const int32_t offset = p->rescale ? p->in_zero_point : 0;
  int32_t sum = 0, count = 0;
  int32_t y, x;
  for (y = y0 < 0 ? 0 : y0; y < y0 + p->filter_h && y < p->input.h; ++y) {
    for (x = x0 < 0 ? 0 : x0; x < x0 + p->filter_w && x < p->input.w; ++x) {
      sum += qmcu_load_act(in, ((n * p->input.h + y) * p->input.w + x) * p->input.c + c,
                           p->in_bits) - offset;
      ++count;
    }
  }
  if (p->rescale) {
    return round_div(qmcu_mbqm(sum, p->multiplier, p->shift), count) + p->out_zero_point;
  }
  return round_div(sum, count);
}

qmcu_status qmcu_average_pool_2d_ref(const qmcu_avg_pool_params *p,
                                     const qmcu_unary_buffers *b) {
  const uint8_t *in;
  uint8_t *out;
  int32_t n, oy, ox, c;
  if (qmcu_average_pool_2d_check(p) != QMCU_STATUS_OK || b == NULL) {
    return QMCU_STATUS_BAD_PARAMS;
  }
  in = (const uint8_t *)b->input;
  out = (uint8_t *)b->output;
  for (n = 0; n < p->output.n; ++n) {
    for (oy = 0; oy < p->output.h; ++oy) {
      for (ox = 0; ox < p->output.w; ++ox) {
        const int32_t base = ((n * p->output.h + oy) * p->output.w + ox) * p->output.c;
        for (c = 0; c < p->output.c; ++c) {
          const int32_t y = qmcu_clamp(pool_one(p, in, n, oy, ox, c), p->act_min, p->act_max);
          qmcu_store_act(out, base + c, p->out_bits, y);
        }
      }
    }
  }
  return QMCU_STATUS_OK;
}

static qmcu_status requant_ref(const qmcu_requant_params *p, const qmcu_unary_buffers *b) {
  const uint8_t *in = (const uint8_t *)b->input;
  uint8_t *out = (uint8_t *)b->output;
  const int32_t lo = p->out_bits == 8 ? -128 : 0;
  const int32_t hi = p->out_bits == 8 ? 127 : (1 << p->out_bits) - 1;
  const int32_t count = element_count(&p->shape);
  int32_t i;
  for (i = 0; i < count; ++i) {
    const int32_t x = qmcu_load_act(in, i, p->in_bits) - p->in_zero_point;
    const int32_t y = qmcu_mbqm(x, p->multiplier, p->shift) + p->out_zero_point;
    qmcu_store_act(out, i, p->out_bits, qmcu_clamp(y, lo, hi));
  }
  return QMCU_STATUS_OK;
}

qmcu_status qmcu_pack_ref(const qmcu_requant_params *p, const qmcu_unary_buffers *b) {
  if (qmcu_requant_check(p) != QMCU_STATUS_OK || b == NULL || p->in_bits != 8) {
    return QMCU_STATUS_BAD_PARAMS;
  }
  return requant_ref(p, b);
}

qmcu_status qmcu_unpack_ref(const qmcu_requant_params *p, const qmcu_unary_buffers *b) {
  if (qmcu_requant_check(p) != QMCU_STATUS_OK || b == NULL || p->out_bits != 8) {
    return QMCU_STATUS_BAD_PARAMS;
  }
  return requant_ref(p, b);
}
