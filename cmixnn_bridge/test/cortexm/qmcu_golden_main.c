/* Runs the golden vectors of qmcu_golden_cases.h (written by the numpy reference) through the
 * reference, the optimized and the dispatching kernels; exit status = number of mismatches. */
#include <stdio.h>
#include <string.h>

#include "qmcu/qmcu.h"

typedef struct {
  const char *name;
  int depthwise;
  qmcu_conv_params params;
  const uint8_t *input;
  const uint8_t *filter;
  const int32_t *bias;
  const int32_t *multiplier;
  const int32_t *shift;
  const uint8_t *expected;
  uint32_t out_bytes;
} qmcu_golden_conv;

typedef struct {
  const char *name;
  qmcu_add_params params;
  const uint8_t *input1;
  const uint8_t *input2;
  const uint8_t *expected;
  uint32_t out_bytes;
} qmcu_golden_add;

typedef struct {
  const char *name;
  qmcu_avg_pool_params params;
  const uint8_t *input;
  const uint8_t *expected;
  uint32_t out_bytes;
} qmcu_golden_pool;

typedef struct {
  const char *name;
  int pack;
  qmcu_requant_params params;
  const uint8_t *input;
  const uint8_t *expected;
  uint32_t out_bytes;
} qmcu_golden_requant;

#include "qmcu_golden_cases.h"

static uint8_t out_buf[QMCU_GOLDEN_MAX_OUT] __attribute__((aligned(4)));
/* the fast conv path tiles up to 96 pixels: its scratch is larger than the header's estimate */
#define QMCU_TEST_SCRATCH_WORDS (QMCU_GOLDEN_SCRATCH_WORDS * 16 + 4096)
static uint32_t scratch_buf[QMCU_TEST_SCRATCH_WORDS];

static int check(const char *name, const char *path, qmcu_status status, const uint8_t *want,
                 uint32_t bytes) {
  if (status != QMCU_STATUS_OK || memcmp(out_buf, want, bytes) != 0) {
    printf("FAIL %s [%s] status %d\n", name, path, (int)status);
    return 1;
  }
  return 0;
}

typedef qmcu_status (*conv_fn)(const qmcu_conv_params *, const qmcu_conv_buffers *);

static int run_conv(const qmcu_golden_conv *c, const char *path, conv_fn fn, size_t scratch) {
  qmcu_conv_buffers b;
  if (scratch > sizeof scratch_buf) {
    printf("FAIL %s [%s] scratch %u too large\n", c->name, path, (unsigned)scratch);
    return 1;
  }
  memset(out_buf, 0xa5, c->out_bytes);
  b.input = c->input;
  b.filter = c->filter;
  b.bias = c->bias;
  b.multiplier = c->multiplier;
  b.shift = c->shift;
  b.output = out_buf;
  b.scratch = scratch_buf;
  return check(c->name, path, fn(&c->params, &b), c->expected, c->out_bytes);
}

static int run_convs(void) {
  int i, fails = 0;
  for (i = 0; i < QMCU_GOLDEN_CONVS_COUNT; ++i) {
    const qmcu_golden_conv *c = &qmcu_golden_convs[i];
    if (c->depthwise) {
      fails += run_conv(c, "ref", qmcu_depthwise_conv_2d_ref, 0);
      fails += run_conv(c, "switch", qmcu_depthwise_conv_2d,
                        qmcu_depthwise_conv_2d_scratch_size(&c->params));
      if (qmcu_depthwise_conv_2d_opt_supported(&c->params)) {
        fails += run_conv(c, "opt", qmcu_depthwise_conv_2d_opt,
                          qmcu_depthwise_conv_2d_opt_scratch_size(&c->params));
      }
    } else {
      fails += run_conv(c, "ref", qmcu_conv_2d_ref, 0);
      fails += run_conv(c, "switch", qmcu_conv_2d, qmcu_conv_2d_scratch_size(&c->params));
      if (qmcu_conv_2d_opt_supported(&c->params)) {
        fails += run_conv(c, "opt", qmcu_conv_2d_opt, qmcu_conv_2d_opt_scratch_size(&c->params));
      }
    }
  }
  return fails;
}

static int run_others(void) {
  int i, fails = 0;
  for (i = 0; i < QMCU_GOLDEN_ADDS_COUNT; ++i) {
    const qmcu_golden_add *c = &qmcu_golden_adds[i];
    qmcu_add_buffers b;
    b.input1 = c->input1;
    b.input2 = c->input2;
    b.output = out_buf;
    memset(out_buf, 0xa5, c->out_bytes);
    fails += check(c->name, "switch", qmcu_add(&c->params, &b), c->expected, c->out_bytes);
  }
  for (i = 0; i < QMCU_GOLDEN_POOLS_COUNT; ++i) {
    const qmcu_golden_pool *c = &qmcu_golden_pools[i];
    qmcu_unary_buffers b;
    b.input = c->input;
    b.output = out_buf;
    memset(out_buf, 0xa5, c->out_bytes);
    fails += check(c->name, "switch", qmcu_average_pool_2d(&c->params, &b), c->expected,
                   c->out_bytes);
  }
  for (i = 0; i < QMCU_GOLDEN_REQUANTS_COUNT; ++i) {
    const qmcu_golden_requant *c = &qmcu_golden_requants[i];
    qmcu_unary_buffers b;
    b.input = c->input;
    b.output = out_buf;
    memset(out_buf, 0xa5, c->out_bytes);
    fails += check(c->name, "switch",
                   c->pack ? qmcu_pack(&c->params, &b) : qmcu_unpack(&c->params, &b),
                   c->expected, c->out_bytes);
  }
  return fails;
}

int main(void) {
  const int total = QMCU_GOLDEN_CONVS_COUNT + QMCU_GOLDEN_ADDS_COUNT +
                    QMCU_GOLDEN_POOLS_COUNT + QMCU_GOLDEN_REQUANTS_COUNT;
  int fails = run_convs() + run_others();
#if defined(__ARM_FEATURE_DSP)
  printf("qmcu golden: %d cases, %d failures (DSP fast paths compiled in)\n", total, fails);
#else
  printf("qmcu golden: %d cases, %d failures (no DSP extension)\n", total, fails);
#endif
  return fails > 100 ? 100 : fails;
}
