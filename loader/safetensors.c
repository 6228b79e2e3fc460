/* safetensors.c — mmap-backed reader for single-file and sharded safetensors checkpoints.
 * The header is parsed and validated as the format's reference implementation does it: tensors
 * tile the data section exactly (sorted by offset, no gap, no overlap, nothing left over). */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MADV_HUGEPAGE */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdbool.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "m4_faults.h"
#include "m4_file.h"

typedef struct {
    char *path;
    void *map;
    size_t map_len;
} shard;

struct m4_checkpoint {
    char *path;
    shard *shards;
    size_t n_shards;
    m4_tensor *tensors; /* sorted by name once opening is complete */
    size_t n_tensors, cap_tensors;
    uint64_t data_bytes;
};

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Anything at all is there (a FIFO or a folder too: opening it then says what it is instead). */
static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const m4_tensor *)a)->name, ((const m4_tensor *)b)->name);
}

typedef struct {
    uint64_t begin, end;
    size_t index;
} span;

static int by_begin(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int read_u64_field(json_t *value, uint64_t *out) {
    if (!json_is_integer(value) || json_integer_value(value) < 0) return -1;
    *out = (uint64_t)json_integer_value(value);
    return 0;
}

/* Parses one header entry {"dtype", "shape", "data_offsets"} into t (name and data set by caller).
 * data_start is the file offset of the data section (8 + header length). */
static int parse_entry(const char *file, const char *name, json_t *entry, uint64_t data_start,
                       uint64_t data_len,
                       m4_tensor *t, uint64_t *begin, uint64_t *end, m4_error *err) {
    if (!json_is_object(entry))
        return m4_fail(err, "%s: tensor \"%s\": header entry is not an object", file, name);
    json_t *dtype = json_object_get(entry, "dtype");
    json_t *shape = json_object_get(entry, "shape");
    json_t *offsets = json_object_get(entry, "data_offsets");
    if (!json_is_string(dtype) || !json_is_array(shape) || !json_is_array(offsets))
        return m4_fail(err, "%s: tensor \"%s\": header entry needs string \"dtype\", array \"shape\" "
                            "and array \"data_offsets\"", file, name);
    if (m4_dtype_parse(json_string_value(dtype), &t->dtype) != 0)
        return m4_fail(err, "%s: tensor \"%s\": unknown dtype \"%s\" (supported: F32, BF16, F16, "
                            "F8_E4M3, I64, I32)", file, name, json_string_value(dtype));
    size_t ndim = json_array_size(shape);
    if (ndim > M4_MAX_DIMS)
        return m4_fail(err, "%s: tensor \"%s\": %zu dimensions (at most %d supported)", file, name,
                       ndim, M4_MAX_DIMS);
    t->ndim = (int)ndim;
    uint64_t numel = 1;
    for (size_t d = 0; d < ndim; d++) {
        uint64_t dim;
        if (read_u64_field(json_array_get(shape, d), &dim) != 0)
            return m4_fail(err, "%s: tensor \"%s\": shape[%zu] is not a non-negative integer", file,
                           name, d);
        if (__builtin_mul_overflow(numel, dim, &numel) || numel > (uint64_t)INT64_MAX)
            return m4_fail(err, "%s: tensor \"%s\": shape product overflows 64 bits", file, name);
        t->shape[d] = (int64_t)dim;
    }
    t->numel = (int64_t)numel;
    uint64_t nbytes;
    if (__builtin_mul_overflow(numel, (uint64_t)m4_dtype_size(t->dtype), &nbytes))
        return m4_fail(err, "%s: tensor \"%s\": byte size overflows 64 bits", file, name);
    if (json_array_size(offsets) != 2 || read_u64_field(json_array_get(offsets, 0), begin) != 0 ||
        read_u64_field(json_array_get(offsets, 1), end) != 0)
        return m4_fail(err, "%s: tensor \"%s\": data_offsets must be two non-negative integers", file,
                       name);
    if (*end < *begin)
        return m4_fail(err, "%s: tensor \"%s\": data_offsets [%llu, %llu] end before they begin",
                       file, name, (unsigned long long)*begin, (unsigned long long)*end);
    if (*end > data_len)
        return m4_fail(err, "%s: tensor \"%s\": data_offsets end %llu is past the end of the data "
                            "section (%llu bytes; file truncated?)", file, name,
                       (unsigned long long)*end, (unsigned long long)data_len);
    if (*end - *begin != nbytes)
        return m4_fail(err, "%s: tensor \"%s\": shape × %s is %llu bytes but data_offsets span %llu",
                       file, name, m4_dtype_name(t->dtype), (unsigned long long)nbytes,
                       (unsigned long long)(*end - *begin));
    /* The mmap is page-aligned, so the file offset decides whether t->data can be read as typed
     * elements: an unpadded header (length not a multiple of 8) misaligns every tensor after it. */
    if ((data_start + *begin) % m4_dtype_size(t->dtype) != 0)
        return m4_fail(err, "%s: tensor \"%s\": data offset %llu (file offset %llu) is not aligned "
                            "to its %zu-byte elements%s", file, name, (unsigned long long)*begin,
                       (unsigned long long)(data_start + *begin), m4_dtype_size(t->dtype),
                       data_start % 8 ? " (the header length is not padded to a multiple of 8)" : "");
    t->nbytes = nbytes;
    return 0;
}

static int push_tensor(m4_checkpoint *c, m4_tensor **out, m4_error *err) {
    if (c->n_tensors == c->cap_tensors) {
        size_t cap = c->cap_tensors ? 2 * c->cap_tensors : 256;
        m4_tensor *grown = realloc(c->tensors, cap * sizeof *grown);
        if (!grown) return m4_fail(err, "%s: out of memory for the tensor list (%zu bytes)", c->path, cap * sizeof *grown);
        c->tensors = grown;
        c->cap_tensors = cap;
    }
    *out = &c->tensors[c->n_tensors++];
    memset(*out, 0, sizeof **out);
    return 0;
}

/* Checks that the tensors of one file tile its data section: no gap, no overlap, no tail. */
static int check_tiling(const char *file, span *spans, size_t n, const m4_tensor *tensors,
                        uint64_t data_len, m4_error *err) {
    qsort(spans, n, sizeof *spans, by_begin);
    uint64_t expect = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name = tensors[spans[i].index].name;
        if (spans[i].begin < expect)
            return m4_fail(err, "%s: tensor \"%s\": data_offsets [%llu, %llu] overlap the previous "
                                "tensor (which ends at %llu)", file, name,
                           (unsigned long long)spans[i].begin, (unsigned long long)spans[i].end,
                           (unsigned long long)expect);
        if (spans[i].begin > expect)
            return m4_fail(err, "%s: tensor \"%s\": data_offsets begin at %llu, leaving a gap after "
                                "byte %llu", file, name, (unsigned long long)spans[i].begin,
                           (unsigned long long)expect);
        expect = spans[i].end;
    }
    if (expect != data_len)
        return m4_fail(err, "%s: the data section holds %llu bytes but its tensors cover %llu",
                       file, (unsigned long long)data_len, (unsigned long long)expect);
    return 0;
}

