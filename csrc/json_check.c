/* json_check.c - strict JSON syntax check (what Python's json.loads accepts,
 * NaN/Infinity included, within three limits: nesting at most
 * HIMAE_JSON_MAX_DEPTH deep, numbers at most HIMAE_JSON_MAX_NUMBER
 * characters long and no unpaired surrogate escape, so that text that passes
 * here always loads in Python, whatever its recursion and integer-digit
 * limits, as printable text) and key lookup in an object. Nothing is built: values are byte spans of the checked text. */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "json_check.h"

typedef struct {
    const uint8_t *s;
    size_t n, i;
    const char *why; /* the first problem found, or NULL */
} cursor;

static int bad(cursor *c, const char *why) {
    if (!c->why) c->why = why;
    return 0;
}

static void skip_ws(cursor *c) {
    while (c->i < c->n && (c->s[c->i] == ' ' || c->s[c->i] == '\t' || c->s[c->i] == '\n' ||
                           c->s[c->i] == '\r'))
        c->i++;
}

static int take(cursor *c, const char *lit) {
    size_t len = strlen(lit);
    if (c->n - c->i < len || memcmp(c->s + c->i, lit, len) != 0) return 0;
    c->i += len;
    return 1;
}

static int is_digit(uint8_t ch) { return ch >= '0' && ch <= '9'; }

static int number_body(cursor *c);

static int hex(uint8_t ch) {
    return is_digit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/* The code unit of the 4 hex digits at the cursor (then past them), or -1. */
static long hex4(cursor *c) {
    if (c->n - c->i < 4) return -1;
    long cp = 0;
    for (int k = 0; k < 4; k++) {
        uint8_t h = c->s[c->i + k];
        if (!hex(h)) return -1;
        cp = cp * 16 + (h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
    }
    c->i += 4;
    return cp;
}

static int parse_string(cursor *c) {
    c->i++; /* opening quote */
    while (c->i < c->n) {
        uint8_t ch = c->s[c->i++];
        if (ch == '"') return 1;
        if (ch < 0x20) return 0;
        if (ch == '\\') {
            if (c->i >= c->n) return 0;
            uint8_t e = c->s[c->i++];
            if (e == 'u') {
                long cp = hex4(c);
                if (cp < 0) return 0;
                /* Strings are Unicode text: a surrogate escape only as a high-low pair
                 * (Python would take a lone one, and then fail to print or encode it). */
                if (cp >= 0xDC00 && cp <= 0xDFFF) return bad(c, "unpaired surrogate");
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    long low = c->n - c->i >= 2 && c->s[c->i] == '\\' && c->s[c->i + 1] == 'u' ? (c->i += 2, hex4(c)) : -1;
                    if (low < 0xDC00 || low > 0xDFFF) return bad(c, "unpaired surrogate");
                }
            } else if (!strchr("\"\\/bfnrt", e) || e == 0) {
                return 0;
            }
        }
    }
    return 0;
}

static int parse_number(cursor *c) {
    size_t begin = c->i;
    if (!number_body(c)) return 0;
    return c->i - begin <= HIMAE_JSON_MAX_NUMBER || bad(c, "number too long");
}

static int number_body(cursor *c) {
    if (c->i < c->n && c->s[c->i] == '-') {
        c->i++;
        if (take(c, "Infinity")) return 1;
    }
    if (c->i >= c->n || !is_digit(c->s[c->i])) return 0;
    if (c->s[c->i] == '0') {
        c->i++;
    } else {
        while (c->i < c->n && is_digit(c->s[c->i])) c->i++;
    }
    if (c->i < c->n && c->s[c->i] == '.') {
        size_t start = ++c->i;
        while (c->i < c->n && is_digit(c->s[c->i])) c->i++;
        if (c->i == start) return 0;
    }
    if (c->i < c->n && (c->s[c->i] == 'e' || c->s[c->i] == 'E')) {
        c->i++;
        if (c->i < c->n && (c->s[c->i] == '+' || c->s[c->i] == '-')) c->i++;
        size_t start = c->i;
        while (c->i < c->n && is_digit(c->s[c->i])) c->i++;
        if (c->i == start) return 0;
    }
    return 1;
}

static int parse_value(cursor *c, int depth);

static int parse_container(cursor *c, int depth, uint8_t close, int is_object) {
    if (depth >= HIMAE_JSON_MAX_DEPTH) return bad(c, "nested too deeply");
    c->i++;
    skip_ws(c);
    if (c->i < c->n && c->s[c->i] == close) {
        c->i++;
        return 1;
    }
    for (;;) {
        skip_ws(c);
        if (is_object) {
            if (c->i >= c->n || c->s[c->i] != '"' || !parse_string(c)) return 0;
            skip_ws(c);
            if (c->i >= c->n || c->s[c->i] != ':') return 0;
            c->i++;
            skip_ws(c);
        }
        if (!parse_value(c, depth + 1)) return 0;
        skip_ws(c);
        if (c->i >= c->n) return 0;
        if (c->s[c->i] == close) {
            c->i++;
            return 1;
        }
        if (c->s[c->i] != ',') return 0;
        c->i++;
    }
}

static int parse_value(cursor *c, int depth) {
    if (c->i >= c->n) return 0;
    switch (c->s[c->i]) {
    case '{': return parse_container(c, depth, '}', 1);
    case '[': return parse_container(c, depth, ']', 0);
    case '"': return parse_string(c);
    case 't': return take(c, "true");
    case 'f': return take(c, "false");
    case 'n': return take(c, "null");
    case 'N': return take(c, "NaN");
    case 'I': return take(c, "Infinity");
    default: return parse_number(c);
    }
}

/* Where s[0, n) stops being strict UTF-8 (no overlongs, surrogates or code
 * points past U+10FFFF): n when it is all valid. */
static size_t utf8_end(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        size_t len;
        uint32_t cp;
        if (b < 0x80) {
            i++;
            continue;
        } else if (b >= 0xC2 && b <= 0xDF) {
            len = 2, cp = b & 0x1F;
        } else if (b >= 0xE0 && b <= 0xEF) {
            len = 3, cp = b & 0x0F;
        } else if (b >= 0xF0 && b <= 0xF4) {
            len = 4, cp = b & 0x07;
        } else {
            return i;
        }
        if (n - i < len) return i;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return i;
        i += len;
    }
    return n;
}

