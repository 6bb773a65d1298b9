/*
 * A Navidrome plugin that does no work, for bench/navidrome_mix.py: its Instant Mix
 * (nd_get_similar_songs_by_track) answers the config value `answer` as it is, with no HTTP
 * call. Timed through Navidrome, it shows what Navidrome itself costs for an Instant Mix
 * answered by a plugin (the call, a fresh instance, resolving the songs, the response):
 * the floor under any plugin, sonicbus' included.
 */

#include <stdint.h>

#define IMPORT(name) __attribute__((import_module("extism:host/env"), import_name(name)))

IMPORT("alloc") uint64_t extism_alloc(uint64_t length);
IMPORT("store_u8") void extism_store_u8(uint64_t offset, uint32_t value);
IMPORT("config_get") uint64_t extism_config_get(uint64_t key_block);
IMPORT("length") uint64_t extism_length(uint64_t block);
IMPORT("output_set") void extism_output_set(uint64_t block, uint64_t length);

__attribute__((export_name("nd_get_similar_songs_by_track"))) int32_t answer(void) {
    static const char key[] = "answer";
    uint64_t block = extism_alloc(sizeof key - 1);
    for (uint64_t i = 0; i < sizeof key - 1; i++) extism_store_u8(block + i, (uint8_t)key[i]);
    uint64_t value = extism_config_get(block);
    if (!value) return 1;
    extism_output_set(value, extism_length(value));
    return 0;
}
