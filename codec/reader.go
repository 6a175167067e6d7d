package codec

import (
	"bufio"
	"fmt"
	"io"

	"github.com/parley-im/parley/protocol"
)

// Reader reads frames from a byte stream, such as a client's TLS
// connection. It belongs to one goroutine.
type Reader struct {
	r       *bufio.Reader
	maxBody int
	dec     *Decompressor
	buf     []byte // the current frame's body
	inflate []byte // the current frame's decompressed body
}

// NewReader returns a Reader that refuses bodies over maxBody bytes and
// inflates compressed ones with dec (nil: compressed frames are an error).
func NewReader(r io.Reader, maxBody int, dec *Decompressor) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 16<<10), maxBody: maxBody, dec: dec}
}

// ReadFrame reads the next frame, inflating a compressed body. The frame's
// Body is valid until the next call.
func (r *Reader) ReadFrame() (Frame, error) {
	var hdr [protocol.MaxHeaderLen]byte
	n := 0
	for {
		b, err := r.r.ReadByte()
		if err != nil {
			if n > 0 && err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return Frame{}, err
		}
		hdr[n] = b
		n++
		if b < 0x80 || n == maxLenBytes {
			break
		}
	}
	// [S-3-3] refuse an oversized frame as soon as its length is known.
	if _, err := parseHeader(hdr[:n], r.maxBody); err != nil {
		return Frame{}, err
	}
	kb, err := r.r.ReadByte()
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	hdr[n] = kb
	n++
	h, err := parseHeader(hdr[:n], r.maxBody)
	if err != nil {
		return Frame{}, err
	}
	if h.len == 0 {
		return Frame{}, fmt.Errorf("%w: bad header", ErrMalformed)
	}
	if cap(r.buf) < h.bodyLen {
		r.buf = make([]byte, h.bodyLen)
	}
	r.buf = r.buf[:h.bodyLen]
	if _, err := io.ReadFull(r.r, r.buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	f := Frame{Kind: h.kind, Compressed: h.compressed, Body: r.buf}
	if f.Compressed {
		if r.dec == nil {
			return Frame{}, fmt.Errorf("%w: unexpected compressed frame", ErrMalformed)
		}
		r.inflate, err = r.dec.Decompress(r.inflate, f.Body)
		if err != nil {
			return Frame{}, err
		}
		f.Body, f.Compressed = r.inflate, false
	}
	return f, nil
}

// NextFrame splits the first whole frame off b, the body of a Batch. A
// partial frame in a batch is malformed, as is a nested Batch or a
// compressed inner frame.
func NextFrame(b []byte, maxBody int) (f Frame, rest []byte, err error) {
	f, n, _, err := Parse(b, maxBody)
	switch {
	case err != nil:
		return Frame{}, nil, err
	case n == 0:
		return Frame{}, nil, fmt.Errorf("%w: partial frame in batch", ErrMalformed)
	case f.Kind == protocol.KindBatch || f.Compressed:
		return Frame{}, nil, fmt.Errorf("%w: nested batch or compressed frame in batch", ErrMalformed)
	}
	return f, b[n:], nil
}
