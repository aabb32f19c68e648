/* Prints the protocol's example frame (PROTOCOL.md) as hex; tests compare it with the Python encoder.
 * Build: cc -std=c99 -Wall -o encode_example firmware_host/encode_example.c */
#include <stdio.h>

#include "edge_lung_frame.h"

int main(void) {
    const int16_t samples[2] = {1000, -1000};
    uint8_t buf[ELF_FRAME_SIZE(2)];
    size_t len = elf_encode_frame(buf, sizeof buf, 7u, 16000u, samples, 2);
    if (len == 0) return 1;
    for (size_t i = 0; i < len; i++) printf("%02x%s", buf[i], i + 1 < len ? " " : "\n");
    return 0;
}
