/* safetensors.h — a Hugging Face checkpoint opened with mmap: one file or a sharded set.
 *
 * File format: 8-byte little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
 * then the data section; offsets are relative to the start of the data section.
 * Opening reads only headers (O(header)): tensor data stays in the page cache until a caller
 * touches it. Every offset, shape and byte count is validated at open. */
#ifndef M4_SAFETENSORS_H
#define M4_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "m4_error.h"

/* Most dimensions a stored tensor may have (docs/INPUTS.md lists every limit of the loader). */
#define M4_MAX_DIMS 8

/* Largest JSON header accepted. Real headers are ~100 bytes a tensor; the published 119B
 * checkpoint's largest shard header is well below 1 MiB. */
#define M4_SAFETENSORS_MAX_HEADER (100u << 20)

/* Largest model.safetensors.index.json accepted (the published checkpoint's is ~2 MiB). */
#define M4_SAFETENSORS_MAX_INDEX (100L << 20)

typedef struct {
    const char *name;            /* as stored on disk */
    m4_dtype dtype;
    int ndim;
    int64_t shape[M4_MAX_DIMS];
    int64_t numel;
    const void *data;            /* into the mmap */
    uint64_t nbytes;
    const char *file;            /* path of the shard that holds it */
} m4_tensor;

typedef struct m4_checkpoint m4_checkpoint;

/* Opens `path`: a .safetensors file, a model.safetensors.index.json, or a folder holding either
 * (the index is preferred when both exist). All shards listed by an index must exist, every
 * tensor the index names must be in the shard it names, and no name may appear twice. */
int m4_checkpoint_open(const char *path, m4_checkpoint **out, m4_error *err);

void m4_checkpoint_close(m4_checkpoint *ckpt);

size_t m4_checkpoint_tensor_count(const m4_checkpoint *ckpt);

/* Tensors sorted by name; i < m4_checkpoint_tensor_count. */
const m4_tensor *m4_checkpoint_tensor(const m4_checkpoint *ckpt, size_t i);

/* NULL when absent. O(log n). */
const m4_tensor *m4_checkpoint_find(const m4_checkpoint *ckpt, const char *name);

/* Number of files (1 for a single .safetensors). */
size_t m4_checkpoint_shard_count(const m4_checkpoint *ckpt);

/* Total bytes of tensor data mapped, over all shards. */
uint64_t m4_checkpoint_data_bytes(const m4_checkpoint *ckpt);

/* Copies every shard into anonymous memory advised to transparent huge pages, and points every
 * tensor there (the file mappings are dropped): weights that a decode step streams whole then
 * cost fewer TLB misses than through the page cache's 4 KiB pages (docs/PERF.md: a 1 GiB BF16
 * lm_head read at 19 GB/s mapped, 22–24 GB/s resident, one core). The bytes are the file's; the
 * memory is the checkpoint's size, held until close. Call before binding a model to it (the
 * tensors' data pointers move). -1 with err (the checkpoint unchanged) when memory runs out. */
int m4_checkpoint_make_resident(m4_checkpoint *ckpt, m4_error *err);

/* What was opened (the folder or file given), for messages. */
const char *m4_checkpoint_path(const m4_checkpoint *ckpt);

#endif