/* Maps one .safetensors file and appends its tensors to c. */
static int open_shard(m4_checkpoint *c, const char *path, m4_error *err) {
    shard *grown = realloc(c->shards, (c->n_shards + 1) * sizeof *grown);
    if (!grown) return m4_fail(err, "%s: out of memory (%zu bytes)", path, (c->n_shards + 1) * sizeof *grown);
    c->shards = grown;
    shard *s = &c->shards[c->n_shards];
    memset(s, 0, sizeof *s);
    if (!(s->path = strdup(path))) return m4_fail(err, "%s: out of memory (%zu bytes)", path, strlen(path) + 1);
    c->n_shards++;

    size_t file_size;
    int fd = m4_file_open_regular(path, "the safetensors shard", &file_size, err);
    if (fd < 0) return -1;
    uint64_t size = file_size;
    if (size < 8) {
        close(fd);
        return m4_fail(err, "%s: truncated: %llu bytes, shorter than the 8-byte header length",
                       path, (unsigned long long)size);
    }
    s->map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (s->map == MAP_FAILED) {
        s->map = NULL;
        return m4_fail(err, "%s: mmap failed: %s", path, strerror(errno));
    }
    s->map_len = (size_t)size;
    /* registered so that a read after the file shrank is reported by name (SIGBUS, cli/signals.c) */
    if (m4_faults_track_mapping(s->map, s->map_len, s->path) != 0) {
        munmap(s->map, s->map_len);
        s->map = NULL;
        return m4_fail(err, "%s: out of memory (%zu bytes)", path, strlen(path) + 1 + 4 * sizeof(void *));
    }
    const uint8_t *bytes = s->map;
    uint64_t header_len = 0;
    for (int i = 0; i < 8; i++) header_len |= (uint64_t)bytes[i] << (8 * i);
    if (header_len > M4_SAFETENSORS_MAX_HEADER)
        return m4_fail(err, "%s: header length %llu exceeds the %u-byte limit (corrupt file?)", path,
                       (unsigned long long)header_len, M4_SAFETENSORS_MAX_HEADER);
    if (header_len > size - 8)
        return m4_fail(err, "%s: header length %llu runs past the end of the file (%llu bytes)",
                       path, (unsigned long long)header_len, (unsigned long long)size);
    const uint8_t *data = bytes + 8 + header_len;
    uint64_t data_len = size - 8 - header_len;

    json_error_t jerr;
    json_t *root = json_loadb((const char *)bytes + 8, (size_t)header_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return m4_fail(err, "%s: invalid JSON header (line %d, column %d): %s", path, jerr.line,
                       jerr.column, jerr.text);
    int rc = 0;
    span *spans = NULL;
    size_t n_spans = 0;
    if (!json_is_object(root)) {
        rc = m4_fail(err, "%s: header is not a JSON object", path);
        goto done;
    }
    spans = malloc((json_object_size(root) + 1) * sizeof *spans);
    if (!spans) {
        rc = m4_fail(err, "%s: out of memory (%zu bytes)", path, (json_object_size(root) + 1) * sizeof *spans);
        goto done;
    }
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(value)) {
                rc = m4_fail(err, "%s: \"__metadata__\" is not an object", path);
                goto done;
            }
            continue;
        }
        m4_tensor *t = NULL;
        uint64_t begin, end;
        if ((rc = push_tensor(c, &t, err)) != 0) goto done;
        if (!(t->name = strdup(key))) {
            rc = m4_fail(err, "%s: out of memory (%zu bytes)", path, strlen(key) + 1);
            goto done;
        }
        if ((rc = parse_entry(path, key, value, 8 + header_len, data_len, t, &begin, &end, err)) != 0) goto done;
        t->data = data + begin;
        t->file = s->path;
        spans[n_spans++] = (span){begin, end, c->n_tensors - 1};
    }
    rc = check_tiling(path, spans, n_spans, c->tensors, data_len, err);
    c->data_bytes += data_len;
