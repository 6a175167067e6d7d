package storage_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-im/parley/protocol"
	"github.com/parley-im/parley/protocol/pb"
	"github.com/parley-im/parley/router"
	"github.com/parley-im/parley/storage"
)

// benchEndpoint signals each answer the shard posts.
type benchEndpoint struct {
	ref      storage.ConnRef // its name in testConns
	answered chan struct{}
}

// newBenchEndpoint returns an endpoint named in testConns; the caller
// deletes it from there when done.
func newBenchEndpoint() *benchEndpoint {
	ep := &benchEndpoint{ref: storage.ConnRef{ID: testConns.last.Add(1)}, answered: make(chan struct{}, 1)}
	testConns.m.Store(ep.ref, ep)
	return ep
}

func (e *benchEndpoint) Post([]byte) bool                 { e.answered <- struct{}{}; return true }
func (e *benchEndpoint) Reply([]byte)                     { e.answered <- struct{}{} }
func (e *benchEndpoint) Authenticated(storage.Session)    {}
func (e *benchEndpoint) Fail(protocol.Code)               { e.answered <- struct{}{} }
func (e *benchEndpoint) Close(protocol.Code)              {}
func (e *benchEndpoint) LookupPart(uint64, []*pb.Contact) {}
func (e *benchEndpoint) wait()                            { <-e.answered }

// BenchmarkGroupCommit measures adaptive group commit (Config.SyncWait)
// on a real disk: each op is a REQUEST_CODE for a new phone, a promise
// whose answer waits for its fsync, like a SEND's SENT. "light" is one
// client with a pause of 2 ms between requests (each op's latency is its
// ns/op minus the pause); "moderate" is 8 such clients; "heavy" is 32
// clients back to back. It reports fsyncs per op and how many of the
// syncs waited. Compare the wait=-1ns (never) and wait=… runs of one
// invocation:
//
//	go test -run XXX -bench GroupCommit -count 6 ./storage/ | benchstat -col /wait -
func BenchmarkGroupCommit(b *testing.B) {
	for _, load := range []struct {
		name    string
		clients int
		pause   time.Duration
	}{{"light", 1, 2 * time.Millisecond}, {"moderate", 8, 2 * time.Millisecond}, {"heavy", 32, 0}} {
		for _, wait := range []time.Duration{-1, 50 * time.Microsecond, 200 * time.Microsecond} {
			b.Run(fmt.Sprintf("load=%s/wait=%v", load.name, wait), func(b *testing.B) {
				benchGroupCommit(b, load.clients, load.pause, wait)
			})
		}
	}
}

func benchGroupCommit(b *testing.B, clients int, pause, wait time.Duration) {
	var syncs atomic.Int64
	r, s := startCodeShard(b, storage.Config{SyncWait: wait, OnSync: func(time.Duration) { syncs.Add(1) }})

	var next atomic.Int64
	var submitted atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ep := newBenchEndpoint()
			defer testConns.m.Delete(ep.ref)
			for next.Add(1) <= int64(b.N) {
				phone := fmt.Sprintf("+1555%03d%05d", c, submitted.Add(1)%100_000)
				if err := r.Submit(storage.Op{Kind: storage.OpRequestCode, Phone: phone, RID: 1, Conn: ep.ref}); err != nil {
					b.Error(err)
					return
				}
				ep.wait()
				if pause > 0 {
					time.Sleep(pause)
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(syncs.Load())/float64(b.N), "fsyncs/op")
	b.ReportMetric(float64(s.Stats().SyncWaits)/float64(b.N), "waits/op")
}

// startCodeShard starts one shard with cfg (Dir, Forwarder, Conns and
// Codes filled in) behind a router of its own, closed when tb ends.
func startCodeShard(tb testing.TB, cfg storage.Config) (*router.Router, *storage.Shard) {
	tb.Helper()
	r, err := router.New(1)
	if err != nil {
		tb.Fatal(err)
	}
	cfg.Dir, cfg.Forwarder, cfg.Conns, cfg.Codes = tb.TempDir(), r, testConns, &codeBox{}
	s, err := storage.Open(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := r.Attach([]*storage.Shard{s}); err != nil {
		tb.Fatal(err)
	}
	s.Start()
	tb.Cleanup(func() { s.Close() })
	return r, s
}
