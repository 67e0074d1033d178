/* QMCU_PATCH_STAGE (docs/qmcu_ops.md §8): patches row-major, layers in order, through the
 * existing layer kernels. Mirrors tflite_quantmcu/reference/qmcu_stage.py step for step:
 * a layer input is read in place (rows by pointer offset) or first copied to its staging slot,
 * the layer runs with the patch's border padding as explicit pads, the output goes to its slot
 * (or straight into the stage output), and a stage output with a slot is copied out after each
 * patch. In-place (depthwise) layers need nothing here: their slots overlap as planned and the
 * kernels write output rows in order. */
#include <string.h>

#include "qmcu/qmcu_ops.h"
#include "qmcu/qmcu_stage.h"

/* bench/kernels_cortexm.py --stage builds with QMCU_STAGE_BENCH_HOOKS to count the
 * instructions of the layer kernels alone (markers around every kernel call). */
#ifdef QMCU_STAGE_BENCH_HOOKS
void qmcu_bench_begin(void);
void qmcu_bench_end(void);
#define QMCU_KERNEL_BEGIN() qmcu_bench_begin()
#define QMCU_KERNEL_END() qmcu_bench_end()
#else
#define QMCU_KERNEL_BEGIN() ((void)0)
#define QMCU_KERNEL_END() ((void)0)
#endif

typedef struct {
  int32_t start;
  int32_t stop;
  int32_t pad_before;
  int32_t pad_after;
} qmcu_cut;

typedef struct {
  const qmcu_stage_params *p;
  const qmcu_stage_buffers *b;
  const int32_t *ext; /* version 2's per-patch section, NULL: every map int8 */
  int use_opt;
  int32_t i;
  int32_t j;
  int32_t patch; /* i * grid_cols + j */
} qmcu_stage_run;

/* A layer's quantization for the current patch: its own fields or a version-2 variant. */
typedef struct {
  int32_t act_min;
  int32_t act_max;
  const int32_t *bias;    /* NULL: none */
  const int32_t *requant; /* multipliers, then shifts; NULL: none (a pool without rescale) */
} qmcu_variant;

static const int32_t *tensor_at(const qmcu_stage_params *p, int32_t t) {
  return p->pool + QMCU_STAGE_TENSOR_WORDS * t;
}

static const int32_t *parts_at(const qmcu_stage_params *p, int32_t t) {
  return p->pool + QMCU_STAGE_TENSOR_WORDS * p->num_tensors +
         2 * (p->grid_rows + p->grid_cols) * t;
}

static const int32_t *layer_at(const qmcu_stage_params *p, int32_t n) {
  return parts_at(p, p->num_tensors) + QMCU_STAGE_LAYER_WORDS * n;
}

/* Start of version 2's section: after the layers' requant words (NULL when the pool ends
 * there, as a version-1 pool does). */
static int32_t ext_start(const qmcu_stage_params *p) {
  int32_t n, at = (int32_t)qmcu_stage_pool_words_for(p->num_tensors, p->num_layers,
                                                      p->grid_rows, p->grid_cols, 0);
  for (n = 0; n < p->num_layers; ++n) at += 2 * layer_at(p, n)[QMCU_STAGE_L_REQUANT_COUNT];
  return at;
}

static int32_t patches_of(const qmcu_stage_params *p) { return p->grid_rows * p->grid_cols; }

/* Width and zero point of tensor t in the current patch. */
static int32_t t_bits(const qmcu_stage_run *run, int32_t t) {
  if (run->ext != NULL && run->ext[t] >= 0) return run->p->pool[run->ext[t] + run->patch];
  return tensor_at(run->p, t)[4];
}

static int32_t t_zero_point(const qmcu_stage_run *run, int32_t t) {
  if (run->ext != NULL && run->ext[t] >= 0) {
    return run->p->pool[run->ext[t] + patches_of(run->p) + run->patch];
  }
  return tensor_at(run->p, t)[5];
}

static int32_t pixel_bytes(const qmcu_stage_run *run, int32_t t) {
  return tensor_at(run->p, t)[3] * t_bits(run, t) / 8;
}

