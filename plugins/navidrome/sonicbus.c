/*
 * The sonicbus plugin for Navidrome: Instant Mix, artist and album radio (MetadataAgent)
 * and the OpenSubsonic sonicSimilarity endpoints (SonicSimilarity), answered by sonicbus.
 *
 * Why C, and why so little of it: Navidrome makes a fresh plugin instance for every call, so
 * a plugin's start-up is paid on every Instant Mix. A standard-Go module costs ~12-14 ms to
 * start there (bench/navidrome_mix.py measured the plugin at 2.9x the bridge alone); this
 * freestanding C module starts in microseconds. To keep the C small, the plugin does no
 * JSON work of its own: it forwards Navidrome's request, unchanged, to sonicbus'
 * `POST /navidrome/v1/plugin/<function>` (the plugin's settings go along as headers), and
 * hands sonicbus' answer, already in Navidrome's shape, back unchanged (logging the
 * answer's `warnings` in one line, if any). Everything that
 * needs judgement (settings checks, count bounds, song matching, similarity in [0, 1])
 * lives in sonicbus (pipeline/http/navidrome.py), where it is tested in Python.
 *
 * No libc, no PDK: the Extism kernel functions and Navidrome's `http_send` host function
 * are declared below (their signatures as Extism and Navidrome 0.63.2 define them).
 */

#include <stddef.h>
#include <stdint.h>

#define IMPORT(module, name) __attribute__((import_module(module), import_name(name)))
#define EXPORT(name) __attribute__((export_name(name)))

/* Extism's kernel: the call's input and output, config, logs, and its own memory blocks. */
IMPORT("extism:host/env", "input_length") uint64_t extism_input_length(void);
IMPORT("extism:host/env", "input_load_u8") uint32_t extism_input_load_u8(uint64_t offset);
IMPORT("extism:host/env", "input_load_u64") uint64_t extism_input_load_u64(uint64_t offset);
IMPORT("extism:host/env", "alloc") uint64_t extism_alloc(uint64_t length);
IMPORT("extism:host/env", "free") void extism_free(uint64_t block);
IMPORT("extism:host/env", "length") uint64_t extism_length(uint64_t block);
IMPORT("extism:host/env", "load_u8") uint32_t extism_load_u8(uint64_t offset);
IMPORT("extism:host/env", "load_u64") uint64_t extism_load_u64(uint64_t offset);
IMPORT("extism:host/env", "store_u8") void extism_store_u8(uint64_t offset, uint32_t value);
IMPORT("extism:host/env", "store_u64") void extism_store_u64(uint64_t offset, uint64_t value);
IMPORT("extism:host/env", "output_set") void extism_output_set(uint64_t block, uint64_t length);
IMPORT("extism:host/env", "error_set") void extism_error_set(uint64_t block);
IMPORT("extism:host/env", "config_get") uint64_t extism_config_get(uint64_t key_block);
IMPORT("extism:host/env", "log_info") void extism_log_info(uint64_t block);
IMPORT("extism:host/env", "log_warn") void extism_log_warn(uint64_t block);

/* Navidrome's HTTP host service (permission "http"): JSON in, JSON out, in kernel blocks.
 * Unlike Extism's own http_request it takes a per-request timeout, so a slow sonicbus
 * becomes an error, never a hang. Bodies travel base64-encoded ([]byte in Go's JSON). */
IMPORT("extism:host/user", "http_send") uint64_t navidrome_http_send(uint64_t request_block);

enum {
    DEFAULT_TIMEOUT_MS = 5000,
    MAX_TIMEOUT_MS = 25000, /* Navidrome stops any plugin call after 30 s */
    MAX_DETAIL = 300,       /* bytes of a refusal's body quoted in the log line */
};

/* -- memory: one arena, reset at the start of every call --------------------------------- */

extern unsigned char __heap_base;
static uintptr_t arena_top;

