package codec

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// FuzzParse feeds arbitrary bytes to the frame parser and the hot body
// decoders. They must never panic, a parsed frame must fit the input, and
// the hand-written Send decoder must accept exactly what the generated
// code accepts, with the same values.
func FuzzParse(f *testing.F) {
	f.Add(AppendAck(nil, 150))
	f.Add(AppendSend(nil, Send{To: 4242, CMID: 7, Body: []byte("hello")}))
	f.Add(AppendEntry(nil, protocol.KindMessage, 3, AppendMessageEntry(nil, Message{ID: 1 << 57, From: 2, Body: []byte("x")})))
	f.Add([]byte{0x80, 0x80, 0x80})
	f.Add([]byte{0x00, 0x01, 0x00, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		for rest := b; len(rest) > 0; {
			fr, n, need, err := Parse(rest, protocol.MaxClientFrameBody)
			if err != nil || n == 0 {
				if need < 0 || (n == 0 && need != 0 && need <= len(rest)) {
					t.Fatalf("need = %d with %d bytes", need, len(rest))
				}
				return
			}
			if n > len(rest) || len(fr.Body) > protocol.MaxClientFrameBody {
				t.Fatalf("frame of %d bytes from %d", n, len(rest))
			}
			rest = rest[n:]
			s, err := ParseSend(fr.Body)
			var gen pb.Send
			genErr := proto.Unmarshal(fr.Body, &gen)
			if (err == nil) != (genErr == nil) {
				t.Fatalf("ParseSend(% x) err = %v, generated err = %v", fr.Body, err, genErr)
			}
			if err == nil && (gen.To != s.To || gen.Cmid != s.CMID || !bytes.Equal(gen.Body, s.Body) || gen.Type != s.Type || gen.Group != s.Group) {
				t.Fatalf("ParseSend = %+v, generated = %v", s, &gen)
			}
			_, _ = ParseAck(fr.Body)
			_, _ = ParseMessage(fr.Body)
			_, _ = ParseReceipt(fr.Body)
		}
	})
}
