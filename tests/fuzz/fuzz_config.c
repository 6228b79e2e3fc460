/* fuzz_config — untrusted config.json text through m4_config_parse, then, when it parses, the
 * tensor enumeration that `mistral4 inspect` and the binder walk (m4_weight_specs, both with and
 * without a weights struct to point into). Checks that a parsed config's tensor list is sane:
 * positive dims, no spec name truncated or empty, FP8 companions only where FP8 is on. */
#include "config.h"
#include "fuzz_common.h"
#include "weights.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0; /* the text ends at the first NUL, as it would when read from a file by jansson */
    m4_config cfg;
    m4_error err = {{0}};
    int rc = m4_config_parse(text, "fuzz/config.json", &cfg, &err);
    free(text);
    fuzz_note("config", rc ? err.msg : "parsed");
    if (rc != 0) {
        FUZZ_CHECK(err.msg[0] != 0);
        return 0;
    }
    m4_tensor_spec *specs = NULL;
    size_t n = 0;
    if (m4_weight_specs(&cfg, NULL, &specs, &n, &err) == 0) {
        FUZZ_CHECK(n > 0);
        for (size_t i = 0; i < n; i++) {
            const m4_tensor_spec *s = &specs[i];
            FUZZ_CHECK(s->name[0] != 0 && strlen(s->name) < sizeof s->name - 1);
            FUZZ_CHECK(s->ndim >= 0 && s->ndim <= 4);
            for (int d = 0; d < s->ndim; d++) FUZZ_CHECK(s->shape[d] >= 1);
            FUZZ_CHECK(!s->fp8 || cfg.quant.fp8);
            FUZZ_CHECK(s->weight == NULL && s->experts == NULL);
        }
        free(specs);
        m4_weights w;
        memset(&w, 0, sizeof w);
        size_t n2 = 0;
        FUZZ_CHECK(m4_weight_specs(&cfg, &w, &specs, &n2, &err) == 0 && n2 == n);
        for (size_t i = 0; i < n2; i++) FUZZ_CHECK(specs[i].weight || specs[i].experts);
        free(specs);
        free(w.layers);
        free(w.vision_layers);
    } else {
        FUZZ_CHECK(err.msg[0] != 0);
    }
    (void)m4_activation_name(cfg.text.hidden_act);
    return 0;
}
