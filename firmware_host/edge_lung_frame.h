/*
 * edge-lung serial PCM protocol, version 1: reference frame encoder for firmware authors.
 * Byte-by-byte description: firmware_host/PROTOCOL.md. Portable C99, no allocation, no tables.
 *
 *   uint8_t buf[ELF_FRAME_SIZE(256)];
 *   size_t len = elf_encode_frame(buf, sizeof buf, seq++, 16000, samples, 256);
 *   if (len) cdc_write(buf, len);   // 0 means bad arguments or buffer too small
 *
 * Increment `seq` for every frame, including frames you drop: the host counts the gaps.
 */
#ifndef EDGE_LUNG_FRAME_H
#define EDGE_LUNG_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define ELF_VERSION 1u
#define ELF_HEADER_SIZE 16u
#define ELF_CRC_SIZE 4u
#define ELF_MAX_SAMPLES 4096u
#define ELF_MAX_RATE 384000u
#define ELF_FRAME_SIZE(n) (ELF_HEADER_SIZE + 2u * (size_t)(n) + ELF_CRC_SIZE)

static const uint8_t ELF_SYNC[4] = {0xA5, 0x5A, 0xC3, 0x3C};

/* CRC-32 (IEEE 802.3, reflected 0xEDB88320, init and final XOR 0xFFFFFFFF); same as zlib.crc32. */
static inline uint32_t elf_crc32(const uint8_t *data, size_t len) {
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) {
        crc ^= data[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return crc ^ 0xFFFFFFFFu;
}

static inline void elf_put_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)(v >> 8);
}

static inline void elf_put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)((v >> (8 * i)) & 0xFFu);
}

/* Writes one frame into out; returns its length, or 0 if n, rate or out_size is out of range. */
static inline size_t elf_encode_frame(uint8_t *out, size_t out_size, uint32_t sequence, uint32_t sample_rate,
                                      const int16_t *samples, size_t n) {
    if (n < 1 || n > ELF_MAX_SAMPLES || sample_rate < 1 || sample_rate > ELF_MAX_RATE) return 0;
    size_t size = ELF_FRAME_SIZE(n);
    if (out_size < size) return 0;
    for (int i = 0; i < 4; i++) out[i] = ELF_SYNC[i];
    out[4] = (uint8_t)ELF_VERSION;
    out[5] = 0; /* flags: reserved */
    elf_put_u32(out + 6, sequence);
    elf_put_u32(out + 10, sample_rate);
    elf_put_u16(out + 14, (uint16_t)n);
    for (size_t i = 0; i < n; i++) elf_put_u16(out + ELF_HEADER_SIZE + 2 * i, (uint16_t)samples[i]);
    elf_put_u32(out + size - ELF_CRC_SIZE, elf_crc32(out + 4, size - ELF_CRC_SIZE - 4));
    return size;
}

#endif /* EDGE_LUNG_FRAME_H */