static qmcu_variant layer_variant(const qmcu_stage_run *run, const int32_t *L, int32_t n) {
  const qmcu_stage_params *p = run->p;
  qmcu_variant v;
  v.act_min = L[QMCU_STAGE_L_ACT_MIN];
  v.act_max = L[QMCU_STAGE_L_ACT_MAX];
  v.bias = L[QMCU_STAGE_L_BIAS] >= 0 ? (const int32_t *)run->b->operands[L[QMCU_STAGE_L_BIAS]]
                                     : NULL;
  v.requant = L[QMCU_STAGE_L_REQUANT_COUNT] > 0 ? p->pool + L[QMCU_STAGE_L_REQUANT_AT] : NULL;
  if (run->ext != NULL) {
    const int32_t *e = run->ext + p->num_tensors + QMCU_STAGE_LAYER_EXT_WORDS * n;
    const int32_t index = e[1] >= 0 ? p->pool[e[1] + run->patch] : 0;
    if (index > 0) {
      const int32_t *r = p->pool + e[1] + patches_of(p) + QMCU_STAGE_VARIANT_WORDS * (index - 1);
      const int32_t *data = (const int32_t *)run->b->operands[e[2]];
      v.act_min = r[0];
      v.act_max = r[1];
      if (r[2] >= 0) v.bias = data + r[2];
      v.requant = r[3] >= 0 ? data + r[3] : NULL;
    }
  }
  return v;
}

static int is_window(int32_t kind) {
  return kind == QMCU_STAGE_CONV_2D || kind == QMCU_STAGE_DEPTHWISE_CONV_2D ||
         kind == QMCU_STAGE_AVERAGE_POOL_2D || kind == QMCU_STAGE_MAX_POOL_2D ||
         kind == QMCU_STAGE_PAD;
}

/* Rows x cols [r0, r1, c0, c1] patch (i, j) holds of tensor t (the whole map for t = 0). */
static void held_part(const qmcu_stage_params *p, int32_t t, int32_t i, int32_t j,
                      int32_t r[4]) {
  const int32_t *parts = parts_at(p, t);
  if (t == 0) {
    r[0] = 0;
    r[1] = tensor_at(p, 0)[1];
    r[2] = 0;
    r[3] = tensor_at(p, 0)[2];
    return;
  }
  r[0] = parts[2 * i];
  r[1] = parts[2 * i + 1];
  r[2] = parts[2 * p->grid_rows + 2 * j];
  r[3] = parts[2 * p->grid_rows + 2 * j + 1];
}

/* What a layer reads along one axis for outputs [o0, o1) of an input of `size` pixels. */
static qmcu_cut input_cut(const int32_t *L, int32_t axis, int32_t o0, int32_t o1, int32_t size) {
  qmcu_cut c;
  int32_t stride, dilation, extent, pad, start, stop;
  if (!is_window(L[QMCU_STAGE_L_KIND])) {
    c.start = o0;
    c.stop = o1;
    c.pad_before = 0;
    c.pad_after = 0;
    return c;
  }
  stride = L[axis == 0 ? QMCU_STAGE_L_STRIDE_H : QMCU_STAGE_L_STRIDE_W];
  dilation = L[axis == 0 ? QMCU_STAGE_L_DILATION_H : QMCU_STAGE_L_DILATION_W];
  extent = (L[axis == 0 ? QMCU_STAGE_L_KERNEL_H : QMCU_STAGE_L_KERNEL_W] - 1) * dilation + 1;
  pad = L[axis == 0 ? QMCU_STAGE_L_PAD_TOP : QMCU_STAGE_L_PAD_LEFT];
  start = o0 * stride - pad;
  stop = (o1 - 1) * stride + extent - pad;
  c.start = start > 0 ? start : 0;
  c.stop = stop < size ? stop : size;
  c.pad_before = start < 0 ? -start : 0;
  c.pad_after = stop > size ? stop - size : 0;
  return c;
}

static int fits(const qmcu_stage_params *p, int32_t offset, int32_t bytes) {
  return offset >= 0 && bytes >= 0 && bytes <= p->scratch_bytes - offset;
}

/* Input k of layer L for the current patch: a pointer to its window, contiguous, and the cuts. */
static const int8_t *layer_input(const qmcu_stage_run *run, const int32_t *L, int32_t k,
                                 qmcu_cut *rows, qmcu_cut *cols) {
  const qmcu_stage_params *p = run->p;
  const int32_t t = L[QMCU_STAGE_L_INPUT0 + k];
  const int32_t *src = tensor_at(p, t);
  const int32_t *out = parts_at(p, L[QMCU_STAGE_L_OUTPUT]);
  const int32_t staging = L[QMCU_STAGE_L_STAGING0 + k];
  const int32_t channels = pixel_bytes(run, t); /* bytes per pixel */
  int32_t held[4], width, r;
  const int8_t *base;
  held_part(p, t, run->i, run->j, held);
  *rows = input_cut(L, 0, out[2 * run->i], out[2 * run->i + 1], src[1]);
  *cols = input_cut(L, 1, out[2 * p->grid_rows + 2 * run->j],
                    out[2 * p->grid_rows + 2 * run->j + 1], src[2]);
  width = held[3] - held[2];
  if (rows->start < held[0] || rows->stop > held[1] || cols->start < held[2] ||
      cols->stop > held[3]) {
    return NULL;
  }
  if (t == 0) {
    base = (const int8_t *)run->b->input;
  } else {
    if (!fits(p, src[6], (held[1] - held[0]) * width * channels)) return NULL;
    base = (const int8_t *)run->b->scratch + src[6];
  }
  if (staging == QMCU_STAGE_NO_SLOT) {
    if (cols->start != held[2] || cols->stop != held[3]) return NULL;
    return base + (rows->start - held[0]) * width * channels;
  } else {
    const int32_t row_bytes = (cols->stop - cols->start) * channels;
    int8_t *dst = (int8_t *)run->b->scratch + staging;
    if (!fits(p, staging, (rows->stop - rows->start) * row_bytes)) return NULL;
    for (r = rows->start; r < rows->stop; ++r) {
      memmove(dst + (r - rows->start) * row_bytes,
              base + ((r - held[0]) * width + (cols->start - held[2])) * channels,
              (size_t)row_bytes);
    }
    return dst;
  }
}

