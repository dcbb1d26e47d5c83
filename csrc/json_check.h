/* json_check.h - JSON validation (Python json.loads rules) and lookups. */
#ifndef HIMAE_JSON_CHECK_H
#define HIMAE_JSON_CHECK_H
#include <stddef.h>
#include <stdint.h>

/* A value's bytes [start, end) inside checked JSON text. */
typedef struct himae_json_span {
    size_t start, end;
} himae_json_span;

/* Limits of checked text: nesting depth of objects and arrays, and the
 * length of a number literal (Python's json.loads stops near its recursion
 * limit and refuses integers past its digit limit, 640 at the lowest); and
 * surrogate escapes come in high-low pairs. */
#define HIMAE_JSON_MAX_DEPTH 64
#define HIMAE_JSON_MAX_NUMBER 100

/* NULL when s[0, n) is exactly one JSON object (UTF-8, no NUL, within the
 * limits above); else what is wrong, with the byte offset where it was
 * found in *at. Everything below assumes text that passed this check. */
const char *himae_json_check_object(const uint8_t *s, size_t n, size_t *at);
/* The value of `key` in object `obj` (the last one if repeated). */
int himae_json_get(const uint8_t *s, size_t n, himae_json_span obj, const char *key,
                   himae_json_span *value);
/* First byte of a value: '{', '[', '"', 't', 'f', 'n', a digit, '-', 'N', 'I'. */
int himae_json_kind(const uint8_t *s, himae_json_span v);
/* Is v a string equal to text (escapes decoded)? */
int himae_json_string_equals(const uint8_t *s, size_t n, himae_json_span v, const char *text);
/* Items of array arr (up to max_items stored); returns the item count. */
size_t himae_json_array_items(const uint8_t *s, size_t n, himae_json_span arr,
                              himae_json_span *items, size_t max_items);
/* A number (true/false as 1/0, NaN, +-Infinity) as a double; 0 if not numeric. */
int himae_json_number(const uint8_t *s, himae_json_span v, double *out);
#endif
