package codec

import (
	"errors"
	"fmt"

	"github.com/klauspost/compress/zstd"

	"github.com/parley-im/parley/protocol"
)

// Compressor compresses frame bodies with zstd where it pays. It is safe
// for concurrent use.
type Compressor struct {
	enc *zstd.Encoder
}

// NewCompressor returns a Compressor tuned for small bodies: fastest
// level, single-segment frames, and the content size in every frame header
// so a decoder can refuse an oversized body before inflating it.
func NewCompressor() (*Compressor, error) {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(1),
		zstd.WithLowerEncoderMem(true),
		zstd.WithEncoderCRC(false),
		zstd.WithSingleSegment(true),
		zstd.WithWindowSize(1<<17),
	)
	if err != nil {
		return nil, fmt.Errorf("codec: zstd encoder: %w", err)
	}
	return &Compressor{enc: enc}, nil
}

// AppendFrame appends a frame of kind k carrying body, compressed when
// body is at least protocol.MinCompress bytes and compression saves at
// least an eighth; otherwise the frame is sent as it is. scratch is a
// buffer AppendFrame may use; it returns it (possibly grown) for reuse.
func (c *Compressor) AppendFrame(dst, scratch []byte, k protocol.Kind, body []byte) (out, scratchOut []byte) {
	if len(body) < protocol.MinCompress {
		return AppendFrame(dst, k, body), scratch
	}
	z := c.enc.EncodeAll(body, scratch[:0])
	if len(z) > len(body)-len(body)/8 {
		return AppendFrame(dst, k, body), z
	}
	dst = AppendHeader(dst, k, true, len(z))
	return append(dst, z...), z
}

// Close releases the encoder's resources.
func (c *Compressor) Close() { _ = c.enc.Close() }

// Decompressor inflates compressed bodies, refusing any whose content
// exceeds its limit. It is safe for concurrent use.
type Decompressor struct {
	dec *zstd.Decoder
	max int
}

// NewDecompressor returns a Decompressor that refuses bodies inflating to
// more than maxBody bytes.
func NewDecompressor(maxBody int) (*Decompressor, error) {
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxMemory(uint64(maxBody)),
		zstd.WithDecoderMaxWindow(1<<20),
	)
	if err != nil {
		return nil, fmt.Errorf("codec: zstd decoder: %w", err)
	}
	return &Decompressor{dec: dec, max: maxBody}, nil
}

// Decompress appends the inflated body to dst[:0] and returns it. Bodies
// inflating past the limit give ErrTooLarge, corrupt ones ErrMalformed.
func (d *Decompressor) Decompress(dst, body []byte) ([]byte, error) {
	out, err := d.dec.DecodeAll(body, dst[:0])
	switch {
	case errors.Is(err, zstd.ErrDecoderSizeExceeded), errors.Is(err, zstd.ErrWindowSizeExceeded):
		return nil, fmt.Errorf("%w: compressed body inflates past %d bytes", ErrTooLarge, d.max)
	case err != nil:
		return nil, fmt.Errorf("%w: zstd: %v", ErrMalformed, err)
	case len(out) > d.max:
		return nil, fmt.Errorf("%w: compressed body inflates past %d bytes", ErrTooLarge, d.max)
	}
	return out, nil
}

// Close releases the decoder's resources.
func (d *Decompressor) Close() { d.dec.Close() }