done:
    free(spans);
    json_decref(root);
    return rc;
}

/* Sorts the tensors by name and rejects a name stored twice (in two shards). */
static int sort_and_check_unique(m4_checkpoint *c, const char *path, m4_error *err) {
    if (c->n_tensors > 1) /* qsort(NULL, 0, …) is undefined: an empty checkpoint has no array */
        qsort(c->tensors, c->n_tensors, sizeof *c->tensors, by_name);
    for (size_t i = 1; i < c->n_tensors; i++) {
        if (strcmp(c->tensors[i - 1].name, c->tensors[i].name) == 0)
            return m4_fail(err, "%s: tensor \"%s\" is stored twice (in %s and %s)", path,
                           c->tensors[i].name, c->tensors[i - 1].file, c->tensors[i].file);
    }
    return 0;
}

/* A shard name from an index must stay inside the checkpoint folder. */
static int safe_shard_name(const char *name) {
    return name[0] && name[0] != '/' && strstr(name, "..") == NULL;
}

/* `path` is `folder` or inside it (both resolved: no "..", no links). */
static bool inside(const char *path, const char *folder) {
    const size_t n = strlen(folder);
    return strncmp(path, folder, n) == 0 && (path[n] == 0 || path[n] == '/' || folder[n - 1] == '/');
}

