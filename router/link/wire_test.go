package link

import (
	"bytes"
	"testing"

	"github.com/parley-im/parley/codec"
)

// TestHelloBytes pins a Hello's encoding (docs: the package doc's table).
func TestHelloBytes(t *testing.T) {
	got := appendHello(nil, kindHello, hello{node: 3, gen: 300, target: 1})
	want := []byte{0x05, 0x01, 0x01, 0x03, 0xac, 0x02, 0x01}
	if !bytes.Equal(got, want) {
		t.Fatalf("hello = % x, want % x", got, want)
	}
	f, n, _, err := codec.Parse(got, maxFrame)
	if err != nil || n != len(got) || f.Kind != kindHello {
		t.Fatalf("parse: %+v %d %v", f, n, err)
	}
	h, err := parseHello(f.Body)
	if err != nil || h != (hello{node: 3, gen: 300, target: 1}) {
		t.Fatalf("parseHello = %+v, %v", h, err)
	}
}

// TestParseHelloRejects every malformed hello.
func TestParseHelloRejects(t *testing.T) {
	for _, b := range [][]byte{
		nil,
		{0x02, 0x01, 0x01, 0x01},       // another version
		{0x01, 0x01, 0x01},             // short
		{0x01, 0x00, 0x01, 0x01},       // node 0
		{0x01, 0x01, 0x00, 0x01},       // generation 0
		{0x01, 0x01, 0x01, 0x01, 0x00}, // trailing byte
		{0x01, 0x80, 0x80, 0x80, 0x80, 0x10, 0x01, 0x01}, // node id past 32 bits
	} {
		if _, err := parseHello(b); err == nil {
			t.Errorf("parseHello(% x) accepted", b)
		}
	}
}

// TestRecords: records round-trip, a partial record is malformed, and
// skipRecords skips whole records.
func TestRecords(t *testing.T) {
	var b []byte
	b = appendRecord(b, 7, []byte("abc"))
	b = appendRecord(b, typeGap, nil)
	b = appendRecord(b, 9, bytes.Repeat([]byte{1}, 200))
	if len(b) != recordLen(3)+recordLen(0)+recordLen(200) {
		t.Fatalf("records take %d bytes, recordLen says %d", len(b), recordLen(3)+recordLen(0)+recordLen(200))
	}
	rest := b
	var types []uint8
	for len(rest) > 0 {
		typ, _, r, err := nextRecord(rest)
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, typ)
		rest = r
	}
	if !bytes.Equal(types, []byte{7, 0, 9}) {
		t.Fatalf("types %v", types)
	}
	for i := 1; i < len(b); i++ {
		rest := b[:i]
		var err error
		for len(rest) > 0 && err == nil {
			_, _, rest, err = nextRecord(rest)
		}
		if err == nil && i != recordLen(3) && i != recordLen(3)+recordLen(0) {
			t.Fatalf("a prefix of %d bytes parsed as whole records", i)
		}
	}
	if typ, _, _, _ := nextRecord(skipRecords(b, 2)); typ != 9 {
		t.Fatalf("skipRecords(2) lands on type %d", typ)
	}
}

// FuzzBatchRecords: record parsing never panics nor overruns its input.
func FuzzBatchRecords(f *testing.F) {
	f.Add(appendRecord(appendRecord(nil, 1, []byte("x")), 0, nil))
	f.Add([]byte{0x01, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		total := 0
		for len(b) > 0 {
			_, body, rest, err := nextRecord(b)
			if err != nil {
				return
			}
			total += len(b) - len(rest)
			if len(body) > len(b) {
				t.Fatal("body longer than its input")
			}
			b = rest
		}
		_, _ = parseHello(b)
	})
}