/* Where the layer writes the current patch's output. */
static int8_t *layer_output(const qmcu_stage_run *run, const int32_t *L, int32_t oh,
                            int32_t ow) {
  const qmcu_stage_params *p = run->p;
  const int32_t t = L[QMCU_STAGE_L_OUTPUT];
  const int32_t *dst = tensor_at(p, t);
  const int32_t *parts = parts_at(p, t);
  if (dst[6] != QMCU_STAGE_NO_SLOT) {
    if (!fits(p, dst[6], oh * ow * pixel_bytes(run, t))) return NULL;
    return (int8_t *)run->b->scratch + dst[6];
  }
  if (t != p->num_tensors - 1 || ow != dst[2]) return NULL; /* whole rows of the output only */
  return (int8_t *)run->b->output + parts[2 * run->i] * dst[2] * dst[3];
}

static qmcu_geometry cut_geometry(const int32_t *L, const qmcu_cut *rows, const qmcu_cut *cols) {
  qmcu_geometry g;
  g.stride_h = L[QMCU_STAGE_L_STRIDE_H];
  g.stride_w = L[QMCU_STAGE_L_STRIDE_W];
  g.dilation_h = L[QMCU_STAGE_L_DILATION_H];
  g.dilation_w = L[QMCU_STAGE_L_DILATION_W];
  g.pad_top = rows->pad_before;
  g.pad_bottom = rows->pad_after;
  g.pad_left = cols->pad_before;
  g.pad_right = cols->pad_after;
  return g;
}

static qmcu_dims dims(int32_t h, int32_t w, int32_t c) {
  qmcu_dims d;
  d.n = 1;
  d.h = h;
  d.w = w;
  d.c = c;
  return d;
}

static qmcu_status run_conv(const qmcu_stage_run *run, const int32_t *L, const qmcu_variant *v,
                            const int8_t *in, const qmcu_cut *rows, const qmcu_cut *cols,
                            int8_t *out, int32_t oh, int32_t ow) {
  const qmcu_stage_params *p = run->p;
  const int32_t *src = tensor_at(p, L[QMCU_STAGE_L_INPUT0]);
  const int32_t *dst = tensor_at(p, L[QMCU_STAGE_L_OUTPUT]);
  const int depthwise = L[QMCU_STAGE_L_KIND] == QMCU_STAGE_DEPTHWISE_CONV_2D;
  const int32_t count = L[QMCU_STAGE_L_REQUANT_COUNT];
  qmcu_conv_params cp;
  qmcu_conv_buffers cb;
  size_t need;
  cp.input = dims(rows->stop - rows->start, cols->stop - cols->start, src[3]);
  cp.output = dims(oh, ow, dst[3]);
  cp.filter.n = depthwise ? 1 : dst[3];
  cp.filter.h = L[QMCU_STAGE_L_KERNEL_H];
  cp.filter.w = L[QMCU_STAGE_L_KERNEL_W];
  cp.filter.c = depthwise ? dst[3] : src[3];
  cp.in_bits = t_bits(run, L[QMCU_STAGE_L_INPUT0]);
  cp.w_bits = 8;
  cp.out_bits = t_bits(run, L[QMCU_STAGE_L_OUTPUT]);
  cp.in_zero_point = t_zero_point(run, L[QMCU_STAGE_L_INPUT0]);
  cp.out_zero_point = t_zero_point(run, L[QMCU_STAGE_L_OUTPUT]);
  cp.act_min = v->act_min;
  cp.act_max = v->act_max;
  cp.depth_multiplier = L[QMCU_STAGE_L_DEPTH_MULTIPLIER];
  cp.geometry = cut_geometry(L, rows, cols);
  cb.input = in;
  cb.filter = run->b->operands[L[QMCU_STAGE_L_FILTER]];
  cb.bias = v->bias;
  if (v->requant == NULL) return QMCU_STATUS_BAD_PARAMS;
  cb.multiplier = v->requant;
  cb.shift = v->requant + count;
  cb.output = out;
  cb.scratch = NULL;
  if (!run->use_opt) {
    qmcu_status status;
    QMCU_KERNEL_BEGIN();
    status = depthwise ? qmcu_depthwise_conv_2d_ref(&cp, &cb) : qmcu_conv_2d_ref(&cp, &cb);
    QMCU_KERNEL_END();
    return status;
  }
  need = depthwise ? qmcu_depthwise_conv_2d_scratch_size(&cp) : qmcu_conv_2d_scratch_size(&cp);
  if (need > 0) {
    if (L[QMCU_STAGE_L_KERNEL_SCRATCH] < 0 ||
        need > (size_t)L[QMCU_STAGE_L_KERNEL_SCRATCH_BYTES] ||
        !fits(p, L[QMCU_STAGE_L_KERNEL_SCRATCH], L[QMCU_STAGE_L_KERNEL_SCRATCH_BYTES])) {
      return QMCU_STATUS_BAD_PARAMS;
    }
    cb.scratch = (int8_t *)run->b->scratch + L[QMCU_STAGE_L_KERNEL_SCRATCH];
  }
  {
    qmcu_status status;
    QMCU_KERNEL_BEGIN();
    status = depthwise ? qmcu_depthwise_conv_2d(&cp, &cb) : qmcu_conv_2d(&cp, &cb);
    QMCU_KERNEL_END();
    return status;
  }
}

