package client

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/protocol/pb"
)

// BenchmarkMessages sends 20-byte texts from one device to a user with 1
// or 4 devices through a real node in this process (TLS, two shards,
// fsync), encrypted end to end and on the opaque path, 64 sends in
// flight, and waits until every device of the recipient has decrypted
// (or received) every message. Each receiving device has answered once
// before, so the sessions are established both ways, as in a
// conversation. It reports messages per second, the SEND
// frame's bytes per message (before TLS), and the ciphertext bytes per
// recipient device. Figures come from this benchmark, not from a test;
// the machine is shared, so they vary from run to run.
func BenchmarkMessages(b *testing.B) {
	for _, devices := range []int{1, 4} {
		for _, encrypted := range []bool{false, true} {
			name := fmt.Sprintf("devices=%d/opaque", devices)
			if encrypted {
				name = fmt.Sprintf("devices=%d/e2e", devices)
			}
			b.Run(name, func(b *testing.B) { benchMessages(b, devices, encrypted) })
		}
	}
}

func benchMessages(b *testing.B, devices int, encrypted bool) {
	n := startSecureNode(b)
	cfg := n.cfg
	cfg.Plain = !encrypted
	store := func() Store {
		if encrypted {
			return NewMemoryKeyStore()
		}
		return NewMemoryStore()
	}
	ac, bc := n.account(0, 0), n.account(1, devices-1)
	var (
		mu       sync.Mutex
		received int
		done     = make(chan struct{})
		want     int
	)
	var receivers []*Client
	for _, c := range bc {
		rcfg := cfg
		rcfg.OnEvent = func(ev Event) {
			m, ok := ev.(Message)
			if !ok || m.From != ac[0].User {
				return
			}
			if encrypted && (m.DecryptErr != nil || !m.Secure) {
				b.Errorf("message not decrypted: %+v", m)
			}
			mu.Lock()
			received++
			if want > 0 && received == want {
				close(done)
			}
			mu.Unlock()
		}
		receivers = append(receivers, runClient(b, rcfg, c, store()))
	}
	var replies sync.WaitGroup
	scfg := cfg
	scfg.OnEvent = func(ev Event) {
		if m, ok := ev.(Message); ok && m.From == bc[0].User {
			replies.Done()
		}
	}
	sender := runClient(b, scfg, ac[0], store())
	ctx := context.Background()
	// Warm up: sessions are started, keys fetched.
	if _, err := sender.Send(ctx, bc[0].User, []byte("warm up 20 bytes ..."), pb.ContentType_CONTENT_TEXT); err != nil {
		b.Fatal(err)
	}
	for { // every device got the warm-up
		mu.Lock()
		r := received
		mu.Unlock()
		if r == len(receivers) {
			break
		}
		time.Sleep(time.Millisecond) // a benchmark's set-up, not a test's wait
	}
	// Every receiving device answers once: its session with the sender
	// is then established both ways, and what follows are plain Signal
	// messages rather than prekey messages, as in a conversation.
	replies.Add(len(receivers))
	for _, r := range receivers {
		if _, err := r.Send(ctx, ac[0].User, []byte("reply"), pb.ContentType_CONTENT_TEXT); err != nil {
			b.Fatal(err)
		}
	}
	replies.Wait()
	mu.Lock()
	want = received + b.N*len(receivers)
	mu.Unlock()

	window := make(chan struct{}, 64)
	var sendBytes, envBytes, envs int
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		window <- struct{}{}
		body := []byte(fmt.Sprintf("text %014d", i)) // 20 bytes
		_, err := sender.SendAsync(bc[0].User, body, pb.ContentType_CONTENT_TEXT, func(Sent, error) { <-window })
		if err != nil {
			b.Fatal(err)
		}
		if i == 0 {
			sender.mu.Lock()
			for _, o := range sender.outbox {
				sendBytes = len(o.appendFrame(nil))
				for _, e := range o.Envelopes {
					envBytes += len(e.Body)
					envs++
				}
			}
			sender.mu.Unlock()
		}
	}
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("received %d of %d", received, want)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msg/s")
	b.ReportMetric(float64(sendBytes), "SEND-B/msg")
	if envs > 0 {
		b.ReportMetric(float64(envBytes)/float64(envs), "ciphertext-B/device")
	}
	for _, c := range append(receivers, sender) {
		_ = c.Close()
	}
}

// runClient runs a client for the benchmark and waits until it caught up.
func runClient(b *testing.B, cfg Config, c Credentials, store Store) *Client {
	b.Helper()
	synced := make(chan struct{})
	var once sync.Once
	inner := cfg.OnEvent
	cfg.OnEvent = func(ev Event) {
		if _, ok := ev.(Synced); ok {
			once.Do(func() { close(synced) })
		}
		if inner != nil {
			inner(ev)
		}
	}
	cl, err := New(cfg, c, store)
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = cl.Run(context.Background()) }()
	b.Cleanup(func() { _ = cl.Close() })
	select {
	case <-synced:
	case <-time.After(waitE2E):
		b.Fatal("client did not catch up")
	}
	return cl
}
