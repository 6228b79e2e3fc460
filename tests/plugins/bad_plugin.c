/* bad_plugin.c — plugins the harness must refuse with a message and exit status 1, never a
 * crash: built once per DEFECT (tests/plugins/plugins.cmake).
 *   DEFECT_NO_ENTRY        no m4_plugin_get_info symbol
 *   DEFECT_ABI             built for another ABI version
 *   DEFECT_MISSING_CALL    declares the router but has no router function
 *   DEFECT_INIT            init fails with a message
 *   DEFECT_DEVICE_BUFFERS  asks for device buffers (ABI 1 has host buffers only)
 *   DEFECT_INIT_CRASH      init writes through a bad pointer (SIGSEGV)
 *   DEFECT_CALL_CRASH      embed_tokens does
 *   DEFECT_ENTRY_CRASH     m4_plugin_get_info does
 * (address 16, not NULL: UBSan's null check would stop the debug build's run first) */
#include <stdint.h>

#include <mistral4/plugin.h>

static void write_through_a_bad_pointer(void) {
    volatile uintptr_t address = 16;
    *(volatile int *)address = 1;
}

static int init(const m4_plugin_host *host, void **ctx, m4_plugin_error *err) {
#if defined(DEFECT_INIT)
    return m4_plugin_fail(err, "no GPU found (planted init failure)");
#else
#ifdef DEFECT_INIT_CRASH
    write_through_a_bad_pointer();
#endif
    *ctx = 0;
    return 0;
#endif
}

static void teardown(void *ctx) {}

static int embed_tokens(void *ctx, const int64_t *ids, int64_t n, float *out, m4_plugin_error *err) {
    write_through_a_bad_pointer();
    return 0;
}

static const m4_plugin_info info = {
#ifdef DEFECT_ABI
    .abi_version = M4_PLUGIN_ABI_VERSION + 1,
#else
    .abi_version = M4_PLUGIN_ABI_VERSION,
#endif
    .name = "bad",
#ifdef DEFECT_DEVICE_BUFFERS
    .buffers = 1,
#else
    .buffers = M4_PLUGIN_HOST_BUFFERS,
#endif
#ifdef DEFECT_MISSING_CALL
    .components = M4_PLUGIN_ROUTER,
#endif
#ifdef DEFECT_CALL_CRASH
    .components = M4_PLUGIN_EMBED_TOKENS,
#endif
    .init = init,
    .teardown = teardown,
    .embed_tokens = embed_tokens,
};

#ifndef DEFECT_NO_ENTRY
M4_PLUGIN_EXPORT const m4_plugin_info *m4_plugin_get_info(void) {
#ifdef DEFECT_ENTRY_CRASH
    write_through_a_bad_pointer();
#endif
    return &info;
}
#else
M4_PLUGIN_EXPORT const m4_plugin_info *not_the_entry(void) { return &info; }
#endif