static qmcu_status run_add(const qmcu_stage_run *run, const int32_t *L, const qmcu_variant *v,
                           const int8_t *a, const int8_t *b, int8_t *out, int32_t oh,
                           int32_t ow) {
  const qmcu_stage_params *p = run->p;
  const int32_t *q = v->requant;
  qmcu_add_params ap;
  qmcu_add_buffers ab;
  ap.shape = dims(oh, ow, tensor_at(p, L[QMCU_STAGE_L_OUTPUT])[3]);
  if (q == NULL) return QMCU_STATUS_BAD_PARAMS;
  ap.in1_bits = t_bits(run, L[QMCU_STAGE_L_INPUT0]);
  ap.in2_bits = t_bits(run, L[QMCU_STAGE_L_INPUT1]);
  ap.out_bits = t_bits(run, L[QMCU_STAGE_L_OUTPUT]);
  ap.in1_zero_point = t_zero_point(run, L[QMCU_STAGE_L_INPUT0]);
  ap.in2_zero_point = t_zero_point(run, L[QMCU_STAGE_L_INPUT1]);
  ap.out_zero_point = t_zero_point(run, L[QMCU_STAGE_L_OUTPUT]);
  ap.left_shift = 20;
  ap.in1_multiplier = q[0];
  ap.in2_multiplier = q[1];
  ap.out_multiplier = q[2];
  ap.in1_shift = q[3];
  ap.in2_shift = q[4];
  ap.out_shift = q[5];
  ap.act_min = v->act_min;
  ap.act_max = v->act_max;
  ab.input1 = a;
  ab.input2 = b;
  ab.output = out;
  {
    qmcu_status status;
    QMCU_KERNEL_BEGIN();
    status = run->use_opt ? qmcu_add(&ap, &ab) : qmcu_add_ref(&ap, &ab);
    QMCU_KERNEL_END();
    return status;
  }
}

static qmcu_status run_avg_pool(const qmcu_stage_run *run, const int32_t *L,
                                const qmcu_variant *v, const int8_t *in, const qmcu_cut *rows,
                                const qmcu_cut *cols, int8_t *out, int32_t oh, int32_t ow) {
  const int32_t *src = tensor_at(run->p, L[QMCU_STAGE_L_INPUT0]);
  const int32_t *dst = tensor_at(run->p, L[QMCU_STAGE_L_OUTPUT]);
  qmcu_avg_pool_params pp;
  qmcu_unary_buffers ub;
  pp.input = dims(rows->stop - rows->start, cols->stop - cols->start, src[3]);
  pp.output = dims(oh, ow, dst[3]);
  pp.filter_h = L[QMCU_STAGE_L_KERNEL_H];
  pp.filter_w = L[QMCU_STAGE_L_KERNEL_W];
  pp.in_bits = t_bits(run, L[QMCU_STAGE_L_INPUT0]);
  pp.out_bits = t_bits(run, L[QMCU_STAGE_L_OUTPUT]);
  pp.in_zero_point = t_zero_point(run, L[QMCU_STAGE_L_INPUT0]);
  pp.out_zero_point = t_zero_point(run, L[QMCU_STAGE_L_OUTPUT]);
  pp.act_min = v->act_min;
  pp.act_max = v->act_max;
  pp.rescale = v->requant != NULL;
  pp.multiplier = v->requant != NULL ? v->requant[0] : 0;
  pp.shift = v->requant != NULL ? v->requant[1] : 0;
  pp.geometry = cut_geometry(L, rows, cols);
  ub.input = in;
  ub.output = out;
  {
    qmcu_status status;
    QMCU_KERNEL_BEGIN();
    status = run->use_opt ? qmcu_average_pool_2d(&pp, &ub) : qmcu_average_pool_2d_ref(&pp, &ub);
    QMCU_KERNEL_END();
    return status;
  }
}

