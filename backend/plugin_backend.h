/* plugin_backend.h — an outside implementation as a backend: a shared object implementing the
 * plugin ABI (include/mistral4/plugin.h) loaded with dlopen and adapted to an m4_backend, so the
 * harness runs it like the built-in ones (`mistral4 conform --backend plugin:PATH.so`). */
#ifndef M4_PLUGIN_BACKEND_H
#define M4_PLUGIN_BACKEND_H

#include "backend.h"

/* The prefix of a plugin's backend name on the command line: "plugin:PATH.so". */
#define M4_PLUGIN_PREFIX "plugin:"

/* Loads the plugin at `path` and checks it: a shared object exporting M4_PLUGIN_ENTRY, built for
 * this M4_PLUGIN_ABI_VERSION, with host buffers, an init, and a function for every component it
 * declares. *backend is its table (named "plugin:NAME"; the components it does not declare are
 * NULL) until m4_plugin_backend_unload. One plugin at a time per process. Returns 0, or -1 with
 * err naming the file and the problem (nothing stays loaded). */
int m4_plugin_backend_load(const char *path, const m4_backend **backend, m4_error *err);

/* Closes the shared object; the table is gone. */
void m4_plugin_backend_unload(void);

#endif