/* When `folder` (resolved) is a Hugging Face hub cache snapshot, …/REPO/snapshots/REV, writes
 * …/REPO/blobs into `blobs` (PATH_MAX bytes) and returns true. */
static bool hub_cache_blobs(const char *folder, char *blobs) {
    const char *rev = strrchr(folder, '/');
    if (!rev || rev == folder) return false;
    const size_t parent = (size_t)(rev - folder); /* …/REPO/snapshots */
    static const char snapshots[] = "/snapshots";
    const size_t s = sizeof snapshots - 1;
    if (parent <= s || strncmp(folder + parent - s, snapshots, s) != 0) return false;
    return snprintf(blobs, PATH_MAX, "%.*s/blobs", (int)(parent - s), folder) < PATH_MAX;
}

/* Opens a shard found through a checkpoint folder (listed by its index, or its model.safetensors)
 * after checking where it really is: inside the folder, or, when the folder is a hub cache
 * snapshot (whose files are links ../../blobs/SHA256), in that repo's blobs/. A link anywhere
 * else is refused, so a checkpoint folder cannot make the tool read a file it does not hold. */
static int open_shard_of_folder(m4_checkpoint *c, const char *dir, const char *shard_path, m4_error *err) {
    char folder[PATH_MAX], real[PATH_MAX], blobs[PATH_MAX];
    if (!realpath(dir, folder)) return m4_fail(err, "%s: cannot resolve the checkpoint folder: %s", dir, strerror(errno));
    if (!realpath(shard_path, real)) return m4_fail(err, "%s: cannot resolve the shard: %s", shard_path, strerror(errno));
    struct stat st;
    if (!inside(real, folder) && !(hub_cache_blobs(folder, blobs) && inside(real, blobs)))
        return m4_fail(err, "%s: the shard is a link to %s (%s), outside the checkpoint folder %s (refused: only "
                            "a Hugging Face cache snapshot's links into its repo's blobs/ folder may leave it)",
                       shard_path, real, stat(real, &st) == 0 ? m4_file_kind(st.st_mode) : "unreadable", folder);
    return open_shard(c, shard_path, err);
}

