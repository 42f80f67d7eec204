/*
 * node/frame.h
 * Length-prefixed frames for protobuf messages on a stream: a 4-byte big-endian length,
 * then that many bytes. Used by the admin socket and (later) internal RPC.
 *
 * SECURITY: the length comes from the peer; a frame longer than the reader's cap is an
 * error before any allocation, never a wait for 4 GiB.
 */
#ifndef TERN_FRAME_H
#define TERN_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_HDR 4
#define FRAME_ADMIN_MAX (1024 * 1024) /* admin requests and responses */

/*
 * frame_parse() looks at the LEN bytes at BUF. Returns the size of the complete frame's
 * payload and sets *PAYLOAD when a whole frame is there (frame size = FRAME_HDR + payload);
 * -1 when more bytes are needed; -2 when the announced length exceeds MAX.
 */
long frame_parse(const uint8_t *buf, size_t len, size_t max, const uint8_t **payload);

/* frame_header() writes the header for a payload of LEN bytes. */
void frame_header(uint8_t out[FRAME_HDR], uint32_t len);

#endif