static void *arena_alloc(size_t size) {
    if (arena_top == 0) arena_top = (uintptr_t)&__heap_base;
    uintptr_t start = (arena_top + 7) & ~(uintptr_t)7;
    uintptr_t end = start + size;
    uintptr_t have = __builtin_wasm_memory_size(0) * 65536;
    if (end > have) {
        size_t pages = (end - have + 65535) / 65536;
        if (__builtin_wasm_memory_grow(0, pages) == (size_t)-1) __builtin_trap();
    }
    arena_top = end;
    return (void *)start;
}

static void arena_reset(void) { arena_top = (uintptr_t)&__heap_base; }

/* clang may emit calls to these for copies and fills; there is no libc to provide them. */
void *memcpy(void *dst, const void *src, size_t n) {
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (n--) *d++ = *s++;
    return dst;
}

void *memset(void *dst, int c, size_t n) {
    unsigned char *d = dst;
    while (n--) *d++ = (unsigned char)c;
    return dst;
}

/* -- text: a view (str) and a growing buffer (buf) --------------------------------------- */

typedef struct {
    const char *p;
    size_t len;
} str;

typedef struct {
    char *p;
    size_t len, cap;
} buf;

static size_t cstrlen(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

static str S(const char *s) { return (str){s, cstrlen(s)}; }

static int str_eq(str a, str b) {
    if (a.len != b.len) return 0;
    for (size_t i = 0; i < a.len; i++)
        if (a.p[i] != b.p[i]) return 0;
    return 1;
}

static int starts_with(str s, str prefix) {
    return s.len >= prefix.len && str_eq((str){s.p, prefix.len}, prefix);
}

static int contains(str s, str needle) {
    for (size_t i = 0; i + needle.len <= s.len; i++)
        if (str_eq((str){s.p + i, needle.len}, needle)) return 1;
    return 0;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static str trim(str s) {
    while (s.len && is_space(s.p[0])) s.p++, s.len--;
    while (s.len && is_space(s.p[s.len - 1])) s.len--;
    return s;
}

static void put(buf *b, str s) {
    if (b->len + s.len > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 256);
        while (cap < b->len + s.len) cap *= 2;
        char *p = arena_alloc(cap);
        memcpy(p, b->p, b->len);
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->len, s.p, s.len);
    b->len += s.len;
}

static void putc_(buf *b, char c) { put(b, (str){&c, 1}); }

static void put_uint(buf *b, uint64_t n) {
    char digits[20];
    size_t i = sizeof digits;
    do digits[--i] = (char)('0' + n % 10), n /= 10;
    while (n);
    put(b, (str){digits + i, sizeof digits - i});
}

static str view(buf b) { return (str){b.p, b.len}; }

/* A JSON string literal of s (quotes included). */
static void put_json_string(buf *b, str s) {
    static const char hex[] = "0123456789abcdef";
    putc_(b, '"');
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (c == '"' || c == '\\') {
            putc_(b, '\\'), putc_(b, (char)c);
        } else if (c < 0x20) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            put(b, (str){esc, 6});
        } else {
            putc_(b, (char)c);
        }
    }
    putc_(b, '"');
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void put_base64(buf *b, str s) {
    size_t i = 0;
    for (; i + 3 <= s.len; i += 3) {
        uint32_t v = (uint32_t)(unsigned char)s.p[i] << 16 |
                     (uint32_t)(unsigned char)s.p[i + 1] << 8 | (unsigned char)s.p[i + 2];
        char out[4] = {B64[v >> 18], B64[(v >> 12) & 63], B64[(v >> 6) & 63], B64[v & 63]};
        put(b, (str){out, 4});
    }
    if (i < s.len) {
        uint32_t v = (uint32_t)(unsigned char)s.p[i] << 16;
        if (i + 1 < s.len) v |= (uint32_t)(unsigned char)s.p[i + 1] << 8;
        char out[4] = {B64[v >> 18], B64[(v >> 12) & 63],
                       i + 1 < s.len ? B64[(v >> 6) & 63] : '=', '='};
        put(b, (str){out, 4});
    }
}