/* Int8 max pool with explicit pads (padding never wins), clamped to the activation range. */
static qmcu_status run_max_pool(const int32_t *L, const int8_t *in, const qmcu_cut *rows,
                                const qmcu_cut *cols, int8_t *out, int32_t oh, int32_t ow,
                                int32_t channels) {
  const int32_t ih = rows->stop - rows->start;
  const int32_t iw = cols->stop - cols->start;
  int32_t oy, ox, c, ky, kx;
  for (oy = 0; oy < oh; ++oy) {
    for (ox = 0; ox < ow; ++ox) {
      for (c = 0; c < channels; ++c) {
        int32_t best = -128;
        for (ky = 0; ky < L[QMCU_STAGE_L_KERNEL_H]; ++ky) {
          const int32_t iy = oy * L[QMCU_STAGE_L_STRIDE_H] - rows->pad_before + ky;
          if (iy < 0 || iy >= ih) continue;
          for (kx = 0; kx < L[QMCU_STAGE_L_KERNEL_W]; ++kx) {
            const int32_t ix = ox * L[QMCU_STAGE_L_STRIDE_W] - cols->pad_before + kx;
            int32_t v;
            if (ix < 0 || ix >= iw) continue;
            v = in[(iy * iw + ix) * channels + c];
            best = v > best ? v : best;
          }
        }
        out[(oy * ow + ox) * channels + c] =
            (int8_t)qmcu_clamp(best, L[QMCU_STAGE_L_ACT_MIN], L[QMCU_STAGE_L_ACT_MAX]);
      }
    }
  }
  return QMCU_STATUS_OK;
}

/* PAD: the input window (`channels` bytes per pixel) with the patch's border padding filled
 * with the byte `fill` (an int8 value, or a packed zero point 0..255). */
static qmcu_status run_pad(const int8_t *in, const qmcu_cut *rows, const qmcu_cut *cols,
                           int8_t *out, int32_t oh, int32_t ow, int32_t channels, int32_t fill) {
  const int32_t ih = rows->stop - rows->start;
  const int32_t iw = cols->stop - cols->start;
  int32_t oy, ox;
  if (fill < -128 || fill > 255 || oh != ih + rows->pad_before + rows->pad_after ||
      ow != iw + cols->pad_before + cols->pad_after) {
    return QMCU_STATUS_BAD_PARAMS;
  }
  for (oy = 0; oy < oh; ++oy) {
    const int32_t iy = oy - rows->pad_before;
    for (ox = 0; ox < ow; ++ox) {
      const int32_t ix = ox - cols->pad_before;
      int8_t *dst = out + (oy * ow + ox) * channels;
      if (iy < 0 || iy >= ih || ix < 0 || ix >= iw) {
        memset(dst, fill, (size_t)channels);
      } else {
        memmove(dst, in + (iy * iw + ix) * channels, (size_t)channels);
      }
    }
  }
  return QMCU_STATUS_OK;
}

static qmcu_status run_kind(const qmcu_stage_run *run, const int32_t *L, const qmcu_variant *v,
                            const int8_t *in, const int8_t *in2, const qmcu_cut *rows,
                            const qmcu_cut *cols, int8_t *out, int32_t oh, int32_t ow) {
  switch (L[QMCU_STAGE_L_KIND]) {
    case QMCU_STAGE_CONV_2D:
    case QMCU_STAGE_DEPTHWISE_CONV_2D:
      return run_conv(run, L, v, in, rows, cols, out, oh, ow);
    case QMCU_STAGE_ADD:
      return run_add(run, L, v, in, in2, out, oh, ow);
    case QMCU_STAGE_AVERAGE_POOL_2D:
      return run_avg_pool(run, L, v, in, rows, cols, out, oh, ow);
    case QMCU_STAGE_PAD: { /* fill: the int8 value, or the patch's packed zero point */
      const int32_t bits = t_bits(run, L[QMCU_STAGE_L_OUTPUT]);
      const int32_t zp = t_zero_point(run, L[QMCU_STAGE_L_OUTPUT]);
      const int32_t fill = bits == 8 ? run->p->pool[L[QMCU_STAGE_L_REQUANT_AT]]
                                     : (bits == 4 ? zp * 0x11 : zp * 0x55);
      qmcu_status status;
      if (t_bits(run, L[QMCU_STAGE_L_INPUT0]) != bits) return QMCU_STATUS_BAD_PARAMS;
      QMCU_KERNEL_BEGIN();
      status = run_pad(in, rows, cols, out, oh, ow, pixel_bytes(run, L[QMCU_STAGE_L_OUTPUT]),
                       fill);
      QMCU_KERNEL_END();
      return status;
    }
    case QMCU_STAGE_MAX_POOL_2D: {
      qmcu_status status;
      QMCU_KERNEL_BEGIN();
      status = run_max_pool(L, in, rows, cols, out, oh, ow,
                            tensor_at(run->p, L[QMCU_STAGE_L_OUTPUT])[3]);
      QMCU_KERNEL_END();
      return status;
    }
    default:
      return QMCU_STATUS_BAD_PARAMS;
  }
}

