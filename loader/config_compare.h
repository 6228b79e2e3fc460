/* config_compare.h — do two parsed configs describe the same model? Field by field, through one
 * table of every m4_config field (config_compare.c), each marked with whether the forward pass
 * reads it.
 *
 * Used where one model's outputs are checked against another's: a golden file records the config
 * it was made with (config_json), and conformance against a model of another shape or math can
 * only fail row by row (issue #18). */
#ifndef M4_CONFIG_COMPARE_H
#define M4_CONFIG_COMPARE_H

#include <stdbool.h>

#include "config.h"

/* One differing field: its path as config.json spells it for `a`'s shape ("text_config.hidden_size"
 * in a multimodal config, "hidden_size" in a bare Mistral4 one), both values as text, and whether
 * the forward pass reads it (a difference changes the math) or not (eos ids, dtype, …). */
typedef struct {
    const char *field;
    char a[160], b[160];
    bool forward;
} m4_config_difference;

/* Calls fn for every field whose value differs between a and b, in the table's order. `source`
 * (where each was read from) is not compared. A difference in bytes that no table row covers (a
 * field added to m4_config and not to the table) is reported too, as a forward field named
 * "(a field config_compare.c does not list)", so a comparison can never pass over one. Returns the
 * number of differing forward fields. Both configs must come from m4_config_parse/load (which
 * zero the struct first, so padding compares equal). */
int m4_config_compare(const m4_config *a, const m4_config *b, void (*fn)(const m4_config_difference *d, void *user),
                      void *user);

#endif
