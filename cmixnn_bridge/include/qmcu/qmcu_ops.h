/* The QMCU_* kernels (docs/qmcu_ops.md). C99, no heap; every function takes parameter structs.
 *
 * qmcu_<op>()      the one switch: the optimized path when QMCU_USE_OPT is defined and the
 *                  parameters qualify, else the reference path;
 * qmcu_<op>_ref()  generic reference path over all bit widths;
 * qmcu_<op>_opt()  fast path (returns QMCU_STATUS_UNSUPPORTED for parameters it does not take);
 * qmcu_<op>_scratch_size() bytes of 4-byte aligned scratch that qmcu_<op>() needs.
 * Both paths give bit-identical results. Activation data: int8 for 8 bits, packed uint8 else.
 */
#ifndef QMCU_OPS_H
#define QMCU_OPS_H

#include "qmcu/qmcu_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- QMCU_CONV_2D and QMCU_DEPTHWISE_CONV_2D (docs §2, §3) ---- */
typedef struct {
  qmcu_dims input;    /* logical [N, H, W, C_in] */
  qmcu_dims filter;   /* logical OHWI for conv, [1, KH, KW, C_out] for depthwise */
  qmcu_dims output;   /* logical [N, OH, OW, C_out] */
  int32_t in_bits;    /* 8, 4, 2 */
  int32_t w_bits;     /* 8, 4, 2 */
  int32_t out_bits;   /* 8, 4, 2 */
  int32_t in_zero_point;
  int32_t out_zero_point;
  int32_t act_min;
  int32_t act_max;
  int32_t depth_multiplier; /* depthwise only; conv ignores it */
  qmcu_geometry geometry;
} qmcu_conv_params;

typedef struct {
  const void *input;
  const void *filter;
  const int32_t *bias;       /* [C_out] or NULL (zeros) */
  const int32_t *multiplier; /* [C_out], row 0 of the requant tensor */
  const int32_t *shift;      /* [C_out], row 1 of the requant tensor */
  void *output;
  void *scratch;             /* scratch_size() bytes, 4-byte aligned; may be NULL if 0 */
} qmcu_conv_buffers;

qmcu_status qmcu_conv_2d_check(const qmcu_conv_params *params);
size_t qmcu_conv_2d_scratch_size(const qmcu_conv_params *params);
qmcu_status qmcu_conv_2d(const qmcu_conv_params *params, const qmcu_conv_buffers *buffers);
qmcu_status qmcu_conv_2d_ref(const qmcu_conv_params *params, const qmcu_conv_buffers *buffers);
int qmcu_conv_2d_opt_supported(const qmcu_conv_params *params);
size_t qmcu_conv_2d_opt_scratch_size(const qmcu_conv_params *params);
qmcu_status qmcu_conv_2d_opt(const qmcu_conv_params *params, const qmcu_conv_buffers *buffers);

qmcu_status qmcu_depthwise_conv_2d_check(const qmcu_conv_params *params);
size_t qmcu_depthwise_conv_2d_scratch_size(const qmcu_conv_params *params);
qmcu_status qmcu_depthwise_conv_2d(const qmcu_conv_params *params,
                                   const qmcu_conv_buffers *buffers);
qmcu_status qmcu_depthwise_conv_2d_ref(const qmcu_conv_params *params,
                                       const qmcu_conv_buffers *buffers);
int qmcu_depthwise_conv_2d_opt_supported(const qmcu_conv_params *params);
size_t qmcu_depthwise_conv_2d_opt_scratch_size(const qmcu_conv_params *params);
qmcu_status qmcu_depthwise_conv_2d_opt(const qmcu_conv_params *params,
                                       const qmcu_conv_buffers *buffers);

/* ---- QMCU_ADD (docs §4) ---- */
typedef struct {
  qmcu_dims shape; /* logical, same for both inputs and the output */
  int32_t in1_bits;
  int32_t in2_bits;
  int32_t out_bits;
  int32_t in1_zero_point;
  int32_t in2_zero_point;
  int32_t out_zero_point;
  int32_t left_shift;
  int32_t in1_multiplier;
  int32_t in1_shift;
  int32_t in2_multiplier;
  int32_t in2_shift;
  int32_t out_multiplier;
  int32_t out_shift;
  int32_t act_min;
  int32_t act_max;
} qmcu_add_params;

typedef struct {
  const void *input1;
  const void *input2;
  void *output;
} qmcu_add_buffers;

qmcu_status qmcu_add_check(const qmcu_add_params *params);
size_t qmcu_add_scratch_size(const qmcu_add_params *params);
qmcu_status qmcu_add(const qmcu_add_params *params, const qmcu_add_buffers *buffers);
qmcu_status qmcu_add_ref(const qmcu_add_params *params, const qmcu_add_buffers *buffers);
int qmcu_add_opt_supported(const qmcu_add_params *params);
qmcu_status qmcu_add_opt(const qmcu_add_params *params, const qmcu_add_buffers *buffers);

/* ---- QMCU_AVERAGE_POOL_2D (docs §5) ---- */
typedef struct {
  qmcu_dims input;
  qmcu_dims output;
  int32_t filter_h;
  int32_t filter_w;
  int32_t in_bits;
  int32_t out_bits;
  int32_t in_zero_point;
  int32_t out_zero_point;
  int32_t act_min;
  int32_t act_max;
  int32_t rescale; /* 0: TFLite int8 arithmetic; 1: requantize with multiplier/shift */
  int32_t multiplier;
  int32_t shift;
  qmcu_geometry geometry; /* dilations must be 1 */
} qmcu_avg_pool_params;

typedef struct {
  const void *input;
  void *output;
} qmcu_unary_buffers;

qmcu_status qmcu_average_pool_2d_check(const qmcu_avg_pool_params *params);
size_t qmcu_average_pool_2d_scratch_size(const qmcu_avg_pool_params *params);
qmcu_status qmcu_average_pool_2d(const qmcu_avg_pool_params *params,
                                 const qmcu_unary_buffers *buffers);
qmcu_status qmcu_average_pool_2d_ref(const qmcu_avg_pool_params *params,
                                     const qmcu_unary_buffers *buffers);
int qmcu_average_pool_2d_opt_supported(const qmcu_avg_pool_params *params);
qmcu_status qmcu_average_pool_2d_opt(const qmcu_avg_pool_params *params,
                                     const qmcu_unary_buffers *buffers);

/* ---- QMCU_PACK / QMCU_UNPACK (docs §6) ---- */
typedef struct {
  qmcu_dims shape;
  int32_t in_bits;
  int32_t out_bits;
  int32_t in_zero_point;
  int32_t out_zero_point;
  int32_t multiplier;
  int32_t shift;
} qmcu_requant_params;

qmcu_status qmcu_requant_check(const qmcu_requant_params *params);
size_t qmcu_pack_scratch_size(const qmcu_requant_params *params);
size_t qmcu_unpack_scratch_size(const qmcu_requant_params *params);
qmcu_status qmcu_pack(const qmcu_requant_params *params, const qmcu_unary_buffers *buffers);
qmcu_status qmcu_unpack(const qmcu_requant_params *params, const qmcu_unary_buffers *buffers);
qmcu_status qmcu_pack_ref(const qmcu_requant_params *params, const qmcu_unary_buffers *buffers);
qmcu_status qmcu_unpack_ref(const qmcu_requant_params *params, const qmcu_unary_buffers *buffers);

#ifdef __cplusplus
}
#endif

#endif /* QMCU_OPS_H */
