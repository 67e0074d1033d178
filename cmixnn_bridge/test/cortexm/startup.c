/* Minimal Cortex-M startup for QEMU mps2 boards: vector table, reset handler, fault exit. */
#include <stdint.h>
#include <stdlib.h>

extern uint32_t __data_load__, __data_start__, __data_end__, __bss_start__, __bss_end__;
extern uint32_t __stack_top__;
extern void initialise_monitor_handles(void);
extern void __libc_init_array(void);
extern int main(void);

void qmcu_reset_handler(void);
void qmcu_fault_handler(void);

/* newlib's __libc_init_array calls these; nothing to do here. */
void _init(void) {}
void _fini(void) {}

/* Semihosting SYS_EXIT with a run-time-error reason: QEMU exits with status 1. */
void qmcu_fault_handler(void) {
  __asm__ volatile(
      "movs r0, #0x18\n"
      "ldr r1, =0x20023\n"
      "bkpt #0xab\n"
      "b .\n");
}

__attribute__((section(".isr_vector"), used)) static void (*const qmcu_vectors[16])(void) = {
    (void (*)(void))(&__stack_top__), qmcu_reset_handler, qmcu_fault_handler, qmcu_fault_handler,
    qmcu_fault_handler, qmcu_fault_handler, qmcu_fault_handler, 0, 0, 0, 0,
    qmcu_fault_handler, qmcu_fault_handler, 0, qmcu_fault_handler, qmcu_fault_handler};

void qmcu_reset_handler(void) {
  uint32_t *src = &__data_load__;
  uint32_t *dst;
  for (dst = &__data_start__; dst < &__data_end__;) *dst++ = *src++;
  for (dst = &__bss_start__; dst < &__bss_end__;) *dst++ = 0u;
#if defined(__ARM_FP)
  /* CPACR: full access to CP10 and CP11 (the FPU) */
  *(volatile uint32_t *)0xE000ED88u |= (0xFu << 20);
  __asm__ volatile("dsb\n isb\n");
#endif
  initialise_monitor_handles();
  __libc_init_array();
  exit(main());
}
