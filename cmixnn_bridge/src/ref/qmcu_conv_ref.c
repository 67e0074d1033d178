/* Generic reference QMCU_CONV_2D / QMCU_DEPTHWISE_CONV_2D over all bit widths (docs §2, §3). */
#include "qmcu/qmcu_ops.h"

static int32_t requantize_output(const qmcu_conv_params *p, const qmcu_conv_buffers *b,
                                 int32_t acc, int32_t co) {
  if (b->bias != NULL) acc += b->bias[co];
  acc = qmcu_mbqm(acc, b->multiplier[co], b->shift[co]) + p->out_zero_point;
  return qmcu_clamp(acc, p->act_min, p->act_max);
}

/* Sum over the window of one output pixel and channel; padding adds nothing. */
static int32_t conv_window(const qmcu_conv_params *p, const uint8_t *in, const uint8_t *w,
                           int32_t n, int32_t oy, int32_t ox, int32_t co) {
  const qmcu_geometry *g = &p->geometry;
  const int32_t c_in = p->input.c;
  int32_t acc = 0;
  int32_t ky, kx, ci;
  for (ky = 0; ky < p->filter.h; ++ky) {
    const int32_t iy = oy * g->stride_h - g->pad_top + ky * g->dilation_h;
    if (iy < 0 || iy >= p->input.h) continue;
    for (kx = 0; kx < p->filter.w; ++kx) {
      const int32_t ix = ox * g->stride_w - g->pad_left + kx * g->dilation_w;
      int32_t in_base, w_base;
      if (ix < 0 || ix >= p->input.w) continue;
      in_base = ((n * p->input.h + iy) * p->input.w + ix) * c_in;
      w_base = ((co * p->filter.h + ky) * p->filter.w + kx) * c_in;
      for (ci = 0; ci < c_in; ++ci) {
        const int32_t x = qmcu_load_act(in, in_base + ci, p->in_bits) - p->in_zero_point;
        acc += x * qmcu_load_weight(w, w_base + ci, p->w_bits);
      }
    }
  }
  return acc;
}

qmcu_status qmcu_conv_2d_ref(const qmcu_conv_params *p, const qmcu_conv_buffers *b) {
  const uint8_t *in;
  const uint8_t *w;
  uint8_t *out;
  int32_t n, oy, ox, co;
  if (qmcu_conv_2d_check(p) != QMCU_STATUS_OK || b == NULL) return QMCU_STATUS_BAD_PARAMS;
  in = (const uint8_t *)b->input;
  w = (const uint8_t *)b->filter;
  out = (uint8_t *)b->output;
  for (n = 0; n < p->output.n; ++n) {
    for (oy = 0; oy < p->output.h; ++oy) {
      for (ox = 0; ox < p->output.w; ++ox) {
        const int32_t out_base = ((n * p->output.h + oy) * p->output.w + ox) * p->output.c;
        for (co = 0; co < p->output.c; ++co) {
          const int32_t acc = conv_window(p, in, w, n, oy, ox, co);
          qmcu_store_act(out, out_base + co, p->out_bits, requantize_output(p, b, acc, co));
        }
      }
    }
  }
  return QMCU_STATUS_OK;
}

static int32_t depthwise_window(const qmcu_conv_params *p, const uint8_t *in, const uint8_t *w,
                                int32_t n, int32_t oy, int32_t ox, int32_t co) {
  const qmcu_geometry *g = &p->geometry;
  const int32_t ci = co / p->depth_multiplier;
  int32_t acc = 0;
  int32_t ky, kx;
  for (ky = 0; ky < p->filter.h; ++ky) {
    const int32_t iy = oy * g->stride_h - g->pad_top + ky * g->dilation_h;
    if (iy < 0 || iy >= p->input.h) continue;
    for (kx = 0; kx < p->filter.w; ++kx) {
      const int32_t ix = ox * g->stride_w - g->pad_left + kx * g->dilation_w;
      int32_t x;
      if (ix < 0 || ix >= p->input.w) continue;
      x = qmcu_load_act(in, ((n * p->input.h + iy) * p->input.w + ix) * p->input.c + ci,
                        p->in_bits) - p->in_zero_point;
      acc += x * qmcu_load_weight(w, (ky * p->filter.w + kx) * p->filter.c + co, p->w_bits);
    }
  }
  return acc;
}

qmcu_status qmcu_depthwise_conv_2d_ref(const qmcu_conv_params *p, const qmcu_conv_buffers *b) {
  const uint8_t *in;
  const uint8_t *w;
  uint8_t *out;
  int32_t n, oy, ox, co;
  if (qmcu_depthwise_conv_2d_check(p) != QMCU_STATUS_OK || b == NULL) {
    return QMCU_STATUS_BAD_PARAMS;
  }
  in = (const uint8_t *)b->input;
  w = (const uint8_t *)b->filter;
  out = (uint8_t *)b->output;
  for (n = 0; n < p->output.n; ++n) {
    for (oy = 0; oy < p->output.h; ++oy) {
      for (ox = 0; ox < p->output.w; ++ox) {
        const int32_t out_base = ((n * p->output.h + oy) * p->output.w + ox) * p->output.c;
        for (co = 0; co < p->output.c; ++co) {
          const int32_t acc = depthwise_window(p, in, w, n, oy, ox, co);
          qmcu_store_act(out, out_base + co, p->out_bits, requantize_output(p, b, acc, co));
        }
      }
    }
  }
  return QMCU_STATUS_OK;
}
