/* m4_json.h — what the JSON readers (config.json, tekken.json) share for their messages. */
#ifndef M4_JSON_H
#define M4_JSON_H

#include <jansson.h>

/* The kind of a JSON value as a message says it: "an object", "a string", "null" … */
const char *m4_json_kind(const json_t *v);

#endif
