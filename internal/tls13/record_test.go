package tls13

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
)

// feedAll feeds stream to tc through a fakeConn in chunks whose sizes come
// from rng (nil: all at once), and returns the plaintext and the first
// error.
func feedAll(tc *Conn, stream []byte, rng *rand.Rand) ([]byte, []byte, error) {
	c := &fakeConn{}
	var plain []byte
	for len(stream) > 0 {
		n := len(stream)
		if rng != nil {
			n = 1 + rng.IntN(min(n, 3000))
		}
		c.in = append(c.in, stream[:n]...)
		stream = stream[n:]
		var err error
		if plain, err = tc.Feed(c, plain); err != nil {
			return plain, c.out, err
		}
	}
	if len(c.in) != 0 {
		return plain, c.out, fmt.Errorf("%d bytes left unconsumed", len(c.in))
	}
	return plain, c.out, nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

func TestSealFeedRoundTrip(t *testing.T) {
	sizes := []int{0, 1, 63, 64, maxPlaintext - 1, maxPlaintext, maxPlaintext + 1, 2 * maxPlaintext, 2*maxPlaintext + 1, 100000}
	for _, suite := range allSuites {
		t.Run(suiteName(suite), func(t *testing.T) {
			server, client := connPair(suite)
			rng := rand.New(rand.NewPCG(1, uint64(suite)))
			for _, n := range sizes {
				want := randomBytes(n)
				sealed := server.Seal(nil, want)
				if len(sealed) != SealedSize(n) {
					t.Errorf("%d bytes: sealed %d bytes, SealedSize says %d", n, len(sealed), SealedSize(n))
				}
				if records := (n + maxPlaintext - 1) / maxPlaintext; len(sealed)-n != records*sealedPerRecord {
					t.Errorf("%d bytes: %d records' overhead, want %d records", n, (len(sealed)-n)/sealedPerRecord, records)
				}
				got, out, err := feedAll(client, sealed, rng)
				if err != nil || !bytes.Equal(got, want) || len(out) != 0 {
					t.Fatalf("%d bytes: got %d bytes (equal %v), wrote %d, err %v", n, len(got), bytes.Equal(got, want), len(out), err)
				}
			}
		})
	}
}

// TestFeedOneByte feeds many records one byte at a time: every strict
// prefix of a record leaves it in the buffer and produces nothing.
func TestFeedOneByte(t *testing.T) {
	server, client := connPair(suiteAES128GCM)
	var stream, want []byte
	for i := range 20 {
		msg := randomBytes(i * 37)
		want = append(want, msg...)
		stream = server.Seal(stream, msg)
	}
	c := &fakeConn{}
	var got []byte
	for i, b := range stream {
		c.in = append(c.in, b)
		before := len(got)
		var err error
		if got, err = client.Feed(c, got); err != nil {
			t.Fatalf("byte %d: %v", i, err)
		}
		if len(got) != before && len(c.in) != 0 {
			t.Fatalf("byte %d: produced plaintext but left %d bytes", i, len(c.in))
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d", len(got), len(want))
	}
}

func TestCloseNotify(t *testing.T) {
	server, client := connPair(suiteChaCha20)
	stream := client.Seal(nil, []byte("bye"))
	stream = client.CloseNotify(stream)
	got, _, err := feedAll(server, stream, nil)
	if err != io.EOF || string(got) != "bye" {
		t.Fatalf("Feed = %q, %v; want \"bye\", io.EOF", got, err)
	}
	if _, err := server.Feed(&fakeConn{}, nil); err != io.EOF {
		t.Errorf("second Feed: %v, want io.EOF again", err)
	}
	// The server can still answer with its own close_notify.
	if !server.Ready() {
		t.Fatal("not Ready after close_notify")
	}
	if _, _, err := feedAll(client, server.CloseNotify(nil), nil); err != io.EOF {
		t.Errorf("client saw %v, want io.EOF", err)
	}
}

// TestFeedErrors checks each malformed record: Feed fails with ErrRecord at
// once (without waiting for more input) and writes the alert we expect.
func TestFeedErrors(t *testing.T) {
	inner := func(content []byte, typ byte) func(c *Conn) []byte {
		return func(c *Conn) []byte { return c.sealRecord(nil, typ, content) }
	}
	tests := []struct {
		name   string
		record func(client *Conn) []byte
		alert  alert // 0: none sent
		peer   bool  // the peer's own alert
	}{
		{"corrupted tag", func(c *Conn) []byte {
			r := c.Seal(nil, []byte("hello"))
			r[len(r)-1] ^= 1
			return r
		}, alertBadRecordMAC, false},
		{"corrupted header", func(c *Conn) []byte {
			r := c.Seal(nil, []byte("hello"))
			r[2] = 1 // the header is additional data
			return r
		}, alertBadRecordMAC, false},
		{"oversized header", func(*Conn) []byte { return []byte{23, 3, 3, 0x41, 0x01} }, alertRecordOverflow, false},
		{"too short", func(*Conn) []byte { return []byte{23, 3, 3, 0, 5, 1, 2, 3, 4, 5} }, alertBadRecordMAC, false},
		{"plaintext handshake record", func(*Conn) []byte { return []byte{22, 3, 3, 0, 1, 0} }, alertUnexpectedMessage, false},
		{"change_cipher_spec after Finished", func(*Conn) []byte { return []byte{20, 3, 3, 0, 1, 1} }, alertUnexpectedMessage, false},
		{"plaintext too long", inner(make([]byte, maxPlaintext+1), typeApplicationData), alertRecordOverflow, false},
		{"no content type", func(c *Conn) []byte { return c.sealRecord(nil, 0, []byte("x\x00\x00")) }, alertUnexpectedMessage, false},
		{"unknown content type", inner([]byte("x"), 99), alertUnexpectedMessage, false},
		{"inner change_cipher_spec", inner([]byte{1}, 20), alertUnexpectedMessage, false},
		{"short alert", inner([]byte{2}, typeAlert), alertUnexpectedMessage, false},
		{"fatal alert", inner([]byte{2, 42}, typeAlert), 0, true},
		{"empty handshake", inner(nil, typeHandshake), alertUnexpectedMessage, false},
		{"NewSessionTicket from client", inner([]byte{4, 0, 0, 0}, typeHandshake), alertUnexpectedMessage, false},
		{"KeyUpdate too long", inner([]byte{24, 0, 0, 2, 0, 0}, typeHandshake), alertDecodeError, false},
		{"two KeyUpdates in a record", inner([]byte{24, 0, 0, 1, 0, 24, 0, 0, 1, 0}, typeHandshake), alertDecodeError, false},
		{"KeyUpdate bad request", inner([]byte{24, 0, 0, 1, 2}, typeHandshake), alertIllegalParameter, false},
		{"too many empty records", func(c *Conn) []byte {
			var r []byte
			for range maxUselessRecords + 1 {
				r = c.sealRecord(r, typeApplicationData, nil)
			}
			return r
		}, alertUnexpectedMessage, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server, client := connPair(suiteAES128GCM)
			_, out, err := feedAll(server, tt.record(client), nil)
			if !errors.Is(err, ErrRecord) {
				t.Fatalf("err = %v, want ErrRecord", err)
			}
			var pa peerAlertError
			if tt.peer != errors.As(err, &pa) {
				t.Errorf("err = %v: peer alert %v, want %v", err, !tt.peer, tt.peer)
			}
			if tt.alert == 0 {
				if len(out) != 0 {
					t.Errorf("wrote %d bytes, want nothing", len(out))
				}
				return
			}
			_, _, err = feedAll(client, out, nil)
			if !errors.As(err, &pa) || alert(pa) != tt.alert {
				t.Errorf("peer received %v, want alert %v", err, tt.alert)
			}
			if _, err2 := server.Feed(&fakeConn{}, nil); err2 == nil {
				t.Error("Feed after an error succeeded")
			}
		})
	}
}

func TestUserCanceledIgnored(t *testing.T) {
	server, client := connPair(suiteAES128GCM)
	stream := client.sealRecord(nil, typeAlert, []byte{1, byte(alertUserCanceled)})
	stream = client.Seal(stream, []byte("still here"))
	if got, _, err := feedAll(server, stream, nil); err != nil || string(got) != "still here" {
		t.Fatalf("Feed = %q, %v", got, err)
	}
}

func TestKeyUpdateFromPeer(t *testing.T) {
	for _, suite := range allSuites {
		for _, requested := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/requested=%v", suiteName(suite), requested), func(t *testing.T) {
				server, client := connPair(suite)
				stream := client.Seal(nil, []byte("before"))
				stream = client.sendKeyUpdate(stream, requested)
				stream = client.Seal(stream, []byte("after"))
				got, out, err := feedAll(server, stream, rand.New(rand.NewPCG(2, 3)))
				if err != nil || string(got) != "beforeafter" {
					t.Fatalf("Feed = %q, %v", got, err)
				}
				if requested != (len(out) > 0) {
					t.Fatalf("server wrote %d bytes; update requested %v", len(out), requested)
				}
				// The client reads the reply (if any) and then data under the
				// server's current key.
				out = server.Seal(out, []byte("reply"))
				if got, _, err := feedAll(client, out, nil); err != nil || string(got) != "reply" {
					t.Fatalf("client Feed = %q, %v", got, err)
				}
				if server.in.seq != 1 || (requested && server.out.seq != 1) {
					t.Errorf("sequence numbers after update: in %d out %d", server.in.seq, server.out.seq)
				}
			})
		}
	}
}