static int open_index(m4_checkpoint *c, const char *index_path, m4_error *err) {
    char *text;
    size_t size;
    if (m4_file_read_all(index_path, "the safetensors index", M4_SAFETENSORS_MAX_INDEX, "M4_SAFETENSORS_MAX_INDEX",
                         &text, &size, err))
        return -1;
    json_error_t jerr;
    json_t *root = json_loadb(text, size, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root)
        return m4_fail(err, "%s: invalid JSON (line %d, column %d): %s", index_path, jerr.line,
                       jerr.column, jerr.text);
    int rc = 0;
    char *dir = strdup(index_path), **shard_names = NULL;
    size_t n_names = 0;
    json_t *map = json_object_get(root, "weight_map");
    if (!dir) {
        rc = m4_fail(err, "%s: out of memory (%zu bytes)", index_path, strlen(index_path) + 1);
        goto done;
    }
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0; else strcpy(dir, ".");
    if (!json_is_object(map) || json_object_size(map) == 0) {
        rc = m4_fail(err, "%s: \"weight_map\" is missing, empty or not an object", index_path);
        goto done;
    }
    shard_names = calloc(json_object_size(map), sizeof *shard_names);
    if (!shard_names) {
        rc = m4_fail(err, "%s: out of memory (%zu bytes)", index_path, json_object_size(map) * sizeof *shard_names);
        goto done;
    }
    const char *key;
    json_t *value;
    /* Collect the distinct shard files in order of first mention, and open each once. */
    json_object_foreach(map, key, value) {
        const char *file = json_string_value(value);
        if (!file || !safe_shard_name(file)) {
            rc = m4_fail(err, "%s: weight_map[\"%s\"] must be a file name inside the checkpoint "
                              "folder", index_path, key);
            goto done;
        }
        size_t k = 0;
        while (k < n_names && strcmp(shard_names[k], file) != 0) k++;
        if (k < n_names) continue;
        shard_names[n_names++] = (char *)file;
        char *shard_path = path_join(dir, file);
        if (!shard_path) {
            rc = m4_fail(err, "%s: out of memory (%zu bytes)", index_path, strlen(dir) + strlen(file) + 2);
            goto done;
        }
        if (!exists(shard_path)) {
            rc = m4_fail(err, "%s: shard \"%s\" is listed in the index but missing (%s)",
                         index_path, file, shard_path);
            free(shard_path);
            goto done;
        }
        rc = open_shard_of_folder(c, dir, shard_path, err);
        free(shard_path);
        if (rc != 0) goto done;
    }
    /* Every indexed tensor must be in the shard the index names, and every stored tensor indexed. */
    if ((rc = sort_and_check_unique(c, index_path, err)) != 0) goto done;
    json_object_foreach(map, key, value) {
        m4_tensor probe = {.name = key};
        const m4_tensor *t =
            c->n_tensors ? bsearch(&probe, c->tensors, c->n_tensors, sizeof *t, by_name) : NULL;
        /* Shard paths were built as dir + "/" + the index's file name, which may hold a subfolder
         * ("shards/x.safetensors"), so compare the whole relative name, not the basename. */
        size_t dir_len = strlen(dir);
        if (!t || strncmp(t->file, dir, dir_len) != 0 || t->file[dir_len] != '/' ||
            strcmp(t->file + dir_len + 1, json_string_value(value)) != 0) {
            rc = m4_fail(err, "%s: tensor \"%s\" is indexed in shard \"%s\" but not stored there",
                         index_path, key, json_string_value(value));
            goto done;
        }
    }
    for (size_t i = 0; i < c->n_tensors; i++) {
        if (!json_object_get(map, c->tensors[i].name)) {
            rc = m4_fail(err, "%s: tensor \"%s\" is stored in %s but missing from the index",
                         index_path, c->tensors[i].name, c->tensors[i].file);
            goto done;
        }
    }
done:
    free(shard_names);
    free(dir);
    json_decref(root);
    return rc;
}

/* Finds the checkpoint entry point inside a folder. */
static int resolve_folder(const char *dir, char **out, m4_error *err) {
    static const char *candidates[] = {"model.safetensors.index.json", "model.safetensors"};
    for (size_t i = 0; i < sizeof candidates / sizeof *candidates; i++) {
        char *p = path_join(dir, candidates[i]);
        if (!p) return m4_fail(err, "%s: out of memory (%zu bytes)", dir, strlen(dir) + strlen(candidates[i]) + 2);
        if (exists(p)) {
            *out = p;
            return 0;
        }
        free(p);
    }
    return m4_fail(err, "%s: no model.safetensors or model.safetensors.index.json in this folder", dir);
}

