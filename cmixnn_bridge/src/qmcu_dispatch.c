/* The one switch between reference and optimized kernels: QMCU_USE_OPT at build time. */
#include "qmcu/qmcu_ops.h"

#if defined(QMCU_USE_OPT)
#define QMCU_OPT_ENABLED 1
#else
#define QMCU_OPT_ENABLED 0
#endif

size_t qmcu_conv_2d_scratch_size(const qmcu_conv_params *p) {
  return QMCU_OPT_ENABLED && qmcu_conv_2d_opt_supported(p) ? qmcu_conv_2d_opt_scratch_size(p) : 0;
}

qmcu_status qmcu_conv_2d(const qmcu_conv_params *p, const qmcu_conv_buffers *b) {
  if (QMCU_OPT_ENABLED && qmcu_conv_2d_opt_supported(p)) return qmcu_conv_2d_opt(p, b);
  return qmcu_conv_2d_ref(p, b);
}

size_t qmcu_depthwise_conv_2d_scratch_size(const qmcu_conv_params *p) {
  return QMCU_OPT_ENABLED && qmcu_depthwise_conv_2d_opt_supported(p)
             ? qmcu_depthwise_conv_2d_opt_scratch_size(p)
             : 0;
}

qmcu_status qmcu_depthwise_conv_2d(const qmcu_conv_params *p, const qmcu_conv_buffers *b) {
  if (QMCU_OPT_ENABLED && qmcu_depthwise_conv_2d_opt_supported(p)) {
    return qmcu_depthwise_conv_2d_opt(p, b);
  }
  return qmcu_depthwise_conv_2d_ref(p, b);
}

size_t qmcu_add_scratch_size(const qmcu_add_params *p) {
  (void)p;
  return 0;
}

qmcu_status qmcu_add(const qmcu_add_params *p, const qmcu_add_buffers *b) {
  if (QMCU_OPT_ENABLED && qmcu_add_opt_supported(p)) return qmcu_add_opt(p, b);
  return qmcu_add_ref(p, b);
}

size_t qmcu_average_pool_2d_scratch_size(const qmcu_avg_pool_params *p) {
  (void)p;
  return 0;
}

qmcu_status qmcu_average_pool_2d(const qmcu_avg_pool_params *p, const qmcu_unary_buffers *b) {
  if (QMCU_OPT_ENABLED && qmcu_average_pool_2d_opt_supported(p)) {
    return qmcu_average_pool_2d_opt(p, b);
  }
  return qmcu_average_pool_2d_ref(p, b);
}

size_t qmcu_pack_scratch_size(const qmcu_requant_params *p) {
  (void)p;
  return 0;
}

size_t qmcu_unpack_scratch_size(const qmcu_requant_params *p) {
  (void)p;
  return 0;
}

qmcu_status qmcu_pack(const qmcu_requant_params *p, const qmcu_unary_buffers *b) {
  return qmcu_pack_ref(p, b);
}

qmcu_status qmcu_unpack(const qmcu_requant_params *p, const qmcu_unary_buffers *b) {
  return qmcu_unpack_ref(p, b);
}