// TestRekeyAfter checks that Seal rotates its key with a KeyUpdate after
// rekeyAfter records, mid-call, and the peer follows.
func TestRekeyAfter(t *testing.T) {
	server, client := connPair(suiteAES256GCM)
	server.srv.rekeyAfter = 3
	want := randomBytes(10*maxPlaintext + 5)
	sealed := server.Seal(nil, want)
	if extra := len(sealed) - SealedSize(len(want)); extra != 3*(sealedPerRecord+keyUpdateLen) {
		t.Errorf("Seal added %d bytes beyond SealedSize, want 3 KeyUpdate records", extra)
	}
	if got, _, err := feedAll(client, sealed, nil); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("Feed: %d bytes, %v", len(got), err)
	}
}

func TestIdleRebuild(t *testing.T) {
	for _, suite := range allSuites {
		server, client := connPair(suite)
		for i := range 3 {
			server.Idle()
			client.Idle()
			if server.in.aead != nil || server.out.aead != nil {
				t.Fatal("Idle kept an AEAD")
			}
			msg := fmt.Appendf(nil, "message %d", i)
			if got, _, err := feedAll(client, server.Seal(nil, msg), nil); err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("%s after Idle: %q, %v", suiteName(suite), got, err)
			}
		}
	}
}

func TestSealPanicsBeforeReady(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Seal before Ready did not panic")
		}
	}()
	testServer().NewConn().Seal(nil, []byte("x"))
}

