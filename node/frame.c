/*
 * node/frame.c
 * Length-prefixed frames (see frame.h).
 */
#include "frame.h"

long frame_parse(const uint8_t *buf, size_t len, size_t max, const uint8_t **payload)
{
    if (len < FRAME_HDR)
        return -1;
    uint32_t n = (uint32_t) buf[0] << 24 | (uint32_t) buf[1] << 16 | (uint32_t) buf[2] << 8 | buf[3];
    if (n > max)
        return -2;
    if (len - FRAME_HDR < n)
        return -1;
    *payload = buf + FRAME_HDR;
    return (long) n;
}

void frame_header(uint8_t out[FRAME_HDR], uint32_t len)
{
    out[0] = (uint8_t) (len >> 24);
    out[1] = (uint8_t) (len >> 16);
    out[2] = (uint8_t) (len >> 8);
    out[3] = (uint8_t) len;
}