int m4_checkpoint_open(const char *path, m4_checkpoint **out, m4_error *err) {
    *out = NULL;
    m4_checkpoint *c = calloc(1, sizeof *c);
    if (!c || !(c->path = strdup(path))) {
        free(c);
        return m4_fail(err, "%s: out of memory (%zu bytes)", path, sizeof *c + strlen(path) + 1);
    }
    char *entry = NULL;
    const bool folder = is_dir(path);
    int rc;
    if (folder) {
        rc = resolve_folder(path, &entry, err);
    } else if (!exists(path)) {
        rc = m4_fail(err, "%s: no such file or folder", path);
    } else {
        entry = strdup(path);
        rc = entry ? 0 : m4_fail(err, "%s: out of memory (%zu bytes)", path, strlen(path) + 1);
    }
    if (rc == 0)
        rc = ends_with(entry, ".json") ? open_index(c, entry, err)
             : folder                  ? open_shard_of_folder(c, path, entry, err)
                                       : open_shard(c, entry, err); /* a file named by the user */
    free(entry);
    if (rc == 0) rc = sort_and_check_unique(c, path, err);
    if (rc != 0) {
        m4_checkpoint_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

int m4_checkpoint_make_resident(m4_checkpoint *c, m4_error *err) {
    const size_t huge = (size_t)2 << 20;
    void **copies = calloc(c->n_shards ? c->n_shards : 1, sizeof *copies);
    size_t *spans = calloc(c->n_shards ? c->n_shards : 1, sizeof *spans);
    if (!copies || !spans) {
        free(copies), free(spans);
        return m4_fail(err, "%s: out of memory (%zu bytes)", c->path, 2 * (c->n_shards ? c->n_shards : 1) * sizeof(void *));
    }
    /* 1. every shard copied, 2 MiB-aligned (a huge page maps only an aligned 2 MiB) */
    for (size_t i = 0; i < c->n_shards; i++) {
        const size_t len = c->shards[i].map_len, reserved = len + huge;
        uint8_t *raw = mmap(NULL, reserved, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (raw == MAP_FAILED) {
            for (size_t k = 0; k < i; k++) munmap(copies[k], spans[k]);
            free(copies), free(spans);
            return m4_fail(err, "%s: cannot hold the weights in memory (%zu bytes): %s", c->shards[i].path, len,
                           strerror(errno));
        }
        uint8_t *aligned = (uint8_t *)(((uintptr_t)raw + huge - 1) & ~(uintptr_t)(huge - 1));
        if (aligned > raw) munmap(raw, (size_t)(aligned - raw));
        const size_t tail = (size_t)(raw + reserved - (aligned + len));
        if (tail) munmap(aligned + len, tail);
#ifdef MADV_HUGEPAGE
        madvise(aligned, len, MADV_HUGEPAGE); /* advice: without it the copy works on 4 KiB pages */
#endif
        memcpy(aligned, c->shards[i].map, len);
        mprotect(aligned, len, PROT_READ);
        copies[i] = aligned, spans[i] = len;
    }
    /* 2. the tensors moved, the file mappings dropped */
    for (size_t t = 0; t < c->n_tensors; t++)
        for (size_t i = 0; i < c->n_shards; i++) {
            const uint8_t *base = c->shards[i].map, *p = c->tensors[t].data;
            if (p >= base && p < base + c->shards[i].map_len) {
                c->tensors[t].data = (const uint8_t *)copies[i] + (p - base);
                break;
            }
        }
    for (size_t i = 0; i < c->n_shards; i++) {
        m4_faults_forget_mapping(c->shards[i].map);
        munmap(c->shards[i].map, c->shards[i].map_len);
        c->shards[i].map = copies[i];
    }
    free(copies), free(spans);
    return 0;
}

void m4_checkpoint_close(m4_checkpoint *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n_tensors; i++) free((char *)c->tensors[i].name);
    for (size_t i = 0; i < c->n_shards; i++) {
        if (c->shards[i].map) {
            m4_faults_forget_mapping(c->shards[i].map); /* (a resident copy was never registered) */
            munmap(c->shards[i].map, c->shards[i].map_len);
        }
        free(c->shards[i].path);
    }
    free(c->tensors);
    free(c->shards);
    free(c->path);
    free(c);
}

size_t m4_checkpoint_tensor_count(const m4_checkpoint *c) { return c->n_tensors; }

const m4_tensor *m4_checkpoint_tensor(const m4_checkpoint *c, size_t i) {
    return i < c->n_tensors ? &c->tensors[i] : NULL;
}

const m4_tensor *m4_checkpoint_find(const m4_checkpoint *c, const char *name) {
    m4_tensor probe = {.name = name};
    if (c->n_tensors == 0) return NULL; /* bsearch(…, NULL, 0, …) is undefined */
    return bsearch(&probe, c->tensors, c->n_tensors, sizeof probe, by_name);
}

size_t m4_checkpoint_shard_count(const m4_checkpoint *c) { return c->n_shards; }

uint64_t m4_checkpoint_data_bytes(const m4_checkpoint *c) { return c->data_bytes; }

const char *m4_checkpoint_path(const m4_checkpoint *c) { return c->path; }