const char *himae_json_check_object(const uint8_t *s, size_t n, size_t *at) {
    const uint8_t *nul = memchr(s, 0, n);
    *at = nul ? (size_t)(nul - s) : utf8_end(s, n);
    if (nul) return "holds a NUL byte";
    if (*at < n) return "not UTF-8";
    cursor c = {s, n, 0, NULL};
    skip_ws(&c);
    int ok = c.i < c.n && c.s[c.i] == '{' ? parse_value(&c, 0) : bad(&c, "not an object");
    if (ok) skip_ws(&c);
    if (ok && c.i != c.n) bad(&c, "extra data");
    *at = c.i;
    return ok && c.i == c.n ? NULL : c.why ? c.why : "invalid JSON";
}

/* Next code point of a JSON string body at *i (escapes decoded), or -1 at
 * the closing quote. The text is already validated. */
static long next_char(const uint8_t *s, size_t *i) {
    uint8_t ch = s[*i];
    if (ch == '"') return -1;
    if (ch != '\\') {
        size_t len = ch < 0x80 ? 1 : ch < 0xE0 ? 2 : ch < 0xF0 ? 3 : 4;
        long cp = len == 1 ? ch : ch & (0x7F >> len);
        for (size_t k = 1; k < len; k++) cp = (cp << 6) | (s[*i + k] & 0x3F);
        *i += len;
        return cp;
    }
    uint8_t e = s[*i + 1];
    *i += 2;
    if (e == 'u') {
        char hexs[5] = {(char)s[*i], (char)s[*i + 1], (char)s[*i + 2], (char)s[*i + 3], 0};
        *i += 4;
        return strtol(hexs, NULL, 16);
    }
    switch (e) {
    case 'b': return '\b';
    case 'f': return '\f';
    case 'n': return '\n';
    case 'r': return '\r';
    case 't': return '\t';
    default: return e;
    }
}

int himae_json_string_equals(const uint8_t *s, size_t n, himae_json_span v, const char *text) {
    (void)n;
    if (v.start >= v.end || s[v.start] != '"') return 0;
    size_t i = v.start + 1, k = 0;
    for (long cp; (cp = next_char(s, &i)) >= 0; k++)
        if (text[k] == 0 || cp != (unsigned char)text[k]) return 0;
    return text[k] == 0;
}

int himae_json_get(const uint8_t *s, size_t n, himae_json_span obj, const char *key,
                   himae_json_span *value) {
    if (obj.start >= obj.end || s[obj.start] != '{') return 0;
    cursor c = {s, n, obj.start + 1, NULL};
    int found = 0;
    for (;;) {
        skip_ws(&c);
        if (s[c.i] == '}') return found;
        if (s[c.i] == ',') {
            c.i++;
            skip_ws(&c);
        }
        himae_json_span k = {c.i, 0};
        parse_string(&c);
        k.end = c.i;
        skip_ws(&c);
        c.i++; /* ':' */
        skip_ws(&c);
        himae_json_span v = {c.i, 0};
        parse_value(&c, 0);
        v.end = c.i;
        if (himae_json_string_equals(s, n, k, key)) { /* the last duplicate wins, as in Python */
            *value = v;
            found = 1;
        }
    }
}

int himae_json_kind(const uint8_t *s, himae_json_span v) {
    return v.start < v.end ? s[v.start] : 0;
}

size_t himae_json_array_items(const uint8_t *s, size_t n, himae_json_span arr,
                              himae_json_span *items, size_t max_items) {
    cursor c = {s, n, arr.start + 1, NULL};
    size_t count = 0;
    for (;;) {
        skip_ws(&c);
        if (s[c.i] == ']') return count;
        if (s[c.i] == ',') {
            c.i++;
            skip_ws(&c);
        }
        himae_json_span v = {c.i, 0};
        parse_value(&c, 0);
        v.end = c.i;
        if (count < max_items) items[count] = v;
        count++;
    }
}

int himae_json_number(const uint8_t *s, himae_json_span v, double *out) {
    uint8_t ch = s[v.start];
    if (ch == 't' || ch == 'f') { /* Python counts true / false as 1 / 0 */
        *out = ch == 't';
        return 1;
    }
    if (ch == 'N') {
        *out = NAN;
        return 1;
    }
    if (ch == 'I' || (ch == '-' && s[v.start + 1] == 'I')) {
        *out = ch == '-' ? -INFINITY : INFINITY;
        return 1;
    }
    if (ch != '-' && !(ch >= '0' && ch <= '9')) return 0;
    char buf[HIMAE_JSON_MAX_NUMBER + 1];
    size_t len = v.end - v.start;
    if (len > HIMAE_JSON_MAX_NUMBER) return 0; /* checked text has none */
    memcpy(buf, s + v.start, len);
    buf[len] = 0;
    *out = strtod(buf, NULL);
    return 1;
}
