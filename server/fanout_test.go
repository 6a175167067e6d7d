package server_test

import (
	"crypto/tls"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/codec"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/internal/nodetest"
	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
)

// BenchmarkGroupFanout1024 measures, for a 1024-member group with every
// member online over TLS, the time from a member's Send until the last of
// the other 1023 members has the message (DESIGN.md budget: p99 ≤ 50 ms).
// Messages go one at a time, so each figure is a fan-out latency, not a
// queueing delay. Run it with a count:
//
//	go test ./server -run '^$' -bench GroupFanout1024 -benchtime 200x
func BenchmarkGroupFanout1024(b *testing.B) {
	nd := nodetest.Start(b, func(c *node.Config) { c.Shards = 4 })
	users := nd.RegisterMany(b, protocol.MaxGroupMembers)
	admin, _ := nd.Login(b, users[0], 0)
	var ids []uint64
	for _, u := range users[1:] {
		ids = append(ids, u.ID)
	}
	g := groupCreate(b, admin, "fanout", ids).Group

	// Every other member counts arrivals; the last one of a message stamps
	// its completion.
	const members = protocol.MaxGroupMembers - 1
	var (
		mu      sync.Mutex
		arrived = map[uint64]int{} // gseq → members that have it
		done    = map[uint64]time.Time{}
		ready   sync.WaitGroup
	)
	doneCh := make(chan uint64, 16)
	var conns []*tls.Conn
	for _, u := range users[1:] {
		conn, err := tls.Dial("tcp", nd.Addr().String(), &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, conn)
		login, _ := codec.AppendProto(nil, protocol.KindLogin, &pb.Login{Version: protocol.Version, User: u.ID, Device: u.Device, Credential: u.Cred})
		if _, err := conn.Write(login); err != nil {
			b.Fatal(err)
		}
		ready.Add(1)
		go func() {
			dec, _ := codec.NewDecompressor(protocol.MaxFrameBody)
			defer dec.Close()
			r := codec.NewReader(conn, protocol.MaxFrameBody, dec)
			synced := false
			var pending []codec.Frame
			for {
				var f codec.Frame
				if len(pending) > 0 {
					f, pending = pending[0], pending[1:]
				} else {
					var err error
					if f, err = r.ReadFrame(); err != nil {
						if !synced {
							ready.Done()
						}
						return
					}
					if f.Kind == protocol.KindBatch {
						for rest := append([]byte(nil), f.Body...); len(rest) > 0; {
							inner, next, err := codec.NextFrame(rest, protocol.MaxFrameBody)
							if err != nil {
								break
							}
							pending, rest = append(pending, inner), next
						}
						continue
					}
				}
				switch f.Kind {
				case protocol.KindSynced:
					if !synced {
						synced = true
						ready.Done()
					}
				case protocol.KindMessage:
					m, err := codec.ParseMessage(f.Body)
					if err != nil || m.Group != g {
						continue
					}
					_, _ = conn.Write(codec.AppendAck(nil, m.Seq))
					now := time.Now()
					mu.Lock()
					arrived[m.GSeq]++
					if arrived[m.GSeq] == members {
						done[m.GSeq] = now
						doneCh <- m.GSeq
					}
					mu.Unlock()
				case protocol.KindGroupEvent, protocol.KindReceipts, protocol.KindReceipt:
					if seq := entrySeq(f); seq > 0 {
						_, _ = conn.Write(codec.AppendAck(nil, seq))
					}
				}
			}
		}()
	}
	ready.Wait()
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()

	var lat []time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		admin.Write(codec.AppendSend(nil, codec.Send{Group: g, CMID: uint64(i + 1), Body: []byte("to everyone at once")}))
		select {
		case gseq := <-doneCh:
			mu.Lock()
			lat = append(lat, done[gseq].Sub(start))
			mu.Unlock()
		case <-time.After(30 * time.Second):
			b.Fatalf("message %d not at every member after 30 s", i)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}

// entrySeq returns the seq of an inbox entry frame.
func entrySeq(f codec.Frame) uint64 {
	switch f.Kind {
	case protocol.KindReceipt:
		r, _ := codec.ParseReceipt(f.Body)
		return r.Seq
	case protocol.KindGroupEvent:
		var ev pb.GroupEvent
		_ = codec.ParseProto(f.Body, &ev)
		return ev.Seq
	case protocol.KindReceipts:
		var rs pb.Receipts
		_ = codec.ParseProto(f.Body, &rs)
		return rs.Seq
	}
	return 0
}
