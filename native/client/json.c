#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void grow(struct buf *b, size_t more) {
    if (b->failed)
        return;
    if (b->len + more + 1 > MAX_MESSAGE) {
        b->failed = 1;
        return;
    }
    if (b->len + more + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + more + 1)
            cap *= 2;
        char *data = realloc(b->data, cap);
        if (!data) {
            b->failed = 1;
            return;
        }
        b->data = data;
        b->cap = cap;
    }
}

static void put(struct buf *b, const char *text, size_t n) {
    grow(b, n);
    if (b->failed)
        return;
    memcpy(b->data + b->len, text, n);
    b->len += n;
    b->data[b->len] = 0;
}

void buf_raw(struct buf *b, const char *text) { put(b, text, strlen(text)); }

void buf_long(struct buf *b, long long value) {
    char text[32];
    snprintf(text, sizeof text, "%lld", value);
    buf_raw(b, text);
}

/* Length of the UTF-8 sequence at ``s``, or 0 if it is not one (Python's json would
 * need surrogate escapes for it: such a run is the Python client's). */
static size_t utf8_length(const unsigned char *s) {
    size_t n;
    unsigned int c = s[0];
    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0 && c >= 0xC2)
        n = 2;
    else if ((c & 0xF0) == 0xE0)
        n = 3;
    else if ((c & 0xF8) == 0xF0 && c <= 0xF4)
        n = 4;
    else
        return 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    if (n == 3 && ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] >= 0xA0)))
        return 0; /* overlong, or a surrogate */
    if (n == 4 && ((c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] >= 0x90)))
        return 0;
    return n;
}

void buf_str(struct buf *b, const char *text) {
    const unsigned char *s = (const unsigned char *)text;
    put(b, "\"", 1);
    while (*s && !b->failed) {
        if (*s == '"' || *s == '\\') {
            char escaped[2] = {'\\', (char)*s};
            put(b, escaped, 2);
            s++;
        } else if (*s < 0x20) {
            char escaped[8];
            snprintf(escaped, sizeof escaped, "\\u%04x", *s);
            put(b, escaped, 6);
            s++;
        } else {
            size_t n = utf8_length(s);
            if (n == 0) {
                b->failed = 1;
                return;
            }
            put(b, (const char *)s, n);
            s += n;
        }
    }
    put(b, "\"", 1);
}

static const char *space(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

static const char *skip_string(const char *p) {
    for (p++; *p && *p != '"'; p++)
        if (*p == '\\' && p[1])
            p++;
    return *p ? p + 1 : NULL;
}

/* Past the value at ``p`` (any kind, nested or not), or NULL if it is cut short. */
static const char *skip_value(const char *p) {
    p = space(p);
    if (*p == '"')
        return skip_string(p);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (*p) {
            if (*p == '"') {
                p = skip_string(p);
                if (!p)
                    return NULL;
                continue;
            }
            if (*p == '{' || *p == '[')
                depth++;
            else if (*p == '}' || *p == ']') {
                if (--depth == 0)
                    return p + 1;
            }
            p++;
        }
        return NULL;
    }
    while (*p && *p != ',' && *p != '}' && *p != ']')
        p++;
    return p;
}

const char *json_get(const char *msg, const char *key) {
    const char *p = space(msg);
    if (*p != '{')
        return NULL;
    p = space(p + 1);
    char name[64];
    while (*p == '"') {
        if (json_string(p, name, sizeof name) < 0)
            return NULL;
        p = skip_string(p);
        if (!p)
            return NULL;
        p = space(p);
        if (*p != ':')
            return NULL;
        p = space(p + 1);
        if (strcmp(name, key) == 0)
            return p;
        p = skip_value(p);
        if (!p)
            return NULL;
        p = space(p);
        if (*p != ',')
            return NULL;
        p = space(p + 1);
    }
    return NULL;
}

static int hex4(const char *p, unsigned int *value) {
    *value = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        unsigned int digit;
        if (c >= '0' && c <= '9')
            digit = (unsigned int)(c - '0');
        else if (c >= 'a' && c <= 'f')
            digit = (unsigned int)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            digit = (unsigned int)(c - 'A' + 10);
        else
            return -1;
        *value = *value * 16 + digit;
    }
    return 0;
}

static size_t encode(unsigned int c, char *out) {
    if (c < 0x80) {
        out[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (char)(0xC0 | (c >> 6));
        out[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        out[0] = (char)(0xE0 | (c >> 12));
        out[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        out[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (c >> 18));
    out[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    out[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

int json_string(const char *p, char *out, size_t size) {
    size_t n = 0;
    if (!p || *p != '"' || size == 0)
        return -1;
    for (p++; *p && *p != '"'; p++) {
        char piece[4];
        size_t len = 1;
        piece[0] = *p;
        if (*p == '\\') {
            p++;
            switch (*p) {
            case 'n': piece[0] = '\n'; break;
            case 't': piece[0] = '\t'; break;
            case 'r': piece[0] = '\r'; break;
            case 'b': piece[0] = '\b'; break;
            case 'f': piece[0] = '\f'; break;
            case 'u': {
                unsigned int c, low;
                if (hex4(p + 1, &c) < 0)
                    return -1;
                p += 4;
                if (c >= 0xD800 && c < 0xDC00 && p[1] == '\\' && p[2] == 'u' && hex4(p + 3, &low) == 0 &&
                    low >= 0xDC00 && low < 0xE000) {
                    c = 0x10000 + ((c - 0xD800) << 10) + (low - 0xDC00);
                    p += 6;
                }
                len = encode(c, piece);
                break;
            }
            case 0: return -1;
            default: piece[0] = *p; /* " \ / */
            }
        }
        if (n + len < size) {
            memcpy(out + n, piece, len);
            n += len;
        }
    }
    out[n] = 0;
    return *p == '"' ? 0 : -1;
}

const char *json_first(const char *p) {
    if (!p || *p != '[')
        return NULL;
    p = space(p + 1);
    return *p == ']' ? NULL : p;
}

const char *json_next(const char *p) {
    p = skip_value(p);
    if (!p)
        return NULL;
    p = space(p);
    return *p == ',' ? space(p + 1) : NULL;
}