static qmcu_status run_layer(const qmcu_stage_run *run, const int32_t *L, int32_t n) {
  const int32_t *out_parts = parts_at(run->p, L[QMCU_STAGE_L_OUTPUT]);
  const int32_t oh = out_parts[2 * run->i + 1] - out_parts[2 * run->i];
  const int32_t ow = out_parts[2 * run->p->grid_rows + 2 * run->j + 1] -
                     out_parts[2 * run->p->grid_rows + 2 * run->j];
  qmcu_cut rows, cols, rows2, cols2;
  const int8_t *in = layer_input(run, L, 0, &rows, &cols);
  const int8_t *in2 = NULL;
  int8_t *out;
  if (in == NULL) return QMCU_STATUS_BAD_PARAMS;
  if (L[QMCU_STAGE_L_KIND] == QMCU_STAGE_ADD) {
    in2 = layer_input(run, L, 1, &rows2, &cols2);
    if (in2 == NULL) return QMCU_STATUS_BAD_PARAMS;
  }
  out = layer_output(run, L, oh, ow);
  if (out == NULL) return QMCU_STATUS_BAD_PARAMS;
  {
    const qmcu_variant v = layer_variant(run, L, n);
    return run_kind(run, L, &v, in, in2, &rows, &cols, out, oh, ow);
  }
}

/* A stage output with a slot: copy the patch's rows into the output. */
static void copy_out(const qmcu_stage_run *run) {
  const qmcu_stage_params *p = run->p;
  const int32_t t = p->num_tensors - 1;
  const int32_t *dst = tensor_at(p, t);
  int32_t r[4], y;
  held_part(p, t, run->i, run->j, r);
  for (y = r[0]; y < r[1]; ++y) {
    const int32_t row_bytes = (r[3] - r[2]) * dst[3];
    memmove((int8_t *)run->b->output + (y * dst[2] + r[2]) * dst[3],
            (const int8_t *)run->b->scratch + dst[6] + (y - r[0]) * row_bytes,
            (size_t)row_bytes);
  }
}

static qmcu_status run_stage(const qmcu_stage_params *p, const qmcu_stage_buffers *b,
                             int use_opt) {
  qmcu_stage_run run;
  int32_t n;
  if (b == NULL || qmcu_patch_stage_check(p, b->num_operands) != QMCU_STATUS_OK) {
    return QMCU_STATUS_BAD_PARAMS;
  }
  if (b->input == NULL || b->output == NULL || (p->scratch_bytes > 0 && b->scratch == NULL)) {
    return QMCU_STATUS_BAD_PARAMS;
  }
  run.p = p;
  run.b = b;
  run.use_opt = use_opt;
  run.ext = ext_start(p) < p->pool_words ? p->pool + ext_start(p) : NULL;
  for (run.i = 0; run.i < p->grid_rows; ++run.i) {
    for (run.j = 0; run.j < p->grid_cols; ++run.j) {
      run.patch = run.i * p->grid_cols + run.j;
      for (n = 0; n < p->num_layers; ++n) {
        const qmcu_status status = run_layer(&run, layer_at(p, n), n);
        if (status != QMCU_STATUS_OK) return status;
      }
      if (tensor_at(p, p->num_tensors - 1)[6] != QMCU_STAGE_NO_SLOT) copy_out(&run);
    }
  }
  return QMCU_STATUS_OK;
}

qmcu_status qmcu_patch_stage(const qmcu_stage_params *p, const qmcu_stage_buffers *b) {
  return run_stage(p, b, 1);
}

qmcu_status qmcu_patch_stage_ref(const qmcu_stage_params *p, const qmcu_stage_buffers *b) {
  return run_stage(p, b, 0);
}

