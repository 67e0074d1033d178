/* Parameter validation shared by all paths (docs/qmcu_ops.md §1). */
#include "qmcu/qmcu_ops.h"

static int valid_bits(int32_t bits) { return bits == 8 || bits == 4 || bits == 2; }

static int32_t act_lo(int32_t bits) { return bits == 8 ? -128 : 0; }

static int32_t act_hi(int32_t bits) { return bits == 8 ? 127 : (1 << bits) - 1; }

static int valid_zero_point(int32_t zp, int32_t bits) {
  return zp >= act_lo(bits) && zp <= act_hi(bits);
}

static int valid_act(int32_t lo, int32_t hi, int32_t bits) {
  return act_lo(bits) <= lo && lo <= hi && hi <= act_hi(bits);
}

static int packable(int32_t channels, int32_t bits) {
  return bits == 8 || channels % (8 / bits) == 0;
}

static int positive_dims(const qmcu_dims *d) {
  return d->n > 0 && d->h > 0 && d->w > 0 && d->c > 0;
}

static int32_t out_size(int32_t in, int32_t k, int32_t stride, int32_t dilation, int32_t before,
                        int32_t after) {
  return (in + before + after - dilation * (k - 1) - 1) / stride + 1;
}

static int valid_geometry(const qmcu_geometry *g, const qmcu_dims *in, const qmcu_dims *out,
                          int32_t kh, int32_t kw) {
  if (g->stride_h < 1 || g->stride_w < 1 || g->dilation_h < 1 || g->dilation_w < 1) return 0;
  if (g->pad_top < 0 || g->pad_bottom < 0 || g->pad_left < 0 || g->pad_right < 0) return 0;
  if (in->h + g->pad_top + g->pad_bottom < g->dilation_h * (kh - 1) + 1) return 0;
  if (in->w + g->pad_left + g->pad_right < g->dilation_w * (kw - 1) + 1) return 0;
  return out->h == out_size(in->h, kh, g->stride_h, g->dilation_h, g->pad_top, g->pad_bottom) &&
         out->w == out_size(in->w, kw, g->stride_w, g->dilation_w, g->pad_left, g->pad_right);
}

static int valid_conv_common(const qmcu_conv_params *p) {
  if (!valid_bits(p->in_bits) || !valid_bits(p->w_bits) || !valid_bits(p->out_bits)) return 0;
  if (!valid_zero_point(p->in_zero_point, p->in_bits)) return 0;
  if (!valid_zero_point(p->out_zero_point, p->out_bits)) return 0;
  if (!valid_act(p->act_min, p->act_max, p->out_bits)) return 0;
  if (!positive_dims(&p->input) || !positive_dims(&p->filter) || !positive_dims(&p->output)) {
    return 0;
  }
  if (p->input.n != p->output.n) return 0;
  if (!packable(p->input.c, p->in_bits) || !packable(p->output.c, p->out_bits)) return 0;
  if (!packable(p->filter.c, p->w_bits)) return 0;
  return valid_geometry(&p->geometry, &p->input, &p->output, p->filter.h, p->filter.w);
}

qmcu_status qmcu_conv_2d_check(const qmcu_conv_params *p) {
  if (p == NULL || !valid_conv_common(p)) return QMCU_STATUS_BAD_PARAMS;
  if (p->filter.c != p->input.c || p->filter.n != p->output.c) return QMCU_STATUS_BAD_PARAMS;
  return QMCU_STATUS_OK;
}

qmcu_status qmcu_depthwise_conv_2d_check(const qmcu_conv_params *p) {
  if (p == NULL || !valid_conv_common(p)) return QMCU_STATUS_BAD_PARAMS;
  if (p->depth_multiplier < 1 || p->filter.n != 1 || p->filter.c != p->output.c ||
      p->output.c != p->input.c * p->depth_multiplier) {
    return QMCU_STATUS_BAD_PARAMS;
  }
  return QMCU_STATUS_OK;
}

