/* QMCU_PATCH_STAGE (docs/qmcu_ops.md §8): a whole patch stage, patch after patch, every
 * per-patch intermediate in one scratch buffer at the offsets the converter planned.
 * C99, no heap. The options are parsed once (TFLM glue: Init) into one int32 pool laid out
 * as below; the layers run through the existing kernels (qmcu_conv_2d, ...).
 *
 * Pool (int32 words; T tensors, L layers, grid R x C):
 *   [0, 7T)                     per tensor: n, h, w, c, bits, zero_point, offset (-1: no slot)
 *   [7T, 7T + 2T(R+C))          per tensor: R row parts [start, stop), then C column parts
 *   next 24 L                   per layer: QMCU_STAGE_L_* fields below
 *   then                        per layer with requant_count > 0: multipliers, then shifts
 *   then (version 2 only: per-patch widths; absent, the pool ends above)
 *     T words                   per tensor: pool index of its patch table, -1: none
 *     3 L words                 per layer: number of extra variants V, pool index of its
 *                               variant table (-1: none), its variant-data operand (an
 *                               INT32 op input holding the variants' requant and biases)
 *     tables                    tensor: P bits, then P zero points (P = R * C patches,
 *                               row-major); layer: P variant indices (0: the layer's own
 *                               int8 fields), then V records of QMCU_STAGE_VARIANT_WORDS:
 *                               act_min, act_max, bias offset (-1: the layer's own bias
 *                               operand), requant offset (-1: none; else 2 n words,
 *                               multipliers then shifts), offsets in words of variant data
 */
#ifndef QMCU_STAGE_H
#define QMCU_STAGE_H

#include "qmcu/qmcu_types.h"

#ifdef __cplusplus
extern "C" {
#endif

#define QMCU_STAGE_TENSOR_WORDS 7
#define QMCU_STAGE_LAYER_WORDS 24
#define QMCU_STAGE_NO_SLOT (-1)
#define QMCU_STAGE_VARIANT_WORDS 4
#define QMCU_STAGE_LAYER_EXT_WORDS 3

/* Layer kinds (the `kind` option). */
enum {
  QMCU_STAGE_CONV_2D = 0,
  QMCU_STAGE_DEPTHWISE_CONV_2D = 1,
  QMCU_STAGE_ADD = 2,
  QMCU_STAGE_AVERAGE_POOL_2D = 3,
  QMCU_STAGE_MAX_POOL_2D = 4,
  QMCU_STAGE_PAD = 5 /* kernel/stride/dilation 1; fill value: its one "multiplier" */
};

/* Word index of each layer field inside its 24-word record. */
enum {
  QMCU_STAGE_L_KIND = 0, QMCU_STAGE_L_NUM_INPUTS, QMCU_STAGE_L_INPUT0, QMCU_STAGE_L_INPUT1,
  QMCU_STAGE_L_OUTPUT, QMCU_STAGE_L_STAGING0, QMCU_STAGE_L_STAGING1, QMCU_STAGE_L_ACT_MIN,
  QMCU_STAGE_L_ACT_MAX, QMCU_STAGE_L_FILTER, QMCU_STAGE_L_BIAS, QMCU_STAGE_L_KERNEL_H,
  QMCU_STAGE_L_KERNEL_W, QMCU_STAGE_L_STRIDE_H, QMCU_STAGE_L_STRIDE_W, QMCU_STAGE_L_DILATION_H,
  QMCU_STAGE_L_DILATION_W, QMCU_STAGE_L_PAD_TOP, QMCU_STAGE_L_PAD_LEFT,
  QMCU_STAGE_L_DEPTH_MULTIPLIER, QMCU_STAGE_L_KERNEL_SCRATCH, QMCU_STAGE_L_KERNEL_SCRATCH_BYTES,
  QMCU_STAGE_L_REQUANT_AT, QMCU_STAGE_L_REQUANT_COUNT
};

typedef struct {
  int32_t grid_rows;
  int32_t grid_cols;
  int32_t num_tensors;   /* tensor 0: the stage input; the last: the stage output */
  int32_t num_layers;
  int32_t scratch_bytes;
  int32_t pool_words;
  const int32_t *pool;
} qmcu_stage_params;

typedef struct {
  const void *input;              /* the stage input, int8 [1, H, W, C] */
  void *output;                   /* the stage output (may overlap the input as planned) */
  void *scratch;                  /* scratch_bytes bytes, 4-byte aligned */
  const void *const *operands;    /* the op's inputs by index: weights int8, biases int32 */
  int32_t num_operands;
} qmcu_stage_buffers;

/* What TFLM glue keeps per op (one persistent block: this struct, then the pool). */
typedef struct {
  qmcu_stage_params params;
  int32_t scratch_index;
  int32_t parsed;
} qmcu_stage_op_data;

/* Words of the pool for a stage (counts only; requant_words: sum of 2 * requant_count).
 * Inline so the options parser needs only this header, not the kernel library. */
static inline size_t qmcu_stage_pool_words_for(int32_t num_tensors, int32_t num_layers,
                                               int32_t grid_rows, int32_t grid_cols,
                                               int32_t requant_words) {
  return (size_t)num_tensors * QMCU_STAGE_TENSOR_WORDS +
         (size_t)num_tensors * 2u * (size_t)(grid_rows + grid_cols) +
         (size_t)num_layers * QMCU_STAGE_LAYER_WORDS + (size_t)requant_words;
}

/* Structure of the pool: kinds, DAG order, parts, operand indices, requant ranges. */
qmcu_status qmcu_patch_stage_check(const qmcu_stage_params *params, int32_t num_operands);
size_t qmcu_patch_stage_scratch_size(const qmcu_stage_params *params);
/* The layers through qmcu_conv_2d() etc. (optimized where QMCU_USE_OPT and supported). */
qmcu_status qmcu_patch_stage(const qmcu_stage_params *params, const qmcu_stage_buffers *buffers);
/* The layers through the reference kernels only. */
qmcu_status qmcu_patch_stage_ref(const qmcu_stage_params *params,
                                 const qmcu_stage_buffers *buffers);

#ifdef __cplusplus
}
#endif

#endif /* QMCU_STAGE_H */