size_t qmcu_patch_stage_scratch_size(const qmcu_stage_params *p) {
  return p != NULL && p->scratch_bytes > 0 ? (size_t)p->scratch_bytes : 0u;
}

/* ---- structure checks (the layer kernels check their own parameters per call) ---- */
static int valid_tensor(const qmcu_stage_params *p, int32_t t) {
  const int32_t *d = tensor_at(p, t);
  const int32_t *parts = parts_at(p, t);
  int32_t k;
  if (d[0] != 1 || d[1] < 1 || d[2] < 1 || d[3] < 1 || d[4] != 8) return 0;
  if (d[5] < -128 || d[5] > 127 || d[6] < QMCU_STAGE_NO_SLOT || d[6] >= p->scratch_bytes + 1) {
    return 0;
  }
  for (k = 0; k < p->grid_rows + p->grid_cols; ++k) {
    const int32_t size = k < p->grid_rows ? d[1] : d[2];
    if (parts[2 * k] < 0 || parts[2 * k] >= parts[2 * k + 1] || parts[2 * k + 1] > size) {
      return 0;
    }
  }
  return 1;
}

static int valid_layer(const qmcu_stage_params *p, const int32_t *L, int32_t n,
                       int32_t num_operands, int32_t requant_start) {
  const int32_t kind = L[QMCU_STAGE_L_KIND];
  const int32_t inputs = L[QMCU_STAGE_L_NUM_INPUTS];
  const int32_t out = L[QMCU_STAGE_L_OUTPUT];
  const int32_t count = L[QMCU_STAGE_L_REQUANT_COUNT];
  int32_t k;
  if (kind < QMCU_STAGE_CONV_2D || kind > QMCU_STAGE_PAD) return 0;
  if (inputs != (kind == QMCU_STAGE_ADD ? 2 : 1)) return 0;
  if (out != n + 1 || out >= p->num_tensors) return 0; /* layer n writes tensor n + 1 */
  for (k = 0; k < inputs; ++k) {
    const int32_t t = L[QMCU_STAGE_L_INPUT0 + k];
    if (t < 0 || t >= out) return 0;
    if (L[QMCU_STAGE_L_STAGING0 + k] < QMCU_STAGE_NO_SLOT) return 0;
  }
  if (L[QMCU_STAGE_L_ACT_MIN] < -128 || L[QMCU_STAGE_L_ACT_MIN] > L[QMCU_STAGE_L_ACT_MAX] ||
      L[QMCU_STAGE_L_ACT_MAX] > 127) {
    return 0;
  }
  for (k = QMCU_STAGE_L_KERNEL_H; k <= QMCU_STAGE_L_DILATION_W; ++k) {
    if (L[k] < 1) return 0;
  }
  if (L[QMCU_STAGE_L_PAD_TOP] < 0 || L[QMCU_STAGE_L_PAD_LEFT] < 0) return 0;
  if (kind == QMCU_STAGE_CONV_2D || kind == QMCU_STAGE_DEPTHWISE_CONV_2D) {
    if (L[QMCU_STAGE_L_FILTER] < 1 || L[QMCU_STAGE_L_FILTER] >= num_operands) return 0;
    if (L[QMCU_STAGE_L_BIAS] >= num_operands || L[QMCU_STAGE_L_BIAS] == 0) return 0;
    if (count != tensor_at(p, out)[3]) return 0;
  } else if (kind == QMCU_STAGE_PAD) {
    if (count != 1) return 0;
    for (k = QMCU_STAGE_L_KERNEL_H; k <= QMCU_STAGE_L_DILATION_W; ++k) {
      if (L[k] != 1) return 0;
    }
  } else if (kind == QMCU_STAGE_ADD ? count != 3 : count != 0) {
    return 0;
  }
  return L[QMCU_STAGE_L_REQUANT_AT] >= requant_start &&
         L[QMCU_STAGE_L_REQUANT_AT] <= p->pool_words - 2 * count;
}

/* A patch table of tensor t: widths 8/4/2 with zero points in range, packable channels. */
static int valid_tensor_table(const qmcu_stage_params *p, int32_t t, int32_t table) {
  const int32_t patches = patches_of(p);
  const int32_t channels = tensor_at(p, t)[3];
  int32_t k;
  if (t == 0 || t == p->num_tensors - 1) return 0; /* the stage input and output stay int8 */
  for (k = 0; k < patches; ++k) {
    const int32_t bits = p->pool[table + k];
    const int32_t zp = p->pool[table + patches + k];
    if (bits == 8) {
      if (zp < -128 || zp > 127) return 0;
    } else if (bits == 4 || bits == 2) {
      if (zp < 0 || zp > (1 << bits) - 1 || channels % (8 / bits) != 0) return 0;
    } else {
      return 0;
    }
  }
  return 1;
}

