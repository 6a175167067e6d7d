package link

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/protocol"
)

// Realistic link messages. Bodies are protobuf-shaped (tag, varint or
// length-delimited fields) like the ops strand 1 encodes; message content
// is end-to-end ciphertext, so it is random bytes.

// msgGen makes messages of one kind.
type msgGen func(r *rand.Rand, dst []byte) []byte

func field(dst []byte, tag byte, v uint64) []byte {
	return binary.AppendUvarint(append(dst, tag), v)
}

func bytesField(dst []byte, tag byte, b []byte) []byte {
	dst = binary.AppendUvarint(append(dst, tag), uint64(len(b)))
	return append(dst, b...)
}

func cipher(r *rand.Rand, lo, hi int) []byte {
	b := make([]byte, lo+r.IntN(hi-lo+1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// userID is a Parley user id: a per-shard counter above a 12-bit slot.
func userID(r *rand.Rand) uint64 { return uint64(1+r.IntN(1<<20))<<12 | uint64(r.IntN(4096)) }

// entry is a stored inbox entry: sender, device, client message id, a
// time-sortable message id, a timestamp, the ciphertext.
func entry(r *rand.Rand, dst []byte, lo, hi int) []byte {
	now := uint64(1_764_900_000_000)
	e := field(nil, 0x08, userID(r))
	e = field(e, 0x10, uint64(1+r.IntN(3)))
	e = field(e, 0x18, uint64(r.Uint32()))
	e = field(e, 0x20, (now+uint64(r.IntN(1000)))<<22|uint64(r.IntN(1<<22)))
	e = field(e, 0x28, now/1000+uint64(r.IntN(10)))
	e = bytesField(e, 0x32, cipher(r, lo, hi))
	return bytesField(dst, 0x3a, e)
}

// forward: an OpForward of a 1:1 message between shards.
func forward(r *rand.Rand, dst []byte) []byte {
	dst = field(dst, 0x08, 40) // op kind
	dst = field(dst, 0x10, uint64(r.IntN(8)))
	dst = field(dst, 0x18, uint64(r.IntN(8)))
	dst = field(dst, 0x20, uint64(100000+r.IntN(1000)))
	dst = field(dst, 0x28, userID(r))
	return entry(r, dst, 80, 240)
}

// forwardDone: an OpForwardDone, the cumulative confirmation of a pair.
func forwardDone(r *rand.Rand, dst []byte) []byte {
	dst = field(dst, 0x08, 41)
	dst = field(dst, 0x10, uint64(r.IntN(8)))
	dst = field(dst, 0x18, uint64(r.IntN(8)))
	return field(dst, 0x20, uint64(100000+r.IntN(1000)))
}

// push: an endpoint call pushing a delivery to a client connection on
// another node (a ConnRef, then the client frame).
func push(r *rand.Rand, dst []byte) []byte {
	dst = field(dst, 0x08, 1) // call kind
	dst = field(dst, 0x10, uint64(1+r.IntN(3)))
	dst = field(dst, 0x18, uint64(1+r.IntN(50)))
	dst = field(dst, 0x20, uint64(r.IntN(1<<20)))
	frame := field(nil, 0x08, uint64(1000+r.IntN(100000))) // inbox sequence
	frame = entry(r, frame, 80, 240)
	return bytesField(dst, 0x2a, frame)
}

// words make plain-text message content, for nodes whose clients do not
// encrypt end to end (client.Config.Plain).
var words = []string{"the", "meeting", "is", "at", "noon", "ok", "see", "you", "there", "thanks",
	"can", "we", "move", "it", "to", "tomorrow", "sure", "running", "late", "sorry", "lunch", "?", "!", "haha"}

// plainForward: an OpForward of a 1:1 plain-text message.
func plainForward(r *rand.Rand, dst []byte) []byte {
	dst = field(dst, 0x08, 40)
	dst = field(dst, 0x10, uint64(r.IntN(8)))
	dst = field(dst, 0x18, uint64(r.IntN(8)))
	dst = field(dst, 0x20, uint64(100000+r.IntN(1000)))
	dst = field(dst, 0x28, userID(r))
	var text []byte
	for n := 2 + r.IntN(20); n > 0; n-- {
		text = append(append(text, words[r.IntN(len(words))]...), ' ')
	}
	e := field(nil, 0x08, userID(r))
	e = field(e, 0x10, uint64(1+r.IntN(3)))
	e = field(e, 0x18, uint64(r.Uint32()))
	e = field(e, 0x20, uint64(1_764_900_000_000+r.IntN(1000))<<22|uint64(r.IntN(1<<22)))
	e = bytesField(e, 0x32, text)
	return bytesField(dst, 0x3a, e)
}

// group1024: the OpForward of a group message to a shard holding all of
// a 1024-member group's members: the entry once, the recipients' ids.
func group1024(r *rand.Rand, dst []byte) []byte {
	dst = field(dst, 0x08, 40)
	dst = field(dst, 0x10, uint64(r.IntN(8)))
	dst = field(dst, 0x18, uint64(r.IntN(8)))
	dst = field(dst, 0x20, uint64(100000+r.IntN(1000)))
	dst = field(dst, 0x28, userID(r)) // the group id
	dst = entry(r, dst, 100, 300)
	users := make([]uint64, 1024)
	for i := range users {
		users[i] = userID(r)
	}
	slices.Sort(users)
	var packed []byte
	for _, u := range users {
		packed = binary.AppendUvarint(packed, u)
	}
	return bytesField(dst, 0x32, packed)
}

// mixes are the message mixes measured: 1:1 traffic (forwards, their
// confirmations, pushes to connections on other nodes), 1024-member group
// fan-out, plain-text 1:1 forwards (no end-to-end encryption), and 1:1
// traffic with one group message in a hundred.
var mixes = []struct {
	name string
	gen  func(r *rand.Rand, i int) msgGen
}{
	{"1to1", func(r *rand.Rand, i int) msgGen {
		return []msgGen{forward, forward, forward, forward, forward, push, push, push, forwardDone, forwardDone}[r.IntN(10)]
	}},
	{"group1024", func(*rand.Rand, int) msgGen { return group1024 }},
	{"plain1to1", func(*rand.Rand, int) msgGen { return plainForward }},
	{"mixed", func(r *rand.Rand, i int) msgGen {
		if i%100 == 99 {
			return group1024
		}
		return []msgGen{forward, forward, forward, forward, forward, push, push, push, forwardDone, forwardDone}[r.IntN(10)]
	}},
}

// batch returns n messages of a mix encoded as batch records.
func batch(mix int, n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	var b []byte
	for i := range n {
		m := mixes[mix].gen(r, i)(r, nil)
		b = appendRecord(b, 1, m)
	}
	return b
}

// BenchmarkBatchCompression: how much zstd (codec.Compressor, fastest
// level) saves on batches of each mix and size, and what compressing and
// inflating cost. Reported: in-B and out-B per batch (out-B as sent:
// compressed only when that saves an eighth), ratio (frame out / frame
// in), zstd-ratio (what zstd alone makes of it), ns/op for compress +
// decompress of one batch.
func BenchmarkBatchCompression(b *testing.B) {
	comp, err := codec.NewCompressor()
	if err != nil {
		b.Fatal(err)
	}
	defer comp.Close()
	dec, err := codec.NewDecompressor(maxFrame)
	if err != nil {
		b.Fatal(err)
	}
	defer dec.Close()
	raw, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	for mi, mix := range mixes {
		for _, n := range []int{1, 4, 16, 64, 256} {
			if mix.name == "group1024" && n > 16 {
				continue // beyond BatchBytes: such batches are never built
			}
			in := batch(mi, n, uint64(n))
			b.Run(fmt.Sprintf("%s/msgs=%d", mix.name, n), func(b *testing.B) {
				var out, scratch, inflated []byte
				for b.Loop() {
					out, scratch = comp.AppendFrame(out[:0], scratch, kindBatch, in)
					f, _, _, err := codec.Parse(out, maxFrame)
					if err != nil {
						b.Fatal(err)
					}
					if f.Compressed {
						if inflated, err = dec.Decompress(inflated, f.Body); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.ReportMetric(float64(len(in)), "in-B")
				b.ReportMetric(float64(len(out)-codec.HeaderLen(len(out))), "out-B")
				b.ReportMetric(float64(len(out))/float64(len(in)+codec.HeaderLen(len(in))), "ratio")
				b.ReportMetric(float64(len(raw.EncodeAll(in, nil)))/float64(len(in)), "zstd-ratio")
			})
		}
	}
}

// cpuTime returns the process's user + system CPU time.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkLinkThroughput: messages of each mix from one node to another
// over loopback TLS, both Links in this process, with compression off
// (the default) and on from 4 KiB and from 512 B batches. Reported: ns/op per message (wall),
// cpu-ns/msg (both ends, the whole process), wire-B/msg (TLS payload
// bytes written by the sender per message, before TLS record overhead),
// msgs/write (messages per TLS write of batches: how much the natural
// batching gathered).
func BenchmarkLinkThroughput(b *testing.B) {
	for _, mix := range mixes {
		msgs := make([][]byte, 4096)
		r := rand.New(rand.NewPCG(1, 1))
		for i := range msgs {
			msgs[i] = mix.gen(r, i)(r, nil)
		}
		for _, compress := range []int{0, 4 << 10, protocol.MinCompress} {
			name := fmt.Sprintf("%s/compress=%d", mix.name, compress)
			if compress == 0 {
				name = mix.name + "/compress=off"
			}
			b.Run(name, func(b *testing.B) {
				benchThroughput(b, msgs, compress)
			})
		}
	}
}

func benchThroughput(b *testing.B, msgs [][]byte, compressMin int) {
	done := make(chan struct{})
	want, got := b.N, 0
	a := startNode(b, creds(b, testCA, 1), 1, "127.0.0.1:0", func(c *Config) {
		c.CompressMin = compressMin
		c.Heartbeat, c.DeadAfter = time.Second, 10*time.Second
	})
	bn := startNode(b, creds(b, testCA, 2), 1, "127.0.0.1:0", func(c *Config) {
		c.Heartbeat, c.DeadAfter = time.Second, 10*time.Second
		c.OnMessage = func(uint32, uint8, []byte) {
			got++
			if got == want {
				close(done)
			}
		}
	})
	if err := a.SetPeer(2, bn.addr); err != nil {
		b.Fatal(err)
	}
	cpu0 := cpuTime(b)
	b.ResetTimer()
	for i := 0; i < b.N; {
		if err := a.Send(2, 1, msgs[i%len(msgs)]); err != nil {
			if err == ErrQueueFull {
				waitDrain(a, 2)
				continue
			}
			b.Fatal(err)
		}
		i++
	}
	<-done
	b.StopTimer()
	cpu := cpuTime(b) - cpu0
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/msg")
	st := a.status(2)
	b.ReportMetric(float64(st.BytesOut)/float64(b.N), "wire-B/msg")
	b.ReportMetric(float64(b.N)/float64(st.Writes), "msgs/write")
	_ = a.Close()
	_ = bn.Close()
}

// waitDrain waits until the queue towards peer is at most half full: a
// benchmark sender's stand-in for an outbox resend.
func waitDrain(n *node, peer uint32) {
	for n.status(peer).Queued > n.cfg.QueueMessages/2 {
		<-n.rec.notify // signalled after every ack
	}
}

// BenchmarkLinkRoundTrip: one 1:1 forward at a time from node A to node B
// and back (B's handler sends it back), over loopback TLS: ns/op is the
// round trip of the two hops at no load, what a request to a remote shard
// adds to its answer at least.
func BenchmarkLinkRoundTrip(b *testing.B) {
	back := make(chan struct{}, 1)
	var bn *node
	a := startNode(b, creds(b, testCA, 1), 1, "127.0.0.1:0", func(c *Config) {
		c.Heartbeat, c.DeadAfter = time.Second, 10*time.Second
		c.OnMessage = func(uint32, uint8, []byte) { back <- struct{}{} }
	})
	bn = startNode(b, creds(b, testCA, 2), 1, "127.0.0.1:0", func(c *Config) {
		c.Heartbeat, c.DeadAfter = time.Second, 10*time.Second
		c.OnMessage = func(_ uint32, typ uint8, body []byte) {
			if err := bn.Send(1, typ, body); err != nil {
				panic(err)
			}
		}
	})
	if err := a.SetPeer(2, bn.addr); err != nil {
		b.Fatal(err)
	}
	if err := bn.SetPeer(1, a.addr); err != nil {
		b.Fatal(err)
	}
	msg := forward(rand.New(rand.NewPCG(3, 3)), nil)
	cpu0 := cpuTime(b)
	for b.Loop() {
		if err := a.Send(2, 1, msg); err != nil {
			b.Fatal(err)
		}
		<-back
	}
	b.ReportMetric(float64((cpuTime(b)-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
	_ = a.Close()
	_ = bn.Close()
}
