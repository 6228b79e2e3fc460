/* Runs llama.cpp on given token ids and positions and writes every tensor its graph computes
 * (the eval callback, cb_eval), for tools/llama-cpp/to_candidate.py:
 *
 *   dump MODEL.gguf OUT_DIR SEQUENCES.txt [f32|f16]
 *
 * The last argument is the type of llama.cpp's KV cache: f32 (default here, so the run is
 * float32 throughout) or f16 (llama.cpp's own default, for comparison).
 * SEQUENCES.txt: one sequence a line, "id:pos id:pos ..." (token ids) or "embd PATH pos pos ..."
 * (input embeddings: PATH holds one float32 row of n_embd per position). Each sequence is one llama_decode
 * of all its tokens (sequence 0, every token an output) on an emptied memory, so sequences never
 * see each other. Tensor t of sequence r goes to OUT_DIR/r<r>/<name>.f32 (float32) or .i32
 * (int32), row-major in ggml's order (ne0 fastest), one line "r<r>/<name>.<ext> ne0 ne1 ne2 ne3"
 * in OUT_DIR/manifest.txt. Names repeat (llama.cpp names several steps "q-0"): the file holds
 * the last tensor of that name, the manifest lists each write. Other types are skipped.
 * Threads: 2, CPU only. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ggml.h"
#include "llama.h"

struct dump_state {
    const char *out_dir;
    int sequence;
    FILE *manifest;
    int failed;
};

static float element_f32(const struct ggml_tensor *t, int64_t i0, int64_t i1, int64_t i2, int64_t i3)
{
    const char *p = (const char *)t->data + i0 * t->nb[0] + i1 * t->nb[1] + i2 * t->nb[2] + i3 * t->nb[3];
    return *(const float *)p;
}

static int32_t element_i32(const struct ggml_tensor *t, int64_t i0, int64_t i1, int64_t i2, int64_t i3)
{
    const char *p = (const char *)t->data + i0 * t->nb[0] + i1 * t->nb[1] + i2 * t->nb[2] + i3 * t->nb[3];
    return *(const int32_t *)p;
}

/* Writes one observed tensor (strided: views included) in ggml's element order. */
static bool observe(struct ggml_tensor *t, bool ask, void *user_data)
{
    struct dump_state *s = user_data;
    if (ask)
        return t->type == GGML_TYPE_F32 || t->type == GGML_TYPE_I32;
    if (t->data == NULL || t->name[0] == '\0' || strchr(t->name, '/') || strchr(t->name, ' '))
        return true;
    const char *ext = t->type == GGML_TYPE_F32 ? "f32" : "i32";
    char path[4096];
    snprintf(path, sizeof path, "%s/r%d/%s.%s", s->out_dir, s->sequence, t->name, ext);
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "dump: cannot write %s: %s\n", path, strerror(errno));
        s->failed = 1;
        return false;
    }
    for (int64_t i3 = 0; i3 < t->ne[3]; i3++)
        for (int64_t i2 = 0; i2 < t->ne[2]; i2++)
            for (int64_t i1 = 0; i1 < t->ne[1]; i1++)
                for (int64_t i0 = 0; i0 < t->ne[0]; i0++) {
                    if (t->type == GGML_TYPE_F32) {
                        float v = element_f32(t, i0, i1, i2, i3);
                        fwrite(&v, sizeof v, 1, f);
                    } else {
                        int32_t v = element_i32(t, i0, i1, i2, i3);
                        fwrite(&v, sizeof v, 1, f);
                    }
                }
    if (fclose(f) != 0) {
        fprintf(stderr, "dump: cannot write %s\n", path);
        s->failed = 1;
        return false;
    }
    fprintf(s->manifest, "r%d/%s.%s %lld %lld %lld %lld\n", s->sequence, t->name, ext, (long long)t->ne[0],
            (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3]);
    return true;
}

/* Parses one line "id:pos id:pos ..." into tokens (every token an output, sequence 0). */
static int parse_tokens(char *line, struct llama_batch *batch, int capacity)
{
    batch->n_tokens = 0;
    for (char *tok = strtok(line, " \t\n"); tok; tok = strtok(NULL, " \t\n")) {
        int id, pos;
        if (sscanf(tok, "%d:%d", &id, &pos) != 2 || batch->n_tokens == capacity)
            return -1;
        int i = batch->n_tokens++;
        batch->token[i] = id;
        batch->pos[i] = pos;
        batch->n_seq_id[i] = 1;
        batch->seq_id[i][0] = 0;
        batch->logits[i] = 1;
    }
    return batch->n_tokens;
}

