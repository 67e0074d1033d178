/* Parsers of the QMCU_* custom options (docs/qmcu_ops.md §1.6): flexbuffer map -> the C
 * parameter structs of qmcu/qmcu_ops.h.
 *
 * Implemented in C++ (qmcu_options_parse.cc, needs only flatbuffers/flexbuffers.h and the
 * qmcu headers, no TFLM), callable from C. Every function verifies the flexbuffer, requires
 * `version` == QMCU_OPTIONS_VERSION and every required key of its op with the right type
 * (ints must fit int32, shapes are vectors of exactly 4 ints, `padding` is one of "SAME",
 * "VALID", "EXPLICIT"), and returns false otherwise, leaving *out unchanged. Unknown keys are
 * ignored. They do not check the semantic rules of the op (bit widths, geometry, ranges):
 * that is qmcu_<op>_check().
 */
#ifndef CMIXNN_BRIDGE_TFLM_QMCU_OPTIONS_PARSE_H_
#define CMIXNN_BRIDGE_TFLM_QMCU_OPTIONS_PARSE_H_

#include <stddef.h>
#include <stdint.h>

#ifndef __cplusplus
#include <stdbool.h>
#endif

#include "qmcu/qmcu.h"
#include "qmcu/qmcu_stage.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The options format version these parsers read. */
#define QMCU_OPTIONS_VERSION 1

/* Where the explicit pads came from (the `padding` key, docs §1.7). */
typedef enum {
  QMCU_PADDING_SAME = 0,
  QMCU_PADDING_VALID = 1,
  QMCU_PADDING_EXPLICIT = 2
} qmcu_padding;

/* QMCU_CONV_2D; depth_multiplier is set to 1. */
bool qmcu_parse_conv_2d_options(const uint8_t *buf, size_t len, qmcu_conv_params *out);

/* QMCU_DEPTHWISE_CONV_2D: the keys of QMCU_CONV_2D plus depth_multiplier. */
bool qmcu_parse_depthwise_conv_2d_options(const uint8_t *buf, size_t len,
                                          qmcu_conv_params *out);

bool qmcu_parse_add_options(const uint8_t *buf, size_t len, qmcu_add_params *out);

/* QMCU_AVERAGE_POOL_2D; dilation_h/dilation_w are optional (default 1, must be 1 for the
 * kernel), `rescale` is a bool (or the int 0 / 1). */
bool qmcu_parse_average_pool_2d_options(const uint8_t *buf, size_t len,
                                        qmcu_avg_pool_params *out);

/* QMCU_PACK and QMCU_UNPACK (same keys; the direction is checked in Prepare). */
bool qmcu_parse_pack_options(const uint8_t *buf, size_t len, qmcu_requant_params *out);
bool qmcu_parse_unpack_options(const uint8_t *buf, size_t len, qmcu_requant_params *out);

/* QMCU_PATCH_STAGE (docs §8): the pool words the options need (to size the persistent block),
 * then the options parsed into `pool` (exactly that many words) and *out (out->pool = pool).
 * Checks the map's structure (keys, types, vector lengths against the grid and channel counts);
 * the semantic rules are qmcu_patch_stage_check(). */
bool qmcu_parse_patch_stage_words(const uint8_t *buf, size_t len, size_t *words);
bool qmcu_parse_patch_stage_options(const uint8_t *buf, size_t len, int32_t *pool,
                                    size_t pool_words, qmcu_stage_params *out);

/* The `padding` key of a conv, depthwise conv or pool map (the kernels use only the explicit
 * pads; this is for tools and tests). Also checks the buffer and the version. */
bool qmcu_parse_padding(const uint8_t *buf, size_t len, qmcu_padding *out);

#ifdef __cplusplus
}
#endif

#endif /* CMIXNN_BRIDGE_TFLM_QMCU_OPTIONS_PARSE_H_ */
