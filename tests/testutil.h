/* testutil.h — helpers shared by the CMocka tests: temporary folders, writing small files, and
 * writing safetensors checkpoints by hand (so loader tests control every byte). */
#ifndef M4_TESTUTIL_H
#define M4_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

typedef struct {
    const char *name;
    const char *dtype;           /* safetensors spelling, written verbatim (may be invalid) */
    int ndim;
    int64_t shape[4];
    const void *data;
    size_t nbytes;
} m4t_tensor;

/* A fresh folder under $TMPDIR (or /tmp); free() the result after m4t_rmtree. */
char *m4t_tempdir(void);
void m4t_rmtree(const char *dir);

/* A CMocka fixture that is one fresh temporary folder: m4t_dir_setup makes it (*state: an
 * m4t_dir_fixture *), m4t_dir_teardown removes it with everything in it. */
typedef struct {
    char *dir;
} m4t_dir_fixture;
int m4t_dir_setup(void **state);
int m4t_dir_teardown(void **state);

/* dir + "/" + name, malloc'd. */
char *m4t_join(const char *dir, const char *name);

/* Absolute path of a file in the source tree (M4_SOURCE_DIR/rel), malloc'd. */
char *m4t_source_path(const char *rel);

void m4t_write_file(const char *path, const void *data, size_t n);
void m4t_write_text(const char *path, const char *text);

/* Writes a well-formed safetensors file holding `tensors` in order. Fails the test on I/O error. */
void m4t_write_safetensors(const char *path, const m4t_tensor *tensors, size_t n);

/* Writes raw: an 8-byte header length, the header text, then `data`. For malformed files. */
void m4t_write_raw_safetensors(const char *path, uint64_t header_len, const char *header,
                               const void *data, size_t data_len);

/* float → bfloat16 (round to nearest even) and float → FP8 E4M3 (round to nearest even,
 * saturating at ±448), for building test weights. */
uint16_t m4t_f32_to_bf16(float f);
uint8_t m4t_f32_to_f8e4m3(float f);

/* Asserts that `haystack` contains `needle`, printing both when it does not. */
#define m4t_assert_contains(haystack, needle) m4t_assert_contains_impl(haystack, needle, __FILE__, __LINE__)
void m4t_assert_contains_impl(const char *haystack, const char *needle, const char *file, int line);

#endif