/* Parses "embd PATH pos pos ..." into embeds: the positions, then PATH's rows of n_embd floats. */
static int parse_embeddings(char *line, struct llama_batch *batch, int capacity, int n_embd)
{
    strtok(line, " \t\n");
    const char *path = strtok(NULL, " \t\n");
    if (!path)
        return -1;
    batch->n_tokens = 0;
    for (char *tok = strtok(NULL, " \t\n"); tok; tok = strtok(NULL, " \t\n")) {
        int pos;
        if (sscanf(tok, "%d", &pos) != 1 || batch->n_tokens == capacity)
            return -1;
        int i = batch->n_tokens++;
        batch->pos[i] = pos;
        batch->n_seq_id[i] = 1;
        batch->seq_id[i][0] = 0;
        batch->logits[i] = 1;
    }
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    size_t want = (size_t)batch->n_tokens * (size_t)n_embd;
    size_t got = fread(batch->embd, sizeof(float), want, f);
    fclose(f);
    return got == want ? batch->n_tokens : -1;
}

int main(int argc, char **argv)
{
    if (argc < 4 || argc > 5 || (argc == 5 && strcmp(argv[4], "f32") && strcmp(argv[4], "f16"))) {
        fprintf(stderr, "usage: dump MODEL.gguf OUT_DIR SEQUENCES.txt [f32|f16]\n");
        return 2;
    }
    const enum ggml_type cache_type = argc == 5 && !strcmp(argv[4], "f16") ? GGML_TYPE_F16 : GGML_TYPE_F32;
    const char *model_path = argv[1], *out_dir = argv[2], *sequences_path = argv[3];
    enum { capacity = 4096 };

    FILE *sequences = fopen(sequences_path, "r");
    if (!sequences) {
        fprintf(stderr, "dump: cannot read %s: %s\n", sequences_path, strerror(errno));
        return 1;
    }
    char manifest_path[4096];
    snprintf(manifest_path, sizeof manifest_path, "%s/manifest.txt", out_dir);
    struct dump_state state = {.out_dir = out_dir, .manifest = fopen(manifest_path, "w")};
    if (!state.manifest) {
        fprintf(stderr, "dump: cannot write %s: %s\n", manifest_path, strerror(errno));
        return 1;
    }

    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model *model = llama_model_load_from_file(model_path, mp);
    if (!model) {
        fprintf(stderr, "dump: llama.cpp cannot load %s\n", model_path);
        return 1;
    }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = capacity;
    cp.n_batch = cp.n_ubatch = capacity;
    cp.n_seq_max = 1;
    cp.n_threads = cp.n_threads_batch = 2;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED; /* keeps kq_soft_max, the attention weights */
    cp.type_k = cp.type_v = cache_type;
    cp.cb_eval = observe;
    cp.cb_eval_user_data = &state;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "dump: llama.cpp cannot make a context for %s\n", model_path);
        return 1;
    }

    struct llama_batch tokens = llama_batch_init(capacity, 0, 1);
    struct llama_batch embeds = llama_batch_init(capacity, llama_model_n_embd(model), 1);
    static char line[1 << 20];
    int status = 0;
    for (state.sequence = 0; fgets(line, sizeof line, sequences); state.sequence++) {
        bool embedded = strncmp(line, "embd ", 5) == 0;
        struct llama_batch *batch = embedded ? &embeds : &tokens;
        int n = embedded ? parse_embeddings(line, batch, capacity, llama_model_n_embd(model))
                         : parse_tokens(line, batch, capacity);
        if (n <= 0) {
            fprintf(stderr, "dump: %s line %d: expected \"id:pos id:pos ...\" or \"embd PATH pos pos ...\" "
                    "with PATH holding n_embd floats per position (at most %d positions)\n",
                    sequences_path, state.sequence + 1, capacity);
            status = 1;
            break;
        }
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/r%d", out_dir, state.sequence);
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "dump: cannot make %s: %s\n", dir, strerror(errno));
            status = 1;
            break;
        }
        llama_memory_clear(llama_get_memory(ctx), true);
        int rc = llama_decode(ctx, *batch);
        if (rc != 0 || state.failed) {
            fprintf(stderr, "dump: llama_decode of sequence %d failed (%d)\n", state.sequence, rc);
            status = 1;
            break;
        }
    }
    llama_batch_free(tokens);
    llama_batch_free(embeds);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    fclose(sequences);
    if (fclose(state.manifest) != 0)
        status = 1;
    return status;
}
