/* Runs the QMCU_PATCH_STAGE cases of qmcu_stage_cases.h (pools, inputs, operands and expected
 * outputs written by the numpy reference) through qmcu_patch_stage_ref and qmcu_patch_stage,
 * with the stage output over the stage input as the converter planned; exit status = number
 * of mismatches. */
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
  int32_t in_at; /* the input's offset in the shared I/O buffer */
  const void *const *operands;
  int32_t num_operands;
} qmcu_stage_case;

#include "qmcu_stage_cases.h"

static int8_t io[QMCU_STAGE_IO_BYTES] __attribute__((aligned(16)));
static int8_t scratch[QMCU_STAGE_SCRATCH_BYTES + 4] __attribute__((aligned(16)));

static int run_case(const qmcu_stage_case *c, int use_opt) {
  qmcu_stage_buffers b;
  qmcu_status status;
  memset(io, 0x5a, sizeof(io));
  memset(scratch, 0xa5, sizeof(scratch));
  memcpy(io + c->in_at, c->input, c->in_bytes);
  b.input = io + c->in_at;
  b.output = io;
  b.scratch = scratch;
  b.operands = c->operands;
  b.num_operands = c->num_operands;
  status = use_opt ? qmcu_patch_stage(&c->params, &b) : qmcu_patch_stage_ref(&c->params, &b);
  if (status != QMCU_STATUS_OK || memcmp(io, c->expected, c->out_bytes) != 0) {
    printf("MISMATCH %s (%s, status %d)\n", c->name, use_opt ? "opt" : "ref", (int)status);
    return 1;
  }
  return 0;
}

int main(void) {
  int failures = 0;
  int k;
  for (k = 0; k < QMCU_STAGE_NUM_CASES; ++k) {
    failures += run_case(&qmcu_stage_cases[k], 0);
    failures += run_case(&qmcu_stage_cases[k], 1);
  }
  printf("stage: %d cases, %d failures\n", QMCU_STAGE_NUM_CASES, failures);
  return failures;
}