/* Decodes standard base64 (padding optional) into out, sized once; 0 when s is not base64. */
static int decode_base64(str s, buf *out) {
    static signed char value[256];
    if (value['B'] == 0) {
        for (int i = 0; i < 256; i++) value[i] = -1;
        for (int i = 0; i < 64; i++) value[(unsigned char)B64[i]] = (signed char)i;
    }
    char *p = arena_alloc(s.len / 4 * 3 + 3);
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < s.len && s.p[i] != '='; i++) {
        int v = value[(unsigned char)s.p[i]];
        if (v < 0) return 0;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            p[n++] = (char)(acc >> bits & 0xff);
        }
    }
    *out = (buf){p, n, n};
    return 1;
}

/* -- JSON, only as much as Navidrome's http_send reply needs ---------------------------- */

static const char *skip_space(const char *p, const char *end) {
    while (p < end && is_space(*p)) p++;
    return p;
}

/* Past the JSON value at p (any kind); NULL when it is malformed. */
static const char *skip_value(const char *p, const char *end) {
    p = skip_space(p, end);
    if (p >= end) return NULL;
    if (*p == '"') {
        for (p++; p < end; p++) {
            if (*p == '\\') p++;
            else if (*p == '"') return p + 1;
        }
        return NULL;
    }
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < end) {
            if (*p == '"') {
                p = skip_value(p, end);
                if (!p) return NULL;
                continue;
            }
            if (*p == '{' || *p == '[') depth++;
            if (*p == '}' || *p == ']') {
                if (--depth == 0) return p + 1;
            }
            p++;
        }
        return NULL;
    }
    while (p < end && *p != ',' && *p != '}' && *p != ']' && !is_space(*p)) p++;
    return p;
}

/* The value of `key` in the JSON object `object` (a view of it), or an empty view. */
static str member(str object, str key) {
    const char *p = skip_space(object.p, object.p + object.len), *end = object.p + object.len;
    if (p >= end || *p != '{') return (str){0, 0};
    p++;
    while (1) {
        p = skip_space(p, end);
        if (p >= end || *p != '"') return (str){0, 0};
        const char *name_end = skip_value(p, end);
        if (!name_end) return (str){0, 0};
        str name = {p + 1, (size_t)(name_end - p - 2)};
        p = skip_space(name_end, end);
        if (p >= end || *p != ':') return (str){0, 0};
        const char *value = skip_space(p + 1, end);
        const char *value_end = skip_value(value, end);
        if (!value_end) return (str){0, 0};
        if (str_eq(name, key)) return (str){value, (size_t)(value_end - value)};
        p = skip_space(value_end, end);
        if (p < end && *p == ',') p++;
    }
}

/* The text of a JSON string value, escapes undone (\uXXXX as UTF-8 for the BMP). */
static str string_value(str json) {
    if (json.len < 2 || json.p[0] != '"') return (str){0, 0};
    str inside = {json.p + 1, json.len - 2};
    if (!contains(inside, S("\\"))) return inside; /* the common case: nothing to undo */
    buf out = {0};
    for (size_t i = 1; i + 1 < json.len; i++) {
        size_t run = i;
        while (run + 1 < json.len && json.p[run] != '\\') run++;
        if (run > i) { /* up to the next escape, copied at once */
            put(&out, (str){json.p + i, run - i});
            i = run - 1;
            continue;
        }
        char c = json.p[++i]; /* json.p[i - 1] is the backslash */
        if (c == 'n') putc_(&out, '\n');
        else if (c == 't') putc_(&out, '\t');
        else if (c == 'r') putc_(&out, '\r');
        else if (c == 'b' || c == 'f') putc_(&out, ' ');
        else if (c == 'u' && i + 4 < json.len) {
            uint32_t code = 0;
            for (int k = 0; k < 4; k++) {
                char h = json.p[++i];
                code = code << 4 | (uint32_t)(h <= '9' ? h - '0' : (h | 32) - 'a' + 10);
            }
            if (code < 0x80) putc_(&out, (char)code);
            else if (code < 0x800) {
                putc_(&out, (char)(0xc0 | code >> 6));
                putc_(&out, (char)(0x80 | (code & 63)));
            } else {
                putc_(&out, (char)(0xe0 | code >> 12));
                putc_(&out, (char)(0x80 | (code >> 6 & 63)));
                putc_(&out, (char)(0x80 | (code & 63)));
            }
        } else putc_(&out, c);
    }
    return view(out);
}