func TestCloseWipes(t *testing.T) {
	server, _ := connPair(suiteAES128GCM)
	server.Close()
	if server.Ready() || server.in != (halfConn{}) || server.out != (halfConn{}) {
		t.Error("Close left keys or Ready")
	}
	if _, err := server.Feed(&fakeConn{in: []byte{23}}, nil); err == nil {
		t.Error("Feed after Close succeeded")
	}
	server.Close() // idempotent
}

func TestAlertRecord(t *testing.T) {
	if got, want := AlertRecord([]byte("x"), 10), []byte{'x', 21, 3, 3, 0, 2, 2, 10}; !bytes.Equal(got, want) {
		t.Errorf("AlertRecord = %x, want %x", got, want)
	}
}

// The steady state allocates nothing: Seal into a buffer with room, and
// Feed of complete records into one with room.
func TestAllocs(t *testing.T) {
	for _, suite := range allSuites {
		for _, n := range []int{64, 16 << 10, 40 << 10} {
			server, client := connPair(suite)
			msg := randomBytes(n)
			dst := make([]byte, 0, SealedSize(n))
			if a := testing.AllocsPerRun(100, func() { dst = server.Seal(dst[:0], msg) }); a != 0 {
				t.Errorf("%s Seal(%d): %v allocs", suiteName(suite), n, a)
			}
			// One message per run, sealed by a fresh pair's server (so
			// sequence numbers match) and fed to its client whole.
			server, client = connPair(suite)
			stream := make([]byte, 0, SealedSize(n))
			c := &fakeConn{}
			plain := make([]byte, 0, n)
			var err error
			if a := testing.AllocsPerRun(100, func() {
				stream = server.Seal(stream[:0], msg)
				c.in = stream
				plain, err = client.Feed(c, plain[:0])
			}); a != 0 || err != nil || len(plain) != n {
				t.Errorf("%s Seal+Feed(%d): %v allocs, err %v, %d bytes", suiteName(suite), n, a, err, len(plain))
			}
		}
	}
}

func BenchmarkSeal(b *testing.B) {
	for _, suite := range allSuites {
		for _, n := range []int{64, 16 << 10} {
			b.Run(fmt.Sprintf("%s/%d", suiteName(suite), n), func(b *testing.B) {
				server, _ := connPair(suite)
				msg := randomBytes(n)
				dst := make([]byte, 0, SealedSize(n))
				b.SetBytes(int64(n))
				b.ReportAllocs()
				for b.Loop() {
					dst = server.Seal(dst[:0], msg)
				}
			})
		}
	}
}

// BenchmarkOpen measures Feed of one complete record (decrypt, strip, copy
// to dst). Records are sealed ahead in batches, outside the timer.
func BenchmarkOpen(b *testing.B) {
	for _, suite := range allSuites {
		for _, n := range []int{64, 16 << 10} {
			b.Run(fmt.Sprintf("%s/%d", suiteName(suite), n), func(b *testing.B) {
				server, client := connPair(suite)
				msg := randomBytes(n)
				const batch = 64
				stream := make([]byte, 0, batch*SealedSize(n))
				plain := make([]byte, 0, batch*n)
				c := &fakeConn{}
				b.SetBytes(int64(n))
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if i%batch == 0 {
						b.StopTimer()
						stream = stream[:0]
						for range batch {
							stream = server.Seal(stream, msg)
						}
						c.in = stream
						plain = plain[:0]
						b.StartTimer()
					}
					// Expose one record at a time.
					rec := SealedSize(n)
					c.in = stream[(i%batch)*rec : (i%batch+1)*rec]
					plain, _ = client.Feed(c, plain)
					i++
				}
			})
		}
	}
}

// BenchmarkRebuild measures what Idle costs the next record: rebuilding
// the AEAD from the stored key, then sealing 64 bytes.
func BenchmarkRebuild(b *testing.B) {
	for _, suite := range allSuites {
		b.Run(suiteName(suite), func(b *testing.B) {
			server, _ := connPair(suite)
			msg := randomBytes(64)
			dst := make([]byte, 0, SealedSize(64))
			b.ReportAllocs()
			for b.Loop() {
				server.Idle()
				dst = server.Seal(dst[:0], msg)
			}
		})
	}
}
