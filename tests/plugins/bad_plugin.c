/* bad_plugin.c — plugins the harness must refuse with a message and exit status 1, never a
 * crash: built once per DEFECT (tests/plugins/plugins.cmake).
 *   DEFECT_NO_ENTRY        no m4_plugin_get_info symbol
 *   DEFECT_ABI             built for another ABI version
 *   DEFECT_MISSING_CALL    declares the router but has no router function
 *   DEFECT_INIT            init fails with a message */
#include <mistral4/plugin.h>

static int init(const m4_plugin_host *host, void **ctx, m4_plugin_error *err) {
#ifdef DEFECT_INIT
    return m4_plugin_fail(err, "no GPU found (planted init failure)");
#else
    *ctx = 0;
    return 0;
#endif
}

static void teardown(void *ctx) {}

static const m4_plugin_info info = {
#ifdef DEFECT_ABI
    .abi_version = M4_PLUGIN_ABI_VERSION + 1,
#else
    .abi_version = M4_PLUGIN_ABI_VERSION,
#endif
    .name = "bad",
    .buffers = M4_PLUGIN_HOST_BUFFERS,
#ifdef DEFECT_MISSING_CALL
    .components = M4_PLUGIN_ROUTER,
#endif
    .init = init,
    .teardown = teardown,
};

#ifndef DEFECT_NO_ENTRY
M4_PLUGIN_EXPORT const m4_plugin_info *m4_plugin_get_info(void) { return &info; }
#else
M4_PLUGIN_EXPORT const m4_plugin_info *not_the_entry(void) { return &info; }
#endif