/* The strings of a JSON array of strings, joined by "; " (other items are skipped). */
static str joined_strings(str array) {
    buf out = {0};
    const char *p = array.p, *end = array.p + array.len;
    if (!array.len || *p != '[') return (str){0, 0};
    for (p++;;) {
        p = skip_space(p, end);
        if (p >= end || *p == ']') break;
        const char *item_end = skip_value(p, end);
        if (!item_end) break;
        if (*p == '"') {
            if (out.len) put(&out, S("; "));
            put(&out, string_value((str){p, (size_t)(item_end - p)}));
        }
        p = skip_space(item_end, end);
        if (p < end && *p == ',') p++;
    }
    return view(out);
}

/* A whole number at the start of s ("1500", "1500.0", "\"1500\""); -1 when there is none. */
static int64_t whole_number(str s) {
    s = trim(s);
    if (s.len >= 2 && s.p[0] == '"') s = trim((str){s.p + 1, s.len - 2});
    int64_t n = -1;
    for (size_t i = 0; i < s.len && s.p[i] >= '0' && s.p[i] <= '9' && n < 1000000000; i++)
        n = (n < 0 ? 0 : n * 10) + (s.p[i] - '0');
    return n;
}

/* -- the Extism kernel: blocks, input, output, config, log ------------------------------ */

static uint64_t to_block(str s) {
    uint64_t block = extism_alloc(s.len);
    size_t i = 0;
    for (; i + 8 <= s.len; i += 8) {
        uint64_t word = 0;
        for (int k = 7; k >= 0; k--) word = word << 8 | (unsigned char)s.p[i + (size_t)k];
        extism_store_u64(block + i, word);
    }
    for (; i < s.len; i++) extism_store_u8(block + i, (unsigned char)s.p[i]);
    return block;
}

static str from_block(uint64_t block) {
    size_t len = block ? (size_t)extism_length(block) : 0;
    char *p = arena_alloc(len + 1);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t word = extism_load_u64(block + i);
        for (int k = 0; k < 8; k++) p[i + (size_t)k] = (char)(word >> (8 * k));
    }
    for (; i < len; i++) p[i] = (char)extism_load_u8(block + i);
    return (str){p, len};
}

static str read_input(void) {
    size_t len = (size_t)extism_input_length();
    char *p = arena_alloc(len + 1);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t word = extism_input_load_u64(i);
        for (int k = 0; k < 8; k++) p[i + (size_t)k] = (char)(word >> (8 * k));
    }
    for (; i < len; i++) p[i] = (char)extism_input_load_u8(i);
    return (str){p, len};
}

/* A config value (Navidrome passes a non-string value as its JSON text); empty if unset. */
static str config(const char *key) {
    uint64_t key_block = to_block(S(key));
    uint64_t value_block = extism_config_get(key_block);
    extism_free(key_block);
    str value = from_block(value_block);
    if (value_block) extism_free(value_block);
    return trim(value);
}

/* Logs the one line that says why a call gave no answer and makes it the call's error:
 * Navidrome then falls back to its other agents, or answers the sonic endpoints with an
 * error. No elapsed time in it: the plugin's clock does not advance during host calls. */