qmcu_status qmcu_add_check(const qmcu_add_params *p) {
  if (p == NULL || !positive_dims(&p->shape)) return QMCU_STATUS_BAD_PARAMS;
  if (!valid_bits(p->in1_bits) || !valid_bits(p->in2_bits) || !valid_bits(p->out_bits)) {
    return QMCU_STATUS_BAD_PARAMS;
  }
  if (!valid_zero_point(p->in1_zero_point, p->in1_bits) ||
      !valid_zero_point(p->in2_zero_point, p->in2_bits) ||
      !valid_zero_point(p->out_zero_point, p->out_bits)) {
    return QMCU_STATUS_BAD_PARAMS;
  }
  if (!packable(p->shape.c, p->in1_bits) || !packable(p->shape.c, p->in2_bits) ||
      !packable(p->shape.c, p->out_bits)) {
    return QMCU_STATUS_BAD_PARAMS;
  }
  if (p->left_shift < 0 || p->left_shift > 22) return QMCU_STATUS_BAD_PARAMS;
  return valid_act(p->act_min, p->act_max, p->out_bits) ? QMCU_STATUS_OK
                                                         : QMCU_STATUS_BAD_PARAMS;
}

qmcu_status qmcu_average_pool_2d_check(const qmcu_avg_pool_params *p) {
  if (p == NULL || !positive_dims(&p->input) || !positive_dims(&p->output)) {
    return QMCU_STATUS_BAD_PARAMS;
  }
  if (!valid_bits(p->in_bits) || !valid_bits(p->out_bits)) return QMCU_STATUS_BAD_PARAMS;
  if (!valid_zero_point(p->in_zero_point, p->in_bits) ||
      !valid_zero_point(p->out_zero_point, p->out_bits) ||
      !valid_act(p->act_min, p->act_max, p->out_bits)) {
    return QMCU_STATUS_BAD_PARAMS;
  }
  if (p->input.n != p->output.n || p->input.c != p->output.c) return QMCU_STATUS_BAD_PARAMS;
  if (!packable(p->input.c, p->in_bits) || !packable(p->output.c, p->out_bits)) {
    return QMCU_STATUS_BAD_PARAMS;
  }
  if (!p->rescale && p->in_bits != p->out_bits) return QMCU_STATUS_BAD_PARAMS;
  if (p->filter_h < 1 || p->filter_w < 1) return QMCU_STATUS_BAD_PARAMS;
  if (p->geometry.dilation_h != 1 || p->geometry.dilation_w != 1) return QMCU_STATUS_BAD_PARAMS;
  if (p->geometry.pad_top >= p->filter_h || p->geometry.pad_bottom >= p->filter_h ||
      p->geometry.pad_left >= p->filter_w || p->geometry.pad_right >= p->filter_w) {
    return QMCU_STATUS_BAD_PARAMS; /* a window made only of padding would have count 0 */
  }
  return valid_geometry(&p->geometry, &p->input, &p->output, p->filter_h, p->filter_w)
             ? QMCU_STATUS_OK
             : QMCU_STATUS_BAD_PARAMS;
}

qmcu_status qmcu_requant_check(const qmcu_requant_params *p) {
  if (p == NULL || !positive_dims(&p->shape)) return QMCU_STATUS_BAD_PARAMS;
  if (!valid_bits(p->in_bits) || !valid_bits(p->out_bits)) return QMCU_STATUS_BAD_PARAMS;
  if ((p->in_bits == 8) == (p->out_bits == 8)) return QMCU_STATUS_BAD_PARAMS;
  if (!valid_zero_point(p->in_zero_point, p->in_bits) ||
      !valid_zero_point(p->out_zero_point, p->out_bits)) {
    return QMCU_STATUS_BAD_PARAMS;
  }
  return packable(p->shape.c, p->in_bits) && packable(p->shape.c, p->out_bits)
             ? QMCU_STATUS_OK
             : QMCU_STATUS_BAD_PARAMS;
}
