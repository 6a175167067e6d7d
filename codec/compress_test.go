package codec

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/parley-im/parley/protocol"
)

func newCodecs(t testing.TB, max int) (*Compressor, *Decompressor) {
	t.Helper()
	c, err := NewCompressor()
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewDecompressor(max)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); d.Close() })
	return c, d
}

func TestCompressRoundTrip(t *testing.T) {
	c, d := newCodecs(t, protocol.MaxFrameBody)
	var batch []byte
	for i := range 200 {
		batch = AppendEntry(batch, protocol.KindMessage, uint64(i+1),
			AppendMessageEntry(nil, Message{ID: uint64(i) << 22, From: 77, Body: []byte("see you at eight")}))
	}
	out, _ := c.AppendFrame(nil, nil, protocol.KindBatch, batch)
	f := parseOne(t, out, protocol.KindBatch)
	if !f.Compressed {
		t.Fatal("a repetitive 5 KB batch was not compressed")
	}
	if len(out) > len(batch)/2 {
		t.Errorf("compressed to %d of %d bytes", len(out), len(batch))
	}
	got, err := d.Decompress(nil, f.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, batch) {
		t.Fatal("round trip changed the batch")
	}
}

// TestCompressOnlyWherePays checks [S-3-6]: small bodies and bodies that do
// not shrink (end-to-end encrypted payloads) are sent uncompressed.
func TestCompressOnlyWherePays(t *testing.T) {
	c, _ := newCodecs(t, protocol.MaxFrameBody)
	small := bytes.Repeat([]byte("a"), protocol.MinCompress-1)
	if out, _ := c.AppendFrame(nil, nil, protocol.KindBatch, small); parseOne(t, out, protocol.KindBatch).Compressed {
		t.Error("body below MinCompress was compressed")
	}
	random := make([]byte, 4096)
	_, _ = rand.Read(random)
	if out, _ := c.AppendFrame(nil, nil, protocol.KindBatch, random); parseOne(t, out, protocol.KindBatch).Compressed {
		t.Error("incompressible body was compressed")
	}
}

// TestDecompressCap checks [S-3-7]: a body inflating past the limit is
// refused, whether or not its zstd header declares the size.
func TestDecompressCap(t *testing.T) {
	_, d := newCodecs(t, 1024)
	bomb := bytes.Repeat([]byte{0}, 1<<20)
	withSize, _ := zstd.NewWriter(nil)
	declared := withSize.EncodeAll(bomb, nil)
	_ = withSize.Close()
	if _, err := d.Decompress(nil, declared); !errors.Is(err, ErrTooLarge) {
		t.Errorf("declared-size bomb: err = %v, want ErrTooLarge", err)
	}
	var streamed bytes.Buffer
	w, _ := zstd.NewWriter(&streamed)
	_, _ = w.Write(bomb)
	_ = w.Close()
	if _, err := d.Decompress(nil, streamed.Bytes()); !errors.Is(err, ErrTooLarge) {
		t.Errorf("unknown-size bomb: err = %v, want ErrTooLarge", err)
	}
	if _, err := d.Decompress(nil, []byte("not zstd at all")); !errors.Is(err, ErrMalformed) {
		t.Errorf("garbage: err = %v, want ErrMalformed", err)
	}
}

func TestReader(t *testing.T) {
	c, d := newCodecs(t, protocol.MaxFrameBody)
	var stream []byte
	stream = AppendAck(stream, 5)
	big := bytes.Repeat([]byte("entry "), 1000)
	stream, _ = c.AppendFrame(stream, nil, protocol.KindBatch, big)
	stream = AppendFrame(stream, protocol.KindPong, nil)
	r := NewReader(iotestOneByte(stream), protocol.MaxFrameBody, d)
	f, err := r.ReadFrame()
	if err != nil || f.Kind != protocol.KindAck {
		t.Fatalf("frame 1: %v %v", f, err)
	}
	f, err = r.ReadFrame()
	if err != nil || f.Kind != protocol.KindBatch || f.Compressed || !bytes.Equal(f.Body, big) {
		t.Fatalf("frame 2: kind %v compressed %v len %d err %v", f.Kind, f.Compressed, len(f.Body), err)
	}
	f, err = r.ReadFrame()
	if err != nil || f.Kind != protocol.KindPong {
		t.Fatalf("frame 3: %v %v", f, err)
	}
	if _, err := r.ReadFrame(); err != io.EOF {
		t.Fatalf("at end: err = %v, want io.EOF", err)
	}
	r = NewReader(bytes.NewReader(stream[:3]), protocol.MaxFrameBody, d)
	if _, err := r.ReadFrame(); err != io.ErrUnexpectedEOF {
		t.Fatalf("torn frame: err = %v, want io.ErrUnexpectedEOF", err)
	}
	r = NewReader(bytes.NewReader(AppendFrame(nil, protocol.KindMessage, make([]byte, 2000))), 1000, d)
	if _, err := r.ReadFrame(); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized: err = %v, want ErrTooLarge", err)
	}
}

// oneByteReader returns one byte per Read.
type oneByteReader struct{ b []byte }

func (r *oneByteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = r.b[0]
	r.b = r.b[1:]
	return 1, nil
}

func iotestOneByte(b []byte) io.Reader { return &oneByteReader{b: b} }
