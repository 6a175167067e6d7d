package tls13

import "fmt"

// handshakeClientHello is the HandshakeType of a ClientHello (RFC 8446
// §4).
const handshakeClientHello = 1

// helloComplete reports whether b, the bytes a client has sent so far,
// holds its whole ClientHello: one or more handshake records (RFC 8446
// §5.1) whose fragments add up to the 4-byte handshake header and the
// length that header declares. It reads only record headers and the
// handshake header, so calling it again as bytes trickle in costs little.
// A ClientHello longer than limit bytes, counting its record headers, is
// an error, as is anything that cannot start one (a record of another
// type, an empty or oversized record, another handshake message).
func helloComplete(b []byte, limit int) (bool, error) {
	var hdr [4]byte // the handshake header, gathered across records
	got := 0        // handshake bytes seen so far
	want := -1      // the whole handshake message; -1 until hdr is read
	records := 0
	for off := 0; ; {
		if len(b)-off < recordHeaderLen {
			return false, nil
		}
		if b[off] != typeHandshake {
			return false, fmt.Errorf("record of type %d before the ClientHello was complete", b[off])
		}
		n := int(b[off+3])<<8 | int(b[off+4])
		if n == 0 || n > maxPlaintext {
			return false, fmt.Errorf("handshake record of %d bytes", n)
		}
		records++
		frag := b[off+recordHeaderLen : min(off+recordHeaderLen+n, len(b))]
		for len(frag) > 0 && got < len(hdr) {
			hdr[got] = frag[0]
			frag = frag[1:]
			got++
		}
		got += len(frag)
		if want < 0 && got >= len(hdr) {
			if hdr[0] != handshakeClientHello {
				return false, fmt.Errorf("handshake message of type %d, not a ClientHello", hdr[0])
			}
			want = len(hdr) + (int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3]))
			// Each record carries at most maxPlaintext bytes of it.
			if size := want + recordHeaderLen*((want+maxPlaintext-1)/maxPlaintext); size > limit {
				return false, fmt.Errorf("ClientHello of %d bytes exceeds MaxHandshakeInput (%d)", size, limit)
			}
		}
		if want >= 0 && got >= want {
			return true, nil
		}
		if off+recordHeaderLen+n > len(b) {
			return false, nil
		}
		off += recordHeaderLen + n
		if off > limit {
			return false, fmt.Errorf("%d bytes in %d records without a whole ClientHello exceed MaxHandshakeInput (%d)", off, records, limit)
		}
	}
}
