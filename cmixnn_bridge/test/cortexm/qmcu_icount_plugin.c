/* QEMU TCG plugin (plugin API version 1, QEMU 7.2): counts executed guest instructions
 * between the entries of two marker functions.
 *
 *   qemu-system-arm ... -plugin libqmcu_icount.so,begin=0x<addr>,end=0x<addr> -d plugin
 *
 * Every translated block adds its instruction count to one counter (an inline add, no
 * helper call); callbacks on the first instruction of the markers snapshot that counter.
 * Each region is printed as "qmcu_icount region=<i> insns=<n>" on the plugin log.
 *
 * Debian ships no qemu-plugin.h, so the few declarations used are written here from the
 * documented plugin API (v1, as exported by QEMU 7.2).
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- plugin API v1 declarations (QEMU 7.2 ABI) ---- */
typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t; /* only passed through */
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS = 0 };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 = 0 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                              void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn,
                                            qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb,
                                    void *userdata);
void qemu_plugin_outs(const char *string);

#define QMCU_EXPORT __attribute__((visibility("default")))
QMCU_EXPORT int qemu_plugin_version = 1;

/* ---- counter state (one vCPU: the mps2 boards are single core) ---- */
static uint64_t total_insns;
static uint64_t region_start;
static uint64_t begin_addr = UINT64_MAX;
static uint64_t end_addr = UINT64_MAX;
static int in_region;
static int regions;
static const char kBegin[] = "begin";
static const char kEnd[] = "end";

static void on_marker(unsigned int vcpu_index, void *userdata) {
  char line[96];
  (void)vcpu_index;
  if (userdata == kBegin) {
    region_start = total_insns;
    in_region = 1;
  } else if (in_region) {
    snprintf(line, sizeof line, "qmcu_icount region=%d insns=%" PRIu64 "\n", regions,
             total_insns - region_start);
    qemu_plugin_outs(line);
    ++regions;
    in_region = 0;
  }
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
  const size_t n = qemu_plugin_tb_n_insns(tb);
  size_t i;
  (void)id;
  qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &total_insns, n);
  for (i = 0; i < n; ++i) {
    struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
    const uint64_t vaddr = qemu_plugin_insn_vaddr(insn);
    if (vaddr == begin_addr) {
      qemu_plugin_register_vcpu_insn_exec_cb(insn, on_marker, QEMU_PLUGIN_CB_NO_REGS,
                                             (void *)kBegin);
    } else if (vaddr == end_addr) {
      qemu_plugin_register_vcpu_insn_exec_cb(insn, on_marker, QEMU_PLUGIN_CB_NO_REGS,
                                             (void *)kEnd);
    }
  }
}

static void on_exit(qemu_plugin_id_t id, void *userdata) {
  char line[96];
  (void)id;
  (void)userdata;
  snprintf(line, sizeof line, "qmcu_icount total=%" PRIu64 " regions=%d\n", total_insns,
           regions);
  qemu_plugin_outs(line);
}

static int parse_addr(const char *arg, const char *key, uint64_t *out) {
  const size_t len = strlen(key);
  if (strncmp(arg, key, len) != 0 || arg[len] != '=') return 0;
  /* Thumb symbols carry bit 0; instruction addresses do not. */
  *out = strtoull(arg + len + 1, NULL, 0) & ~(uint64_t)1;
  return 1;
}

QMCU_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                                    char **argv);

QMCU_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                                    char **argv) {
  int i;
  (void)info;
  for (i = 0; i < argc; ++i) {
    if (!parse_addr(argv[i], "begin", &begin_addr) && !parse_addr(argv[i], "end", &end_addr)) {
      fprintf(stderr, "qmcu_icount: unknown argument %s (want begin=ADDR,end=ADDR)\n", argv[i]);
      return -1;
    }
  }
  if (begin_addr == UINT64_MAX || end_addr == UINT64_MAX) {
    fprintf(stderr, "qmcu_icount: both begin= and end= addresses are required\n");
    return -1;
  }
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
  qemu_plugin_register_atexit_cb(id, on_exit, NULL);
  return 0;
}