static int32_t fail(str label, str reason) {
    buf line = {0};
    put(&line, S("sonicbus plugin: "));
    put(&line, label);
    put(&line, S(" gave no answer: "));
    put(&line, reason);
    extism_log_warn(to_block(view(line))); /* the host may free a logged block: two blocks */
    extism_error_set(to_block(view(line)));
    return 1;
}

/* -- the call ---------------------------------------------------------------------------- */

typedef struct {
    str url, token, timeout_ms;
    int64_t timeout;
} settings;

static str load_settings(settings *s) {
    s->url = config("sonicbus_url");
    while (s->url.len && s->url.p[s->url.len - 1] == '/') s->url.len--;
    if (!s->url.len) return S("sonicbus_url is not configured (plugin settings in Navidrome)");
    if (!starts_with(s->url, S("http://")) && !starts_with(s->url, S("https://")))
        return S("sonicbus_url must start with http:// or https://");
    s->token = config("token");
    s->timeout = DEFAULT_TIMEOUT_MS;
    str raw = config("timeout_ms");
    if (raw.len) {
        s->timeout = whole_number(raw);
        if (s->timeout <= 0) return S("timeout_ms is not a positive number");
        if (s->timeout > MAX_TIMEOUT_MS) s->timeout = MAX_TIMEOUT_MS;
    }
    buf timeout = {0};
    put_uint(&timeout, (uint64_t)s->timeout);
    s->timeout_ms = view(timeout);
    return (str){0, 0};
}

static void put_header(buf *b, const char *name, str value) {
    putc_(b, ',');
    put_json_string(b, S(name));
    putc_(b, ':');
    put_json_string(b, value);
}

/* The http_send request: POST {url}/navidrome/v1/plugin/{function} with Navidrome's input
 * as the body and the plugin's settings as headers (sonicbus checks them). */
static str http_request(const settings *s, str function, str input) {
    buf b = {0};
    put(&b, S("{\"request\":{\"method\":\"POST\",\"url\":"));
    buf url = {0};
    put(&url, s->url);
    put(&url, S("/navidrome/v1/plugin/"));
    put(&url, function);
    put_json_string(&b, view(url));
    put(&b, S(",\"headers\":{\"Content-Type\":\"application/json\""));
    put_header(&b, "Accept", S("application/json"));
    put_header(&b, "X-Sonicbus-Timeout-Ms", s->timeout_ms);
    if (s->token.len) {
        buf bearer = {0};
        put(&bearer, S("Bearer "));
        put(&bearer, s->token);
        put_header(&b, "Authorization", view(bearer));
    }
    static const char *const forwarded[][2] = {
        {"models", "X-Sonicbus-Models"},
        {"diversity", "X-Sonicbus-Diversity"},
        {"max_per_artist", "X-Sonicbus-Max-Per-Artist"},
    };
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++) {
        str value = config(forwarded[i][0]);
        if (value.len) put_header(&b, forwarded[i][1], value);
    }
    put(&b, S("},\"noFollowRedirects\":true,\"body\":\""));
    put_base64(&b, input);
    put(&b, S("\",\"timeoutMs\":"));
    put(&b, s->timeout_ms);
    put(&b, S("}}"));
    return view(b);
}

/* Why Navidrome's HTTP service gave no response, with what to do about it. */
static str transport_failure(const settings *s, str error) {
    buf reason = {0};
    if (contains(error, S("deadline exceeded")) || contains(error, S("Client.Timeout"))) {
        put(&reason, S("no reply from "));
        put(&reason, s->url);
        put(&reason, S(" within timeout_ms="));
        put(&reason, s->timeout_ms);
        return view(reason);
    }
    put(&reason, error.len ? error : S("Navidrome's HTTP service gave an unreadable reply"));
    if (contains(error, S("not allowed")))
        put(&reason, S(" (the plugin's manifest must list sonicbus' host under "
                       "permissions.http.requiredHosts: reinstall it with "
                       "`sonicbus navidrome install-plugin`)"));
    return view(reason);
}

