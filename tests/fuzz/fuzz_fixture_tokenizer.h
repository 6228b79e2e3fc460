/* fuzz_fixture_tokenizer.h — the committed v15 Tekken fixture, loaded once per fuzz process, for
 * the targets that encode text (fuzz_tokenizer, fuzz_chat). M4_FUZZ_TEKKEN names another file. */
#ifndef M4_FUZZ_FIXTURE_TOKENIZER_H
#define M4_FUZZ_FIXTURE_TOKENIZER_H

#include <stdio.h>
#include <stdlib.h>

#include "tokenizer.h"

#ifndef M4_SOURCE_DIR
#define M4_SOURCE_DIR "."
#endif

static m4_tokenizer *fixed_tokenizer(const char *target) {
    static m4_tokenizer *tok;
    if (tok) return tok;
    const char *path = getenv("M4_FUZZ_TEKKEN");
    if (!path || !*path) path = M4_SOURCE_DIR "/tests/fixtures/tokenizer/tekken_v15_synthetic.json";
    m4_error err;
    if (m4_tokenizer_load(path, &tok, &err) != 0) {
        fprintf(stderr, "%s: %s\n", target, err.msg);
        abort();
    }
    return tok;
}

#endif
