package tls13

import (
	"bytes"
	"testing"
)

// fuzzConns returns a reader and a writer Conn keyed with RFC 8448's
// application secrets, so that the RFC's records are valid seeds.
func fuzzConns(t testing.TB) (server, client *Conn) {
	c, s := unhex(t, rfc8448ClientSecret), unhex(t, rfc8448ServerSecret)
	return readyConn(testServer(), suiteAES128GCM, c, s), readyConn(testServer(), suiteAES128GCM, s, c)
}

// feedSplit feeds stream to a fresh reader in chunks whose sizes come from
// splits (cycled; 0 means 1), and returns the plaintext and the error.
func feedSplit(t testing.TB, stream, splits []byte) ([]byte, error) {
	tc, _ := fuzzConns(t)
	c := &fakeConn{}
	var plain []byte
	var err error
	for i := 0; len(stream) > 0; i++ {
		n := len(stream)
		if len(splits) > 0 {
			n = min(n, max(1, int(splits[i%len(splits)])))
		}
		c.in = append(c.in, stream[:n]...)
		stream = stream[n:]
		if plain, err = tc.Feed(c, plain); err != nil {
			if _, again := tc.Feed(c, nil); again == nil {
				t.Fatal("Feed succeeded after an error")
			}
			return plain, err
		}
		// Feed consumes every complete record: what is left is a prefix
		// of one.
		if len(c.in) >= recordHeaderLen {
			if n := recordHeaderLen + (int(c.in[3])<<8 | int(c.in[4])); len(c.in) >= n {
				t.Fatalf("Feed left a complete %d-byte record in the buffer", n)
			}
		}
	}
	return plain, err
}

// FuzzFeed checks the record parser on arbitrary input split arbitrarily:
// it never panics, never leaves a complete record unread, and returns the
// same plaintext and error however the input is split.
func FuzzFeed(f *testing.F) {
	_, client := fuzzConns(f)
	var seeds [][]byte
	add := func(b []byte) { seeds = append(seeds, b) }
	add(unhex(f, rfc8448ClientAppRecord))
	add(append(unhex(f, rfc8448ClientAppRecord), unhex(f, rfc8448ClientAlertRecord)...))
	add(client.Seal(nil, []byte("hello")))
	_, client = fuzzConns(f)
	add(client.Seal(nil, randomBytes(maxPlaintext+10)))
	_, client = fuzzConns(f)
	add(client.Seal(client.sendKeyUpdate(nil, true), []byte("after KeyUpdate")))
	_, client = fuzzConns(f)
	add(client.sealRecord(client.Seal(nil, []byte("x")), typeAlert, []byte{2, 40}))
	_, client = fuzzConns(f)
	add(client.sealRecord(nil, typeApplicationData, nil))
	add([]byte{23, 3, 3, 0x41, 0x01})
	add([]byte{22, 3, 1, 0, 5, 1, 0, 0, 1, 0})
	for _, s := range seeds {
		f.Add(s, []byte{1})
		f.Add(s, []byte{5, 200, 3})
		f.Add(s, []byte(nil))
	}
	f.Fuzz(func(t *testing.T, stream, splits []byte) {
		whole, wholeErr := feedSplit(t, stream, nil)
		split, splitErr := feedSplit(t, stream, splits)
		if !bytes.Equal(whole, split) {
			t.Fatalf("plaintext depends on the split: %d bytes whole, %d split", len(whole), len(split))
		}
		if (wholeErr == nil) != (splitErr == nil) || wholeErr != nil && wholeErr.Error() != splitErr.Error() {
			t.Fatalf("error depends on the split: %v whole, %v split", wholeErr, splitErr)
		}
	})
}