/* What sonicbus said when it did not answer 200. */
static str refusal(const settings *s, str function, int64_t status, str body) {
    buf reason = {0};
    put(&reason, s->url);
    put(&reason, S("/navidrome/v1/plugin/"));
    put(&reason, function);
    put(&reason, S(" answered HTTP "));
    put_uint(&reason, (uint64_t)(status < 0 ? 0 : status));
    if (status == 401 || status == 403)
        put(&reason, S(" (check the plugin's token: it must be sonicbus' client token)"));
    put(&reason, S(": "));
    body = trim(body);
    if (body.len > MAX_DETAIL) {
        put(&reason, (str){body.p, MAX_DETAIL});
        put(&reason, S("..."));
    } else {
        put(&reason, body);
    }
    return view(reason);
}

static int32_t answer(str json) {
    extism_output_set(to_block(json), json.len);
    return 0;
}

/* Navidrome's call of nd_<function>, answered by sonicbus; `nothing` is the function's empty
 * answer, given at once when Navidrome asks for no songs (count <= 0). */
static int32_t forward(const char *function_name, const char *label_text, const char *nothing) {
    arena_reset();
    str function = S(function_name), label = S(label_text);
    settings s;
    str problem = load_settings(&s);
    if (problem.len) return fail(label, problem);
    str input = read_input();
    if (whole_number(member(input, S("count"))) <= 0) return answer(S(nothing));

    uint64_t request = to_block(http_request(&s, function, input));
    uint64_t response_block = navidrome_http_send(request);
    extism_free(request);
    str response = from_block(response_block);
    if (response_block) extism_free(response_block);

    str result = member(response, S("result"));
    if (!result.len || result.p[0] != '{')
        return fail(label, transport_failure(&s, string_value(member(response, S("error")))));
    int64_t status = whole_number(member(result, S("statusCode")));
    buf body = {0};
    str encoded = string_value(member(result, S("body")));
    if (!decode_base64(encoded, &body))
        return fail(label, S("Navidrome's HTTP service gave a body that is not base64"));
    if (status != 200) return fail(label, refusal(&s, function, status, view(body)));

    /* What sonicbus noted (a count clamped, a seed it does not know): one info line. */
    str warnings = joined_strings(member(view(body), S("warnings")));
    if (warnings.len) {
        buf line = {0};
        put(&line, S("sonicbus plugin: "));
        put(&line, label);
        put(&line, S(": "));
        put(&line, warnings);
        extism_log_info(to_block(view(line)));
    }
    return answer(view(body));
}

/* -- the exports: Navidrome detects the capabilities from these names ------------------- */

#define NO_MATCHES "{\"matches\":[]}"
#define NO_SONGS "{\"songs\":[]}"

EXPORT("nd_get_sonic_similar_tracks") int32_t nd_get_sonic_similar_tracks(void) {
    return forward("get_sonic_similar_tracks", "getSonicSimilarTracks", NO_MATCHES);
}

EXPORT("nd_find_sonic_path") int32_t nd_find_sonic_path(void) {
    return forward("find_sonic_path", "findSonicPath", NO_MATCHES);
}

EXPORT("nd_get_similar_songs_by_track") int32_t nd_get_similar_songs_by_track(void) {
    return forward("get_similar_songs_by_track", "similar songs by track", NO_SONGS);
}

EXPORT("nd_get_similar_songs_by_album") int32_t nd_get_similar_songs_by_album(void) {
    return forward("get_similar_songs_by_album", "similar songs by album", NO_SONGS);
}

EXPORT("nd_get_similar_songs_by_artist") int32_t nd_get_similar_songs_by_artist(void) {
    return forward("get_similar_songs_by_artist", "similar songs by artist", NO_SONGS);
}
