/* Fast path of QMCU_DEPTHWISE_CONV_2D: not specialized yet; the switch uses the reference. */
#include "qmcu/qmcu_ops.h"

int qmcu_depthwise_conv_2d_opt_supported(const qmcu_conv_params *p) {
  (void)p;
  return 0;
}

size_t qmcu_depthwise_conv_2d_opt_scratch_size(const qmcu_conv_params *p) {
  (void)p;
  return 0;
}

qmcu_status qmcu_depthwise_conv_2d_opt(const qmcu_conv_params *p,
                                       const qmcu_conv_buffers *b) {
  (void)p;
  (void)b;
  return QMCU_STATUS_UNSUPPORTED;
}
