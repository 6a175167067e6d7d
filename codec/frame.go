package codec

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/parley-im/parley/protocol"
)

// Errors returned by Parse and the body decoders. The server maps them to
// error codes: ErrTooLarge to FRAME_TOO_LARGE, the rest to MALFORMED_FRAME.
var (
	ErrTooLarge  = errors.New("codec: frame exceeds limit")
	ErrMalformed = errors.New("codec: malformed frame")
)

// maxLenBytes is the longest uvarint length prefix: 3 bytes hold up to
// 2^21-1, above protocol.MaxFrameBody.
const maxLenBytes = 3

// Frame is one decoded frame. Body aliases the buffer it was parsed from.
type Frame struct {
	Kind       protocol.Kind
	Compressed bool
	Body       []byte
}

// Parse decodes the frame at the start of b, refusing a body longer than
// maxBody bytes. It returns the frame and the number of bytes it occupies.
// When b holds only a strict prefix of a frame, Parse returns n == 0 and a
// nil error: the caller keeps b and calls again with more bytes. need is
// then the total frame length if the header is complete (so the caller can
// size its buffer), else 0.
func Parse(b []byte, maxBody int) (f Frame, n int, need int, err error) {
	h, err := parseHeader(b, maxBody)
	if err != nil || h.len == 0 {
		return Frame{}, 0, 0, err
	}
	total := h.len + h.bodyLen
	if len(b) < total {
		return Frame{}, 0, total, nil
	}
	return Frame{Kind: h.kind, Compressed: h.compressed, Body: b[h.len:total:total]}, total, total, nil
}

// header is a decoded frame header. len is 0 when the header is incomplete.
type header struct {
	len        int
	bodyLen    int
	kind       protocol.Kind
	compressed bool
}

// parseHeader decodes the frame header at the start of b.
func parseHeader(b []byte, maxBody int) (header, error) {
	var length uint64
	var i int
	for i = 0; ; i++ {
		if i == maxLenBytes {
			return header{}, fmt.Errorf("%w: length prefix longer than %d bytes", ErrMalformed, maxLenBytes)
		}
		if i == len(b) {
			return header{}, nil
		}
		c := b[i]
		length |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			if c == 0 && i > 0 {
				return header{}, fmt.Errorf("%w: length prefix not minimal", ErrMalformed)
			}
			break
		}
	}
	if length > uint64(maxBody) {
		return header{}, fmt.Errorf("%w: body of %d bytes, limit %d", ErrTooLarge, length, maxBody)
	}
	if i+1 == len(b) {
		return header{}, nil
	}
	kb := b[i+1]
	kind := protocol.Kind(kb &^ protocol.FlagCompressed)
	if kind == 0 {
		return header{}, fmt.Errorf("%w: kind 0", ErrMalformed)
	}
	return header{len: i + 2, bodyLen: int(length), kind: kind, compressed: kb&protocol.FlagCompressed != 0}, nil
}

// HeaderLen returns the length of the header of a frame with a body of
// bodyLen bytes.
func HeaderLen(bodyLen int) int {
	switch {
	case bodyLen < 1<<7:
		return 2
	case bodyLen < 1<<14:
		return 3
	default:
		return 4
	}
}

// AppendHeader appends the header of a frame of kind k with a body of
// bodyLen bytes. compressed sets the compression flag.
func AppendHeader(dst []byte, k protocol.Kind, compressed bool, bodyLen int) []byte {
	dst = binary.AppendUvarint(dst, uint64(bodyLen))
	kb := byte(k)
	if compressed {
		kb |= protocol.FlagCompressed
	}
	return append(dst, kb)
}

// AppendFrame appends a whole uncompressed frame of kind k with body body.
func AppendFrame(dst []byte, k protocol.Kind, body []byte) []byte {
	dst = AppendHeader(dst, k, false, len(body))
	return append(dst, body...)
}