static int int8_only(int32_t kind) { return kind == QMCU_STAGE_MAX_POOL_2D; }

/* A layer's variant table: indices in [0, V], offsets >= -1, the data operand in range; max
 * pools and pads have none (the glue checks the offsets against the operand's size). */
static int valid_variant_table(const qmcu_stage_params *p, const int32_t *L, int32_t count,
                               int32_t table, int32_t data, int32_t num_operands) {
  const int32_t patches = patches_of(p);
  int32_t k;
  if (int8_only(L[QMCU_STAGE_L_KIND]) || L[QMCU_STAGE_L_KIND] == QMCU_STAGE_PAD) return 0;
  if (data < 1 || data >= num_operands) return 0;
  for (k = 0; k < patches; ++k) {
    if (p->pool[table + k] < 0 || p->pool[table + k] > count) return 0;
  }
  for (k = 0; k < count; ++k) {
    const int32_t *r = p->pool + table + patches + QMCU_STAGE_VARIANT_WORDS * k;
    const int needs_requant = L[QMCU_STAGE_L_KIND] != QMCU_STAGE_AVERAGE_POOL_2D;
    if (r[0] > r[1] || r[2] < -1 || r[3] < -1 || (needs_requant && r[3] < 0)) return 0;
  }
  return 1;
}

/* Version 2's section: the pool ends at `at` (version 1) or holds exactly the index words
 * and the tables they point to, each inside the pool. */
static int valid_extension(const qmcu_stage_params *p, int32_t at, int32_t num_operands) {
  const int32_t patches = patches_of(p);
  const int32_t *ext = p->pool + at;
  int32_t t, n, used;
  if (at == p->pool_words) return 1;
  used = p->num_tensors + QMCU_STAGE_LAYER_EXT_WORDS * p->num_layers;
  if (p->pool_words - at < used) return 0;
  for (t = 0; t < p->num_tensors; ++t) {
    if (ext[t] == -1) {
      if (tensor_at(p, t)[4] != 8) return 0;
      continue;
    }
    if (ext[t] < at + used || ext[t] > p->pool_words - 2 * patches) return 0;
    if (!valid_tensor_table(p, t, ext[t])) return 0;
    used += 2 * patches;
  }
  for (n = 0; n < p->num_layers; ++n) {
    const int32_t *e = ext + p->num_tensors + QMCU_STAGE_LAYER_EXT_WORDS * n;
    const int32_t count = e[0];
    const int32_t table = e[1];
    const int32_t *L = layer_at(p, n);
    if (table == -1) {
      if (count != 0 || e[2] != -1) return 0;
      continue;
    }
    if (count < 1 || count > patches || table < at + used ||
        table > p->pool_words - patches - QMCU_STAGE_VARIANT_WORDS * count) {
      return 0;
    }
    if (!valid_variant_table(p, L, count, table, e[2], num_operands)) return 0;
    used += patches + QMCU_STAGE_VARIANT_WORDS * count;
  }
  if (used != p->pool_words - at) return 0;
  for (n = 0; n < p->num_layers; ++n) { /* max pools read and write int8 maps only */
    const int32_t *L = layer_at(p, n);
    if (int8_only(L[QMCU_STAGE_L_KIND]) &&
        (ext[L[QMCU_STAGE_L_INPUT0]] != -1 || ext[L[QMCU_STAGE_L_OUTPUT]] != -1)) {
      return 0;
    }
  }
  return 1;
}

qmcu_status qmcu_patch_stage_check(const qmcu_stage_params *p, int32_t num_operands) {
  int32_t t, n, requant_start;
  if (p == NULL || p->pool == NULL || p->grid_rows < 1 || p->grid_cols < 1 ||
      p->num_tensors < 2 || p->num_layers != p->num_tensors - 1 || p->scratch_bytes < 0 ||
      num_operands < 1) {
    return QMCU_STATUS_BAD_PARAMS;
  }
  requant_start = (int32_t)qmcu_stage_pool_words_for(p->num_tensors, p->num_layers,
                                                     p->grid_rows, p->grid_cols, 0);
  if (p->pool_words < requant_start) return QMCU_STATUS_BAD_PARAMS;
  for (t = 0; t < p->num_tensors; ++t) {
    if (!valid_tensor(p, t)) return QMCU_STATUS_BAD_PARAMS;
  }
  for (n = 0; n < p->num_layers; ++n) {
    if (!valid_layer(p, layer_at(p, n), n, num_operands, requant_start)) {
      return QMCU_STATUS_BAD_PARAMS;
    }
  }
  {
    const int32_t at = ext_start(p);
    if (at > p->pool_words || !valid_extension(p, at, num_operands)) {
      return QMCU_STATUS_BAD_PARAMS;
    }
  }
  return QMCU_STATUS_OK;
}
