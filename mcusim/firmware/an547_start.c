/* mcusim: minimal runtime for whole-firmware runs on QEMU mps3-an547 (Cortex-M55).
   Reset: zero .bss, enable the FPU/MVE (CPACR CP10/CP11), run mcusim_main(), exit through
   Arm semihosting SYS_EXIT_EXTENDED with its return value as QEMU's exit status. */
#include <stdint.h>

extern uint32_t __bss_start__, __bss_end__, __stack_top__;
int mcusim_main(void);

static int semihost(int op, const void *arg) {
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void mcusim_puts(const char *s) { semihost(0x04, s); } /* SYS_WRITE0 */

static const char HEX[] = "0123456789abcdef";

/* print "<tag> <hex bytes>\n" in chunks (SYS_WRITE0 needs NUL-terminated strings) */
void mcusim_dump(const char *tag, const void *p, uint32_t n) {
    char buf[258];
    const uint8_t *b = (const uint8_t *)p;
    mcusim_puts(tag);
    mcusim_puts(" ");
    while (n) {
        uint32_t k = n > 128 ? 128 : n, j = 0;
        for (uint32_t i = 0; i < k; i++) {
            buf[j++] = HEX[b[i] >> 4];
            buf[j++] = HEX[b[i] & 15];
        }
        buf[j] = 0;
        mcusim_puts(buf);
        b += k;
        n -= k;
    }
    mcusim_puts("\n");
}

__attribute__((noreturn)) void mcusim_exit(int code) {
    uint32_t block[2] = {0x20026u, (uint32_t)code}; /* ADP_Stopped_ApplicationExit */
    semihost(0x20, block);
    for (;;) {
    }
}

__attribute__((noreturn)) void Reset_Handler(void) {
    /* FPU/MVE on before any code that may be vectorized (the compiler may turn loops,
       including the one below, into MVE instructions) */
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20; /* CPACR: CP10, CP11 full access */
    __asm__ volatile("dsb\n isb" ::: "memory");
    for (volatile uint32_t *p = &__bss_start__; p < &__bss_end__; p++) *p = 0;
    mcusim_exit(mcusim_main());
}

/* report the faulting PC (stacked frame word 6), CFSR and BFAR, then exit with 99 */
__attribute__((noreturn, used)) void mcusim_fault(const uint32_t *frame) {
    uint32_t info[3] = {frame[6], *(volatile uint32_t *)0xE000ED28u,
                        *(volatile uint32_t *)0xE000ED38u};
    mcusim_dump("F", info, sizeof(info));
    mcusim_puts("mcusim: fault\n");
    mcusim_exit(99);
}

__attribute__((naked)) static void Fault_Handler(void) {
    __asm__ volatile("mrs r0, msp\n b mcusim_fault");
}

__attribute__((section(".vectors"), used)) const void *const mcusim_vectors[16] = {
    &__stack_top__, (const void *)Reset_Handler, (const void *)Fault_Handler,
    (const void *)Fault_Handler, (const void *)Fault_Handler, (const void *)Fault_Handler,
    (const void *)Fault_Handler, 0, 0, 0, 0, (const void *)Fault_Handler,
    (const void *)Fault_Handler, 0, (const void *)Fault_Handler, (const void *)Fault_Handler,
};
