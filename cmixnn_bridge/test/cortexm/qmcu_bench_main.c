/* One kernel call between qmcu_bench_begin() and qmcu_bench_end() for the icount plugin,
 * preceded by an empty region (the marker overhead), then a check against the golden output.
 * qmcu_bench_case.h defines one conv/depthwise case (qmcu_golden_convs[0]), or with
 * QMCU_BENCH_ADD one QMCU_ADD case (qmcu_golden_adds[0]), or with QMCU_BENCH_POOL one
 * QMCU_AVERAGE_POOL_2D case (qmcu_golden_pools[0]), and QMCU_BENCH_PATH: 0 reference,
 * 1 optimized, 2 the switch (qmcu_conv_2d / _depthwise / qmcu_add / qmcu_average_pool_2d). */
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
typedef struct { int unused; } qmcu_golden_requant;

#include "qmcu_bench_case.h"

void qmcu_bench_begin(void) __attribute__((noinline));
void qmcu_bench_end(void) __attribute__((noinline));
void qmcu_bench_begin(void) { __asm__ volatile("" ::: "memory"); }
void qmcu_bench_end(void) { __asm__ volatile("" ::: "memory"); }

static uint8_t out_buf[QMCU_GOLDEN_MAX_OUT] __attribute__((aligned(4)));
/* the fast conv path tiles up to 96 pixels: its scratch is larger than the header's estimate */
#define QMCU_TEST_SCRATCH_WORDS (QMCU_GOLDEN_SCRATCH_WORDS * 16 + 4096)
static uint32_t scratch_buf[QMCU_TEST_SCRATCH_WORDS];

typedef qmcu_status (*conv_fn)(const qmcu_conv_params *, const qmcu_conv_buffers *);

static conv_fn pick(const qmcu_golden_conv *c) {
  if (c->depthwise) {
    if (QMCU_BENCH_PATH == 0) return qmcu_depthwise_conv_2d_ref;
    if (QMCU_BENCH_PATH == 1) return qmcu_depthwise_conv_2d_opt;
    return qmcu_depthwise_conv_2d;
  }
  if (QMCU_BENCH_PATH == 0) return qmcu_conv_2d_ref;
  if (QMCU_BENCH_PATH == 1) return qmcu_conv_2d_opt;
  return qmcu_conv_2d;
}

#if defined(QMCU_BENCH_POOL)
int main(void) {
  const qmcu_golden_pool *c = &qmcu_golden_pools[0];
  qmcu_unary_buffers b;
  qmcu_status status;
  b.input = c->input;
  b.output = out_buf;
  qmcu_bench_begin();
  qmcu_bench_end();
  qmcu_bench_begin();
  status = QMCU_BENCH_PATH == 0   ? qmcu_average_pool_2d_ref(&c->params, &b)
           : QMCU_BENCH_PATH == 1 ? qmcu_average_pool_2d_opt(&c->params, &b)
                                  : qmcu_average_pool_2d(&c->params, &b);
  qmcu_bench_end();
  (void)scratch_buf;
  (void)pick;
  if (status != QMCU_STATUS_OK || memcmp(out_buf, c->expected, c->out_bytes) != 0) {
    printf("qmcu bench %s: MISMATCH (status %d)\n", c->name, (int)status);
    return 1;
  }
  printf("qmcu bench %s: output matches the reference; path=%s\n", c->name,
         QMCU_BENCH_PATH == 0 ? "ref"
         : (QMCU_BENCH_PATH == 1 || qmcu_average_pool_2d_opt_supported(&c->params)) ? "opt"
                                                                                  : "ref");
  return 0;
}
#elif defined(QMCU_BENCH_ADD)
int main(void) {
  const qmcu_golden_add *c = &qmcu_golden_adds[0];
  qmcu_add_buffers b;
  qmcu_status status;
  b.input1 = c->input1;
  b.input2 = c->input2;
  b.output = out_buf;
  qmcu_bench_begin();
  qmcu_bench_end();
  qmcu_bench_begin();
  status = QMCU_BENCH_PATH == 0   ? qmcu_add_ref(&c->params, &b)
           : QMCU_BENCH_PATH == 1 ? qmcu_add_opt(&c->params, &b)
                                  : qmcu_add(&c->params, &b);
  qmcu_bench_end();
  (void)scratch_buf;
  (void)pick;
  if (status != QMCU_STATUS_OK || memcmp(out_buf, c->expected, c->out_bytes) != 0) {
    printf("qmcu bench %s: MISMATCH (status %d)\n", c->name, (int)status);
    return 1;
  }
  printf("qmcu bench %s: output matches the reference; path=%s\n", c->name,
         QMCU_BENCH_PATH == 0 ? "ref" : "opt");
  return 0;
}
#else
int main(void) {
  const qmcu_golden_conv *c = &qmcu_golden_convs[0];
  const conv_fn fn = pick(c);
  qmcu_conv_buffers b;
  qmcu_status status;
  b.input = c->input;
  b.filter = c->filter;
  b.bias = c->bias;
  b.multiplier = c->multiplier;
  b.shift = c->shift;
  b.output = out_buf;
  b.scratch = scratch_buf;
  qmcu_bench_begin();
  qmcu_bench_end();
  qmcu_bench_begin();
  status = fn(&c->params, &b);
  qmcu_bench_end();
  if (status != QMCU_STATUS_OK || memcmp(out_buf, c->expected, c->out_bytes) != 0) {
    printf("qmcu bench %s: MISMATCH (status %d)\n", c->name, (int)status);
    return 1;
  }
  {
    const int opt = QMCU_BENCH_PATH == 1 ||
                    (QMCU_BENCH_PATH == 2 && (c->depthwise
                                                  ? qmcu_depthwise_conv_2d_opt_supported(&c->params)
                                                  : qmcu_conv_2d_opt_supported(&c->params)));
    printf("qmcu bench %s: output matches the reference; path=%s\n", c->name,
           opt ? "opt" : "ref");
  }
  return 0;
}
#endif
