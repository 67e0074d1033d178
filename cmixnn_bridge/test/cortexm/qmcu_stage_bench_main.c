/* Instruction count of one QMCU_PATCH_STAGE case (qmcu_stage_cases.h) for the icount plugin:
 * an empty marker region (the markers' overhead), then either the whole qmcu_patch_stage()
 * call (one region) or, built with QMCU_STAGE_BENCH_HOOKS, one region per layer kernel call
 * inside it; then a check against the reference output. */
#include <stdio.h>
#include <string.h>

#include "qmcu/qmcu.h"
#include "qmcu/qmcu_stage.h"

typedef struct {
  const char *name;
  qmcu_stage_params params;
  const int8_t *input;
  uint32_t in_bytes;
  const int8_t *expected;
  uint32_t out_bytes;
  int32_t in_at;
  const void *const *operands;
  int32_t num_operands;
} qmcu_stage_case;

#include "qmcu_stage_cases.h"

void qmcu_bench_begin(void) __attribute__((noinline));
void qmcu_bench_end(void) __attribute__((noinline));
void qmcu_bench_begin(void) { __asm__ volatile("" ::: "memory"); }
void qmcu_bench_end(void) { __asm__ volatile("" ::: "memory"); }

static int8_t io[QMCU_STAGE_IO_BYTES] __attribute__((aligned(16)));
static int8_t scratch[QMCU_STAGE_SCRATCH_BYTES + 4] __attribute__((aligned(16)));

int main(void) {
  const qmcu_stage_case *c = &qmcu_stage_cases[0];
  qmcu_stage_buffers b;
  qmcu_status status;
  memcpy(io + c->in_at, c->input, c->in_bytes);
  b.input = io + c->in_at;
  b.output = io;
  b.scratch = scratch;
  b.operands = c->operands;
  b.num_operands = c->num_operands;
  qmcu_bench_begin();
  qmcu_bench_end();
#ifdef QMCU_STAGE_BENCH_HOOKS
  status = qmcu_patch_stage(&c->params, &b);
#else
  qmcu_bench_begin();
  status = qmcu_patch_stage(&c->params, &b);
  qmcu_bench_end();
#endif
  if (status != QMCU_STATUS_OK || memcmp(io, c->expected, c->out_bytes) != 0) {
    printf("qmcu stage bench %s: MISMATCH (status %d)\n", c->name, (int)status);
    return 1;
  }
  printf("qmcu stage bench %s: output matches the reference\n", c->name);
  return 0;
}
