/* mn_call_flat: the twins for callers that pass pointers and integers as separate
 * arguments (the QEMU driver of mcusim/firmware/qemu.py, which embeds each array in the
 * image and cannot write addresses into a struct). ``kind`` selects the argument struct
 * (0 conv, 1 depthwise, 2 fully connected, 3 avg pool, 4 max pool, 5 add/sub, 6 softmax,
 * 7 copy); p0..p6 fill its pointer fields in declaration order (unused ones: 0) and
 * ``ints`` its int32 fields. 32-bit targets only (pointers are one word there). */
#include "mcusim_nn.h"

#if UINTPTR_MAX == 0xFFFFFFFFu

int32_t mn_call_flat(uint32_t kind, void *p0, void *p1, void *p2, void *p3, void *p4,
                     void *p5, void *p6, const int32_t *ints);

#define MN_FILL(type, n_ptr, call)                                                           \
    do {                                                                                     \
        type args;                                                                           \
        uint32_t words[sizeof(type) / 4];                                                    \
        for (uint32_t i = 0; i < (n_ptr); i++)                                               \
            words[i] = (uint32_t)(uintptr_t)ptrs[i];                                         \
        for (uint32_t i = (n_ptr); i < sizeof(type) / 4; i++)                                \
            words[i] = (uint32_t)ints[i - (n_ptr)];                                          \
        mn_memcpy(&args, words, sizeof(type));                                               \
        return call(&args);                                                                  \
    } while (0)

int32_t mn_call_flat(uint32_t kind, void *p0, void *p1, void *p2, void *p3, void *p4,
                     void *p5, void *p6, const int32_t *ints)
{
    void *const ptrs[7] = {p0, p1, p2, p3, p4, p5, p6};
    switch (kind) {
    case 0:
        MN_FILL(mn_conv_args, 7, mn_conv_s8);
    case 1:
        MN_FILL(mn_dw_args, 7, mn_depthwise_s8);
    case 2:
        MN_FILL(mn_fc_args, 6, mn_fully_connected_s8);
    case 3:
        MN_FILL(mn_pool_args, 3, mn_avgpool_s8);
    case 4:
        MN_FILL(mn_pool_args, 3, mn_maxpool_s8);
    case 5:
        MN_FILL(mn_add_args, 3, mn_add_s8);
    case 6:
        MN_FILL(mn_softmax_args, 2, mn_softmax_s8);
    case 7:
        MN_FILL(mn_copy_args, 2, mn_copy);
    default:
        return MN_ARG_ERROR;
    }
}

#endif
